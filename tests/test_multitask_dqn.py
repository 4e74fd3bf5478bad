"""The multi-task DQN baseline (benchmarks/multitask_dqn.py): the multi-task student's architecture trained by DQN."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env

from benchmarks.multitask_dqn import MultiTaskDQN, make_multitask_env
from sb3_distill import MultiTaskPolicyDistillation
from sb3_distill.common.multitask import MultiTaskVecEnv
from tests.models import TinyCNN, tiny_image_env

TASKS = ["CartPole-v1", "Acrobot-v1"]  # 4 and 6 observation values, 2 and 3 actions
TINY = dict(learning_starts=30, batch_size=16, buffer_size=500, target_update_interval=40, seed=0)


def test_trains_within_each_tasks_actions(tmp_path):
    model = MultiTaskDQN("MultiInputPolicy", make_multitask_env(TASKS), policy_kwargs=dict(net_arch=[8]), **TINY)
    before = [p.clone() for p in model.q_net.parameters()]
    # Exploration (and the random warm-up) draws each task's actions only: the env raises on any other
    model.learn(200)
    assert model._n_updates > 0
    assert all(not th.equal(a, b) for a, b in zip(before, model.q_net.parameters(), strict=True))
    actions = model._random_actions(np.array([0] * 200 + [1] * 200))
    assert set(actions[:200]) == {0, 1} and set(actions[200:]) == {0, 1, 2}
    # CartPole's head has 2 actions: its third Q-value is -inf, never the greedy action nor the TD target's max
    obs = model.env.reset()
    q_values = model.q_net(model.policy.obs_to_tensor(obs)[0])
    assert th.isinf(q_values[0, 2]) and th.isfinite(q_values[1]).all()
    # One task's own raw observations with `task`, as MultiTaskPolicyDistillation
    raw = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    actions, _ = model.predict(raw, task="CartPole-v1", deterministic=True)
    assert actions.shape == (5,) and actions.max() < 2
    model.save(tmp_path / "model.zip")
    loaded = MultiTaskDQN.load(tmp_path / "model.zip", env=make_multitask_env(TASKS))
    np.testing.assert_array_equal(loaded.predict(raw, task="CartPole-v1", deterministic=True)[0], actions)
    loaded.learn(40, reset_num_timesteps=False)


def test_same_architecture_as_the_distilled_student():
    # The same description gives the same trunk and heads as MultiTaskPolicyDistillation's student
    network = dict(net_arch=[8, 4])
    model = MultiTaskDQN("MultiInputPolicy", make_multitask_env(TASKS), policy_kwargs=network, **TINY)
    teachers = {task: DQN("MlpPolicy", task, policy_kwargs=dict(net_arch=[16])) for task in TASKS}
    distilled = MultiTaskPolicyDistillation(teachers=teachers, student_policy_kwargs=network, learning_starts=10)
    shapes = {key: value.shape for key, value in model.q_net.student.state_dict().items()}
    assert shapes == {key: value.shape for key, value in distilled.policy.student.state_dict().items()}
    assert model.q_net_target.student is not model.q_net.student


def test_cnn_trunk_on_images():
    envs = {"a": tiny_image_env(2, 3), "b": tiny_image_env(3, 4)}
    env = MultiTaskVecEnv({task: make_vec_env(lambda env=env: env) for task, env in envs.items()})
    network = dict(features_extractor_class=TinyCNN, features_extractor_kwargs=dict(filters=2, features_dim=8), net_arch=[])
    model = MultiTaskDQN("MultiInputPolicy", env, policy_kwargs=network, **TINY).learn(60)
    assert model.q_net.student.features_extractor.cnn[0].in_channels == 3
    assert model.observation_space["obs"].dtype == np.uint8


def test_needs_a_multitask_env():
    with pytest.raises(ValueError, match="must be a MultiTaskVecEnv"):
        MultiTaskDQN("MultiInputPolicy", "CartPole-v1")  # type: ignore[arg-type]
