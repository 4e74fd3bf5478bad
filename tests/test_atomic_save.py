"""Atomic saves: a process killed (SIGKILL) during save() or save_replay_buffer() leaves the previous file loadable."""

import io
import multiprocessing
import os
import pathlib
import pickle
import signal
import time

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3 import DQN, SAC
from stable_baselines3.common.save_util import load_from_pkl
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_distill import PolicyDistillation, export_onnx

from tests.helpers import assert_observations_equal
from tests.models import MODEL_LIST, ON_POLICY, make_env, make_model


def _save_and_block(model, method: str, path, started) -> None:
    """In a child process: change the model, start saving it over ``path``, and hang half-way through the write."""
    original_save = th.save

    def save_then_hang(*args, **kwargs):
        original_save(*args, **kwargs)
        started.set()
        time.sleep(60)

    class Hang:
        # Pickled in the middle of the replay buffer
        def __reduce__(self):
            started.set()
            time.sleep(60)
            return (int, ())

    th.save = save_then_hang
    with th.no_grad():
        for param in model.policy.parameters():
            param.add_(1.0)
    if hasattr(model, "replay_buffer"):  # on-policy algorithms have none
        model.replay_buffer.hang = Hang()
    getattr(model, method)(path)


def _kill_during(model, method: str, path) -> None:
    """Run ``model.<method>(path)`` in a forked child and SIGKILL it once the write is under way."""
    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(target=_save_and_block, args=(model, method, path, started))
    child.start()
    try:
        assert started.wait(timeout=30), "the child never started writing"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL


def _parameters(model) -> dict[str, th.Tensor]:
    return {key: value.detach().clone() for key, value in model.policy.state_dict().items()}


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_kill_during_save_keeps_previous_file(model_class, tmp_path):
    model = make_model(model_class)
    model.learn(60)
    path = tmp_path / "model.zip"
    model.save(path)
    before = _parameters(model)

    _kill_during(model, "save", path)

    loaded = model_class.load(path, env=make_env(model_class))
    after = _parameters(loaded)
    assert before.keys() == after.keys()
    assert all(th.equal(before[key], after[key]) for key in before)
    # A later save replaces the file as usual
    model.save(path)
    model_class.load(path)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_kill_during_save_replay_buffer_keeps_previous_file(model_class, tmp_path):
    if model_class in ON_POLICY:
        pytest.skip("on-policy: no replay buffer")
    model = make_model(model_class)
    model.learn(60)
    path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(path)

    _kill_during(model, "save_replay_buffer", path)

    buffer = load_from_pkl(path)
    assert buffer.size() == model.replay_buffer.size()
    assert_observations_equal(buffer.observations, model.replay_buffer.observations)
    assert not hasattr(buffer, "hang")


@pytest.mark.parametrize("method, load", [("save", DQN.load), ("save_replay_buffer", load_from_pkl)])
def test_kill_during_plain_sb3_save_loses_the_file(method, load, tmp_path):
    # What the atomic save prevents (and proof that the kill above lands during the write): SB3 writes in place
    model = DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[8]), buffer_size=100)
    path = tmp_path / "file"
    getattr(model, method)(path)
    path = next(tmp_path.iterdir())
    _kill_during(model, method, path)
    with pytest.raises(Exception):  # noqa: B017 (zipfile.BadZipFile, EOFError, ...: whatever a truncated file gives)
        load(path)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_save_paths_follow_sb3(model_class, tmp_path):
    model = make_model(model_class)
    model.learn(60)
    # No suffix: `.zip` / `.pkl` added; a missing folder is created (with SB3's warning)
    with pytest.warns(UserWarning, match="does not exist"):
        model.save(tmp_path / "new" / "model")
    if model_class in ON_POLICY:  # no replay buffer
        assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["model.zip"]
    else:
        model.save_replay_buffer(tmp_path / "new" / "buffer")
        assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["buffer.pkl", "model.zip"]
    # A suffix given is kept, and a string path works as a Path does
    model.save(str(tmp_path / "model.ckpt"))
    assert (tmp_path / "model.ckpt").is_file()
    model_class.load(tmp_path / "model.ckpt")
    # Overwriting keeps the file's permissions
    os.chmod(tmp_path / "model.ckpt", 0o640)
    model.save(tmp_path / "model.ckpt")
    assert (tmp_path / "model.ckpt").stat().st_mode & 0o777 == 0o640
    # File-like objects are written directly
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    model_class.load(buffer)
    # No temporary file is left behind
    assert not [path for path in tmp_path.rglob("*") if path.name.endswith(".tmp")]


def _disk_full(*args, **kwargs):
    raise OSError("No space left on device")


def test_failed_save_keeps_previous_file_and_no_temporary(tmp_path, monkeypatch):
    model = make_model(MODEL_LIST[0])
    path = tmp_path / "model.zip"
    model.save(path)
    content = path.read_bytes()
    monkeypatch.setattr(th, "save", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_failed_export_student_keeps_previous_files(tmp_path, monkeypatch):
    """export_student(path=...) writes the student and its preprocessing folder atomically, as save() does."""
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False)
    teacher = SAC("MlpPolicy", venv, policy_kwargs=dict(net_arch=[8]), seed=0)
    model = PolicyDistillation("MlpPolicy", "Pendulum-v1", teacher=teacher, buffer_size=100, seed=0)
    path = tmp_path / "student.zip"
    model.export_student(path=path)
    files = _files(tmp_path)
    assert set(files) == {"student.zip", "student/vecnormalize.pkl", "student/config.yml"}
    # The model's write fails: nothing changes
    monkeypatch.setattr(th, "save", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.export_student(path=path)
    assert _files(tmp_path) == files
    # The statistics' write fails (after the model's): the previous statistics stay whole
    monkeypatch.undo()
    monkeypatch.setattr(pickle, "dump", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.export_student(path=path)
    after = _files(tmp_path)
    assert set(after) == set(files) and after["student/vecnormalize.pkl"] == files["student/vecnormalize.pkl"]
    assert VecNormalize.load(str(tmp_path / "student" / "vecnormalize.pkl"), venv).obs_rms.mean.shape == (3,)


def test_failed_onnx_export_keeps_previous_file(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    import onnx

    model = make_model(MODEL_LIST[0])
    path = export_onnx(model, tmp_path / "student.onnx")
    content = path.read_bytes()
    monkeypatch.setattr(onnx, "save", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_onnx(model, path)
    assert [p.name for p in tmp_path.iterdir()] == ["student.onnx"] and path.read_bytes() == content
