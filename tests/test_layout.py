"""
The policy owns the layout: every algorithm keeps the user's ``policy_kwargs``, accepts every constructor
argument in ``load(path, **kwargs)``, and refuses, with a clear error, one that would resize saved networks.
"""

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_distill import PIEKDSAC, EnsembleDistillDQN, MultiTaskPolicyDistillation, PolicyDistillation, RealTimeDistillDQN
from sb3_distill.common.multitask import MultiTaskVecEnv
from tests.helpers import sample_observations

COMMON = dict(learning_starts=20, batch_size=8, buffer_size=200, train_freq=2, seed=0)


def make_model(model_class):
    """A tiny model of each algorithm, with its layout arguments set."""
    if model_class is EnsembleDistillDQN:
        return EnsembleDistillDQN(
            "MlpPolicy", "CartPole-v1", n_teachers=2, policy_kwargs=dict(net_arch=[8]),
            student_policy_kwargs=dict(net_arch=[4]), **COMMON,
        )  # fmt: skip
    if model_class is RealTimeDistillDQN:
        return RealTimeDistillDQN(
            "MlpPolicy", "CartPole-v1", students=[dict(net_arch=[4]), dict(net_arch=[2])],
            policy_kwargs=dict(net_arch=[8]), **COMMON,
        )  # fmt: skip
    if model_class is PIEKDSAC:
        return PIEKDSAC(
            "MlpPolicy", "Pendulum-v1", ensemble_size=2, distill_interval=40, distill_gradient_steps=2,
            distill_epochs=1, policy_kwargs=dict(net_arch=[8]), **COMMON,
        )  # fmt: skip
    teacher = DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[8]), seed=0)
    if model_class is MultiTaskPolicyDistillation:
        acrobot = DQN("MlpPolicy", "Acrobot-v1", policy_kwargs=dict(net_arch=[8]), seed=0)
        return MultiTaskPolicyDistillation(
            teachers={"CartPole-v1": teacher, "Acrobot-v1": acrobot}, student_policy_kwargs=dict(net_arch=[4]), **COMMON
        )
    return PolicyDistillation(env="CartPole-v1", teacher=teacher, student_policy_kwargs=dict(net_arch=[4]), **COMMON)


MODEL_LIST = [EnsembleDistillDQN, RealTimeDistillDQN, PIEKDSAC, PolicyDistillation, MultiTaskPolicyDistillation]
#: Arguments that are not hyperparameters (or not attributes under their own name); MultiTaskPolicyDistillation's
#: `envs` and `n_envs_per_task` build its env (load() takes the env as `env`) and `teachers` is copied into the policy
NOT_OVERRIDABLE = {
    "self",
    "policy",
    "env",
    "device",
    "_init_setup_model",
    "seed",
    "teacher",
    "teachers",
    "envs",
    "n_envs_per_task",
}
#: A different value of each layout argument, and what the error names
LAYOUT_CHANGES = {
    EnsembleDistillDQN: [("n_teachers", 3), ("student_policy_kwargs", dict(net_arch=[6]))],
    RealTimeDistillDQN: [("students", [dict(net_arch=[4])]), ("stack_teacher", False)],
    PIEKDSAC: [("ensemble_size", 3)],
    PolicyDistillation: [],
    MultiTaskPolicyDistillation: [("student_policy_kwargs", dict(net_arch=[6]))],
}


def env_of(model_class):
    if model_class is MultiTaskPolicyDistillation:
        task_envs = {task: DummyVecEnv([lambda task=task: gym.make(task)]) for task in ("CartPole-v1", "Acrobot-v1")}
        return MultiTaskVecEnv(task_envs, env_ids={task: task for task in task_envs})
    return gym.make("Pendulum-v1" if model_class is PIEKDSAC else "CartPole-v1")


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_policy_kwargs_stay_the_users(model_class, tmp_path):
    model = make_model(model_class)
    given = dict(model.policy_kwargs)
    model.learn(60)
    assert model.policy_kwargs == given
    model.save(tmp_path / "model.zip")
    # SB3 compares `policy_kwargs` given to load with the stored dict: the same dict must be accepted
    loaded = model_class.load(tmp_path / "model.zip", env=env_of(model_class), policy_kwargs=given)
    assert loaded.policy_kwargs == given
    with pytest.raises(ValueError, match="policy kwargs"):
        model_class.load(tmp_path / "model.zip", env=env_of(model_class), policy_kwargs={**given, "net_arch": [3]})


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_every_constructor_argument_can_be_given_to_load(model_class, tmp_path):
    model = make_model(model_class)
    model.learn(60)
    model.save(tmp_path / "model.zip")
    names = [name for name in inspect.signature(model_class.__init__).parameters if name not in NOT_OVERRIDABLE]
    obs = sample_observations(model.observation_space, 5)
    expected = model.predict(obs, deterministic=True)[0]
    for name in names:
        value = getattr(model, name) if hasattr(model, name) else getattr(model, f"_{name}")
        loaded = model_class.load(tmp_path / "model.zip", env=env_of(model_class), **{name: value})
        assert np.allclose(loaded.predict(obs, deterministic=True)[0], expected), name


@pytest.mark.parametrize("model_class", [cls for cls in MODEL_LIST if LAYOUT_CHANGES[cls]])
def test_layout_cannot_change_on_load(model_class, tmp_path):
    model = make_model(model_class)
    model.save(tmp_path / "model.zip")
    for name, value in LAYOUT_CHANGES[model_class]:
        with pytest.raises(ValueError, match=f"`{name}` cannot change after training"):
            model_class.load(tmp_path / "model.zip", env=env_of(model_class), **{name: value})
    # From a file object too (read twice: the check rewinds it)
    name, _ = LAYOUT_CHANGES[model_class][0]
    with open(tmp_path / "model.zip", "rb") as file:
        loaded = model_class.load(file, env=env_of(model_class), **{name: getattr(model, name)})
    assert getattr(loaded, name) == getattr(model, name)


def test_realtime_student_learning_rate_on_load(tmp_path):
    """The issue's case: a new students' learning rate on load trains, with the saved (stacked) layout."""
    model = make_model(RealTimeDistillDQN)
    assert model.policy.teacher_in_stack
    model.learn(60)
    model.save(tmp_path / "model.zip")
    loaded = RealTimeDistillDQN.load(tmp_path / "model.zip", env=env_of(RealTimeDistillDQN), student_learning_rate=5e-4)
    assert loaded.policy.teacher_in_stack and loaded.student_lr_schedule(1.0) == 5e-4
    before = {key: value.clone() for key, value in loaded.policy.state_dict().items()}
    loaded.learn(60, reset_num_timesteps=False)
    assert any(not th.equal(before[key], value) for key, value in loaded.policy.state_dict().items())
    # `q_net` is the teacher, member 0 of the first stack
    obs = th.as_tensor(np.stack([loaded.observation_space.sample() for _ in range(4)]))
    assert th.equal(loaded.q_net(obs), loaded.policy.student_stacks[0](obs)[0])
