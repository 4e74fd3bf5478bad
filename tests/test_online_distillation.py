"""
Online distillation (``PolicyDistillation(teacher=<checkpoint folder>, teacher_refresh_interval=N)``) and the
checkpoint folders of ``sb3_distill.common.teachers``: newest complete checkpoint, half-written files skipped,
waiting for a first checkpoint, refresh during ``learn()``, save/load, bad input.
"""

import threading
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_distill import PolicyDistillation
from sb3_distill.common.teachers import CheckpointFolder, checkpoint_steps, load_teacher
from tests.helpers import assert_optimizer_states_equal


def dqn(seed: int, net_arch=(16,)) -> DQN:
    """A tiny untrained DQN: distinct seeds give distinct weights, as successive checkpoints have."""
    return DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=list(net_arch)), seed=seed)


def save_checkpoint(model, folder, steps: int, prefix: str = "rl_model"):
    """Save ``model`` as SB3's CheckpointCallback names its files."""
    path = folder / f"{prefix}_{steps}_steps.zip"
    model.save(path)
    return path


def online(folder, **kwargs) -> PolicyDistillation:
    config = dict(learning_starts=16, batch_size=8, buffer_size=500, student_policy_kwargs=dict(net_arch=[8]), seed=0)
    config.update(kwargs)
    return PolicyDistillation("MlpPolicy", "CartPole-v1", teacher=folder, **config)


def assert_teacher_is(model: PolicyDistillation, teacher) -> None:
    for key, value in teacher.policy.state_dict().items():
        assert th.equal(model.policy.teacher.state_dict()[key], value), key


def test_checkpoint_callback_folder(tmp_path):
    # What SB3's CheckpointCallback writes while a teacher trains
    teacher = DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[16]), learning_starts=10, seed=0)
    teacher.learn(120, callback=CheckpointCallback(save_freq=40, save_path=str(tmp_path), name_prefix="dqn"))
    folder = CheckpointFolder(tmp_path)
    assert [steps for steps, _ in folder.checkpoints()] == [120, 80, 40]
    loaded = load_teacher(folder, device="cpu")
    assert loaded.path is not None and checkpoint_steps(loaded.path) == 120
    # (the checkpoint is written before the last gradient step: compare with the file)
    newest = DQN.load(tmp_path / "dqn_120_steps.zip")
    assert_teacher_is(PolicyDistillation("MlpPolicy", "CartPole-v1", teacher=loaded), newest)
    # A folder path is an rl-zoo3 experiment folder: with checkpoints only, its newest checkpoint
    assert checkpoint_steps(load_teacher(str(tmp_path), device="cpu").path) == 120
    assert checkpoint_steps("rl_model_5000_steps.zip") == 5000 and checkpoint_steps("best_model.zip") is None


def test_half_written_checkpoint_is_skipped(tmp_path):
    old = dqn(0)
    save_checkpoint(old, tmp_path, 100)
    complete = save_checkpoint(dqn(1), tmp_path, 200).read_bytes()
    # The teacher is still writing its newest checkpoint: the first half of the file, or nothing yet
    (tmp_path / "rl_model_200_steps.zip").write_bytes(complete[: len(complete) // 2])
    (tmp_path / "rl_model_300_steps.zip").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipping the teacher checkpoint"):
        model = online(tmp_path, teacher_refresh_interval=10)
    assert model.teacher_checkpoint_steps == 100
    assert_teacher_is(model, old)
    # Refreshing skips them again, with a warning, and keeps the teacher in use
    with pytest.warns(UserWarning, match="rl_model_300_steps.zip"):
        assert not model.refresh_teacher()
    assert model.teacher_checkpoint_steps == 100
    # Once the file is complete, the next refresh takes it
    (tmp_path / "rl_model_200_steps.zip").write_bytes(complete)
    (tmp_path / "rl_model_300_steps.zip").unlink()
    assert model.refresh_teacher()
    assert model.teacher_checkpoint_steps == 200
    assert_teacher_is(model, dqn(1))


def test_refresh_during_learn_is_logged(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_checkpoint(dqn(0), folder, 100)
    model = online(folder, teacher_refresh_interval=25)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    model.learn(40, log_interval=1)
    assert model.teacher_checkpoint_steps == 100
    newer = dqn(1)
    save_checkpoint(newer, folder, 2000)
    model.learn(60, reset_num_timesteps=False, log_interval=1)
    # Refreshed within 25 steps of the checkpoint appearing, and logged
    assert model.teacher_checkpoint_steps == 2000
    assert_teacher_is(model, newer)
    lines = (tmp_path / "log" / "progress.csv").read_text().splitlines()
    column = lines[0].split(",").index("train/teacher_checkpoint_steps")
    logged = {float(line.split(",")[column]) for line in lines[1:] if line.split(",")[column]}
    assert logged == {100.0, 2000.0}


def test_refresh_interval_counts_steps(tmp_path):
    save_checkpoint(dqn(0), tmp_path, 1)
    model = online(tmp_path, teacher_refresh_interval=30)
    calls, refresh = [], model.refresh_teacher

    def counted_refresh() -> bool:
        calls.append(model.num_timesteps)
        return refresh()

    model.refresh_teacher = counted_refresh  # type: ignore[method-assign]
    model.learn(100)
    assert calls == [30, 60, 90]


def test_no_checkpoint_yet(tmp_path):
    # The documented choice: fail at once and say how to wait ...
    with pytest.raises(ValueError, match=r"holds no complete checkpoint .*CheckpointFolder\(path, timeout="):
        online(tmp_path, teacher_refresh_interval=10)
    with pytest.raises(ValueError, match="does not exist"):
        online(CheckpointFolder(tmp_path / "missing"), teacher_refresh_interval=10)
    # ... or wait up to `timeout` seconds
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"after waiting 0.3 s"):
        online(CheckpointFolder(tmp_path, timeout=0.3, poll_interval=0.05), teacher_refresh_interval=10)
    assert time.monotonic() - start >= 0.3
    # A teacher that saves its first checkpoint while the student waits
    teacher = dqn(0)
    writer = threading.Timer(0.2, save_checkpoint, args=(teacher, tmp_path, 500))
    writer.start()
    model = online(CheckpointFolder(tmp_path, timeout=10.0, poll_interval=0.05), teacher_refresh_interval=10)
    writer.join()
    assert model.teacher_checkpoint_steps == 500
    assert_teacher_is(model, teacher)


def test_save_load_keeps_refreshing(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_checkpoint(dqn(0), folder, 100)
    model = online(folder, teacher_refresh_interval=20)
    model.learn(50)
    model.save(tmp_path / "student.zip")
    loaded = PolicyDistillation.load(tmp_path / "student.zip", env=model.get_env())
    assert loaded.teacher_refresh_interval == 20
    assert loaded.teacher_checkpoint_folder == str(folder) and loaded.teacher_checkpoint_steps == 100
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    assert_optimizer_states_equal(model.policy.optimizer, loaded.policy.optimizer)
    # Training goes on, and a newer checkpoint is taken
    newer = dqn(1)
    save_checkpoint(newer, folder, 900)
    loaded.learn(30, reset_num_timesteps=False)
    assert loaded.teacher_checkpoint_steps == 900
    assert_teacher_is(loaded, newer)
    with pytest.raises(ValueError, match="`teacher_refresh_interval` must be an integer >= 1"):
        PolicyDistillation.load(tmp_path / "student.zip", teacher_refresh_interval=0)
    # Loaded as a fixed teacher: no refresh
    fixed = PolicyDistillation.load(tmp_path / "student.zip", teacher_refresh_interval=None)
    assert fixed.teacher_refresh_interval is None
    fixed.set_env(model.get_env())
    fixed.learn(30, reset_num_timesteps=False)
    assert fixed.teacher_checkpoint_steps == 100


@pytest.mark.parametrize("interval", [0, -1, 1.5, True, "10", np.float64(3.0)])
def test_bad_refresh_interval(interval, tmp_path):
    save_checkpoint(dqn(0), tmp_path, 100)
    with pytest.raises(ValueError, match=r"`teacher_refresh_interval` must be an integer >= 1"):
        online(tmp_path, teacher_refresh_interval=interval)


def test_refresh_interval_errors(tmp_path):
    path = save_checkpoint(dqn(0), tmp_path, 100)
    # numpy integers are accepted
    assert online(tmp_path, teacher_refresh_interval=np.int64(5)).teacher_refresh_interval == 5
    # A single file or a model cannot be refreshed
    with pytest.raises(ValueError, match="`teacher` must be that folder"):
        online(str(path), teacher_refresh_interval=5)
    with pytest.raises(ValueError, match="`teacher` must be that folder"):
        online(dqn(0), teacher_refresh_interval=5)
    # A model distilled from a fixed teacher cannot be loaded as an online one
    fixed = online(str(path))
    assert fixed.teacher_checkpoint_folder is None
    fixed.save(tmp_path / "fixed.zip")
    with pytest.raises(ValueError, match="was not read from one"):
        PolicyDistillation.load(tmp_path / "fixed.zip", teacher_refresh_interval=5)
    with pytest.raises(ValueError, match="`timeout` of CheckpointFolder must be >= 0"):
        CheckpointFolder(tmp_path, timeout=-1)
    with pytest.raises(ValueError, match="`poll_interval` of CheckpointFolder must be a finite number"):
        CheckpointFolder(tmp_path, poll_interval=float("nan"))


def test_checkpoint_with_another_network(tmp_path):
    save_checkpoint(dqn(0), tmp_path, 100)
    model = online(tmp_path, teacher_refresh_interval=5)
    save_checkpoint(dqn(0, net_arch=(32,)), tmp_path, 200)
    with pytest.raises(ValueError, match="holds another network than the teacher's"):
        model.refresh_teacher()


def test_vec_normalize_teacher_is_refused_online(tmp_path):
    env = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]))
    teacher = PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[8]), seed=0)
    teacher.learn(64, callback=CheckpointCallback(save_freq=32, save_path=str(tmp_path), save_vecnormalize=True))
    assert CheckpointFolder(tmp_path).normalizes()
    # Offline, the statistics saved with the newest checkpoint are used
    loaded = load_teacher(CheckpointFolder(tmp_path), device="cpu")
    assert loaded.preprocessing.normalizes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="VecNormalize"):
            online(tmp_path, teacher_refresh_interval=5)
