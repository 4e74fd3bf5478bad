"""
``python -m sb3_distill.train -optimize``: rl-zoo3's Optuna sweeps (default TPE sampler and median pruner) on an
SQLite file, a journal file and PostgreSQL, with concurrent workers on one study, and the heartbeat flag that
marks a killed worker's trial failed and retries it.

The PostgreSQL tests read ``SB3_DISTILL_TEST_POSTGRES_URL``; ``.ci/run`` installs and starts a server with
``.ci/start_postgres.sh`` and sets it. Without it they are skipped, with a warning.
"""

import os
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from sb3_distill import EnsembleDistillDQN

POSTGRES_URL_VARIABLE = "SB3_DISTILL_TEST_POSTGRES_URL"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ALGO = "ensemble_distill_dqn"
# Tiny networks and budgets (the sampled hyperparameters replace some of them in a sweep)
TINY_PARAMS = [
    "buffer_size:1000",
    "batch_size:16",
    "policy_kwargs:dict(net_arch=[16])",
    "student_policy_kwargs:dict(net_arch=[8])",
]
# Optuna >= 4.9 names the callback after heartbeats; the older name is a deprecated alias
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)


def train_args(log_folder: Path, n_timesteps: int) -> list[str]:
    run = ["--algo", ALGO, "--env", "CartPole-v1", "-n", str(n_timesteps), "-f", str(log_folder), "--seed", "0"]
    return [*run, "--num-threads", "1", "-params", *TINY_PARAMS]


def optimize_args(log_folder: Path, storage: str, study_name: str, n_trials: int, n_timesteps: int = 300) -> list[str]:
    """A tiny sweep: 100 training steps per trial (learning_starts 200), 2 evaluations of 2 episodes."""
    args = train_args(log_folder, n_timesteps)
    args += ["learning_starts:200", "-optimize", "--n-trials", str(n_trials), "--n-evaluations", "2", "--eval-episodes", "2"]
    return [*args, "--storage", storage, "--study-name", study_name]


def start_worker(args: list[str], output: Path) -> subprocess.Popen:
    with output.open("w") as file:
        return subprocess.Popen([sys.executable, "-m", "sb3_distill.train", *args], stdout=file, stderr=subprocess.STDOUT)


def wait_worker(worker: subprocess.Popen, output: Path, timeout: float = 300) -> str:
    returncode = worker.wait(timeout=timeout)
    text = output.read_text()
    assert returncode == 0, f"worker exited with {returncode}:\n{text[-5000:]}"
    return text


def journal_storage(path: Path) -> optuna.storages.BaseStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def test_optimize_sqlite_then_train_best_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker = start_worker(optimize_args(tmp_path / "logs", storage, "sqlite", n_trials=3), tmp_path / "worker.txt")
    # no --no-optim-plots: the plots are made (and shown, when a browser exists)
    output = wait_worker(worker, tmp_path / "worker.txt")
    assert "Sampler: tpe - Pruner: median" in output
    assert "Best trial:" in output and "temperature:" in output and "n_teachers:" in output
    trials = optuna.load_study(study_name="sqlite", storage=storage).trials
    assert len(trials) == 3 and all(trial.state in FINISHED for trial in trials)
    (report,) = (tmp_path / "logs" / ALGO).glob("report_CartPole-v1_3-trials-300-tpe-median_*.csv")
    assert len(pd.read_csv(report)) == 3 and report.with_suffix(".pkl").is_file()

    # --trial-id trains with a stored trial's hyperparameters (through the converter)
    trial = trials[1]
    # (-params would override the trial's values, as in rl-zoo3)
    args = ["--algo", ALGO, "--env", "CartPole-v1", "-n", "200", "-f", str(tmp_path / "best"), "--num-threads", "1"]
    args += ["--storage", storage, "--study-name", "sqlite", "--trial-id", "1", "-params", "buffer_size:1000"]
    result = subprocess.run([sys.executable, "-m", "sb3_distill.train", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Loading from Optuna study..." in result.stdout
    model = EnsembleDistillDQN.load(tmp_path / "best" / ALGO / "CartPole-v1_1" / "CartPole-v1.zip")
    assert model.n_teachers == trial.params["n_teachers"] and model.temperature == trial.params["temperature"]
    assert model.batch_size == 2 ** trial.params["batch_size_pow"]


def test_optimize_journal_two_concurrent_workers(tmp_path):
    storage = tmp_path / "study.log"
    outputs = [tmp_path / f"worker_{index}.txt" for index in range(2)]
    args = [*optimize_args(tmp_path / "logs", str(storage), "journal", n_trials=2), "--no-optim-plots"]
    workers = [start_worker(args, output) for output in outputs]
    for worker, output in zip(workers, outputs, strict=True):
        assert "Best trial:" in wait_worker(worker, output)
    trials = optuna.load_study(study_name="journal", storage=journal_storage(storage)).trials
    # every trial of both workers is there and finished: none lost, none left running
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert all(trial.state in FINISHED for trial in trials), [trial.state for trial in trials]


def running_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def wait_until(condition, workers: list[subprocess.Popen], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(worker.poll() is None for worker in workers), f"a worker exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def check_killed_worker_trial_is_retried(storage: str, tmp_path: Path) -> None:
    """
    Two workers on one study with ``--heartbeat-interval 1 --heartbeat-grace-period 2``; the first is killed
    (SIGKILL) in the middle of its trial. The second one marks that trial FAIL once it is stale and runs it again
    (same parameters); in the end no trial is left RUNNING.
    """
    study_name = f"heartbeat-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    heartbeat = ["--heartbeat-interval", "1", "--heartbeat-grace-period", "2", "--no-optim-plots"]
    # The worker to kill has a long trial (5000 steps), the other one several short ones
    killed_args = [*optimize_args(tmp_path / "logs", storage, study_name, n_trials=1, n_timesteps=5000), *heartbeat]
    survivor_args = [*optimize_args(tmp_path / "logs", storage, study_name, n_trials=4, n_timesteps=600), *heartbeat]
    killed = start_worker(killed_args, tmp_path / "killed.txt")
    wait_until(lambda: len(running_trials(study)) == 1, [killed], "the first worker's trial")
    (killed_trial,) = running_trials(study)
    survivor = start_worker(survivor_args, tmp_path / "survivor.txt")
    # both workers are in the middle of a trial
    wait_until(lambda: len(running_trials(study)) == 2, [killed, survivor], "the second worker's trial")
    killed.kill()
    assert killed.wait(timeout=30) == -9
    output = wait_worker(survivor, tmp_path / "survivor.txt")
    assert "Optuna heartbeat every 1 s, grace period 2 s" in output

    trials = study.get_trials(deepcopy=False)
    states = {trial.number: trial.state for trial in trials}
    # (the trial as stored now: when it was first seen RUNNING, some parameters were not sampled yet)
    killed_trial = trials[killed_trial.number]
    assert states[killed_trial.number] == TrialState.FAIL, states
    retries = [trial for trial in trials if RetryCallback.retried_trial_number(trial) == killed_trial.number]
    assert len(retries) == 1, states
    assert retries[0].state in FINISHED and retries[0].params == killed_trial.params
    # the killed trial and the survivor's 4 (one of which is the retry); nothing left running or waiting
    assert len(trials) == 5 and sum(state in FINISHED for state in states.values()) == 4, states


def test_heartbeat_retries_killed_worker_trial_sqlite(tmp_path):
    check_killed_worker_trial_is_retried(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        reason = (
            f"NO POSTGRESQL SERVER: {POSTGRES_URL_VARIABLE} is not set, the PostgreSQL sweep tests are SKIPPED. "
            "Run `sudo bash .ci/start_postgres.sh` and export the URL it prints (.ci/run does both)."
        )
        warnings.warn(reason)
        pytest.skip(reason)
    return url


def test_optimize_postgresql_two_workers(postgres_url, tmp_path):
    study_name = f"postgres-{uuid.uuid4().hex[:8]}"
    outputs = [tmp_path / f"worker_{index}.txt" for index in range(2)]
    args = [*optimize_args(tmp_path / "logs", postgres_url, study_name, n_trials=2), "--no-optim-plots"]
    workers = [start_worker(args, output) for output in outputs]
    for worker, output in zip(workers, outputs, strict=True):
        wait_worker(worker, output)
    trials = optuna.load_study(study_name=study_name, storage=postgres_url).trials
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert all(trial.state in FINISHED for trial in trials)


def test_heartbeat_retries_killed_worker_trial_postgresql(postgres_url, tmp_path):
    check_killed_worker_trial_is_retried(postgres_url, tmp_path)
