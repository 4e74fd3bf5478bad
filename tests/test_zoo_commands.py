"""
rl-zoo3's commands beyond train and enjoy, with the sb3_distill algorithms: ``python -m sb3_distill.record_video``,
``record_training`` and ``plots``, run as subprocesses on the logs of a tiny ``python -m sb3_distill.train`` run.
"""

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_distill.zoo import ZOO_ALGORITHMS, hub, record
from sb3_distill.zoo import plots as zoo_plots

ROOT = Path(__file__).resolve().parent.parent
ALGO, ENV_ID = "ensemble_distill_dqn", "CartPole-v1"
TINY_TRAIN = [
    *("--algo", ALGO, "--env", ENV_ID, "-n", "300", "-f", "logs", "--seed", "0", "--num-threads", "1"),
    *("--eval-freq", "100", "--eval-episodes", "2"),
    "-params",
    *("learning_starts:100", "buffer_size:1000", "batch_size:16", "train_freq:4", "gradient_steps:1"),
    *("policy_kwargs:dict(net_arch=[16])", "student_policy_kwargs:dict(net_arch=[8])", "n_teachers:2"),
]


def run_command(command: str, *args: str, cwd: Path, timeout: float = 300) -> str:
    """Run ``python -m sb3_distill.<command> *args`` (this checkout's package); fail with its output unless it exits with 0."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", f"sb3_distill.{command}", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"sb3_distill.{command} {' '.join(args)} exited with {result.returncode}:\n{output[-5000:]}"
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder whose logs/ holds run 1 of a 300-step EnsembleDistillDQN (final model, best model, evaluations)."""
    folder = tmp_path_factory.mktemp("zoo")
    run_command("train", *TINY_TRAIN, cwd=folder)
    return folder


def test_record_video(trained):
    pytest.importorskip("moviepy", reason="SB3's VecVideoRecorder writes videos with moviepy")
    output = run_command("record_video", "--algo", ALGO, "--env", ENV_ID, "-f", "logs", "-n", "10", "--no-render", cwd=trained)
    run = trained / "logs" / ALGO / f"{ENV_ID}_1"
    assert f"Loading logs/{ALGO}/{ENV_ID}_1/{ENV_ID}.zip" in output
    assert (run / "videos" / f"final-model-{ALGO}-{ENV_ID}-step-0-to-step-10.mp4").stat().st_size > 0


def test_record_training(trained):
    pytest.importorskip("moviepy", reason="SB3's VecVideoRecorder writes videos with moviepy")
    if shutil.which("ffmpeg") is None:
        pytest.importorskip("imageio_ffmpeg", reason="record_training joins the videos with ffmpeg")
    # Run 2: the final model only, so that one video is recorded (one subprocess)
    run, copy = trained / "logs" / ALGO / f"{ENV_ID}_1", trained / "logs" / ALGO / f"{ENV_ID}_2"
    shutil.copytree(run / ENV_ID, copy / ENV_ID)
    shutil.copy(run / f"{ENV_ID}.zip", copy / f"{ENV_ID}.zip")
    output = run_command(
        "record_training", "--algo", ALGO, "--env", ENV_ID, "-f", "logs", "-n", "10", "--exp-id", "2", cwd=trained
    )
    # rl-zoo3's `python -m rl_zoo3.record_video` subprocess ran as sb3_distill.record_video (it knows the algorithm)
    assert f"Loading logs/{ALGO}/{ENV_ID}_2/{ENV_ID}.zip" in output
    assert (copy / "videos" / "training.mp4").stat().st_size > 0


def test_plots(trained, tmp_path, monkeypatch):
    pytest.importorskip("seaborn", reason="rl-zoo3's plots use seaborn")
    # Two runs (the trained one twice): plot_from_file needs more than one
    for run_id in (1, 2):
        shutil.copytree(trained / "logs" / ALGO / f"{ENV_ID}_1", tmp_path / "logs" / ALGO / f"{ENV_ID}_{run_id}")
    output = run_command(
        "plots",
        "all_plots",
        "-a",
        ALGO,
        "-e",
        ENV_ID,
        "-f",
        "logs",
        "-o",
        "results",
        "--no-display",
        "-min",
        "0",
        cwd=tmp_path,
    )
    assert "Saving to results.pkl" in output
    with open(tmp_path / "results.pkl", "rb") as file_handler:
        results = pickle.load(file_handler)
    assert results[ENV_ID][f"{ALGO.upper()}-logs"]["last_evals"].shape == (2,)
    # The other two scripts, in this process
    monkeypatch.chdir(tmp_path)
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    zoo_plots.plots(["plot_from_file", "-i", "results.pkl", "-o", "curves", "--format", "png"])
    assert (tmp_path / "curves").stat().st_size > 0
    zoo_plots.plots(["plot_train", "-a", ALGO, "-e", ENV_ID, "-f", "logs", "-w", "2"])


def test_plots_unknown_script():
    with pytest.raises(SystemExit, match=r"plot_train,all_plots,plot_from_file.*got 'plot_everything'"):
        zoo_plots.plots(["plot_everything"])
    with pytest.raises(SystemExit, match="got nothing"):
        zoo_plots.plots([])


def test_record_video_subprocess_redirected(monkeypatch):
    started = []

    class FakePopen:
        def __init__(self, args, *popen_args, **kwargs):
            started.append(list(args))

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    assert record._redirected_call(["python", "-m", "rl_zoo3.record_video", "--algo", ALGO]) == 0
    assert record._redirected_call(["ffmpeg", "-version"]) == 0
    assert started == [[sys.executable, "-m", "sb3_distill.record_video", "--algo", ALGO], ["ffmpeg", "-version"]]


def test_load_from_hub_knows_the_algorithms(capsys):
    # The Hub cannot be reached from the tests: only the parser, whose --algo choices must list ours
    with pytest.raises(SystemExit) as exit_info:
        hub.load_from_hub(["--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert all(algo in output for algo in ZOO_ALGORITHMS), output
