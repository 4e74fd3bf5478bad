"""
Tiny models of every sb3_distill algorithm, for the tests that hold for all of them (test_contracts.py,
test_validation.py, test_atomic_save.py): a few hundred steps train each in well under a second.

MultiTaskPolicyDistillation acts in a ``MultiTaskVecEnv`` (Dict observations ``{"obs", "task"}``): its default
model distils two tasks (CartPole-v1 and Acrobot-v1: padding and one head per task in every contract); an env given
to :func:`make_model` becomes its one task. :func:`make_env` gives the env each algorithm is loaded with.
"""

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm, maybe_make_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_distill import (
    PIEKDSAC,
    DistillPPO,
    EnsembleDistillDQN,
    MultiTaskPolicyDistillation,
    PolicyDistillation,
    RealTimeDistillDQN,
)
from sb3_distill.common.multitask import MultiTaskVecEnv

MODEL_LIST: list[type[BaseAlgorithm]] = [
    EnsembleDistillDQN,
    RealTimeDistillDQN,
    PIEKDSAC,
    PolicyDistillation,
    DistillPPO,
    MultiTaskPolicyDistillation,
]
#: The algorithms whose env is a MultiTaskVecEnv (Dict observations, one task's raw ones with ``task=``)
MULTI_TASK = (MultiTaskPolicyDistillation,)
#: MultiTaskPolicyDistillation's default tasks: 4 and 6 observation values, 2 and 3 actions
DEFAULT_TASKS = ("CartPole-v1", "Acrobot-v1")
#: The on-policy algorithms (a rollout buffer, no replay buffer; ``train()`` without arguments)
ON_POLICY = (DistillPPO,)
#: The algorithms that act in discrete action spaces only
DISCRETE_ONLY = (EnsembleDistillDQN, RealTimeDistillDQN, MultiTaskPolicyDistillation)
#: The algorithms that act in Box action spaces only
BOX_ONLY = (PIEKDSAC,)

TINY_CONFIGS: dict[type[BaseAlgorithm], dict] = {
    EnsembleDistillDQN: dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        target_update_interval=50,
        train_freq=2,
        n_teachers=2,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
    ),
    RealTimeDistillDQN: dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        target_update_interval=50,
        train_freq=2,
        policy_kwargs=dict(net_arch=[16]),
        students=[dict(net_arch=[8])],
    ),
    PIEKDSAC: dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        ensemble_size=2,
        distill_interval=100,
        distill_epochs=1,
        distill_batch_size=16,
        distill_gradient_steps=2,
        n_recent_episodes=2,
        policy_kwargs=dict(net_arch=[16]),
    ),
    # 30 steps a rollout: the contracts' step counts (60, 120, 150) are whole rollouts; 15 divides 30 and 60
    DistillPPO: dict(n_steps=30, batch_size=15, n_epochs=2, policy_kwargs=dict(net_arch=[8])),
    PolicyDistillation: dict(
        learning_starts=32,
        batch_size=16,
        buffer_size=500,
        student_policy_kwargs=dict(net_arch=[8]),
    ),
    MultiTaskPolicyDistillation: dict(
        learning_starts=32,
        batch_size=16,
        buffer_size=500,
        student_policy_kwargs=dict(net_arch=[8]),
    ),
}


def default_env_id(model_class: type[BaseAlgorithm]) -> str:
    """A small env the algorithm supports: CartPole (discrete actions) or Pendulum (Box actions)."""
    return "Pendulum-v1" if model_class in BOX_ONLY else "CartPole-v1"


def untrained_teacher(env: gym.Env | VecEnv | str, policy: str = "MlpPolicy", seed: int = 0) -> BaseAlgorithm:
    """A freshly initialised DQN (discrete actions) or SAC (Box actions) teacher for PolicyDistillation."""
    env = maybe_make_env(env, verbose=0)
    net_arch = [] if policy == "CnnPolicy" else [32, 32]
    teacher_class = DQN if isinstance(env.action_space, spaces.Discrete) else SAC
    return teacher_class(policy, env, policy_kwargs=dict(net_arch=net_arch), buffer_size=100, seed=seed)


def untrained_ppo_teacher(env: gym.Env | str, policy: str = "MlpPolicy", seed: int = 0) -> BaseAlgorithm:
    """A freshly initialised PPO teacher (an actor-critic: every DistillPPO update rule) for DistillPPO."""
    policy_kwargs = dict(net_arch=[16]) if policy == "MlpPolicy" else {}
    return PPO(policy, env, policy_kwargs=policy_kwargs, n_steps=16, batch_size=16, seed=seed)


def make_model(
    model_class: type[BaseAlgorithm], env=None, policy: str = "MlpPolicy", teacher=None, seed: int = 0, **kwargs
) -> BaseAlgorithm:
    """
    A tiny model of ``model_class`` on ``env`` (default: :func:`default_env_id`); PolicyDistillation gets an
    untrained teacher of the env's spaces (DistillPPO an untrained PPO) unless ``teacher`` is given. ``kwargs``
    override the tiny config.
    """
    env = default_env_id(model_class) if env is None else env
    config = {**TINY_CONFIGS[model_class], "seed": seed, **kwargs}
    if model_class is PolicyDistillation:
        env = maybe_make_env(env, verbose=0)
        config["teacher"] = untrained_teacher(env, policy) if teacher is None else teacher
    if model_class is DistillPPO:
        env = maybe_make_env(env, verbose=0)
        config["teacher"] = untrained_ppo_teacher(env, policy) if teacher is None else teacher
    if model_class is MultiTaskPolicyDistillation:
        return make_multitask_model(env, policy, teacher, config)
    return model_class(policy, env, **config)


def make_multitask_model(env, policy: str, teacher, config: dict) -> BaseAlgorithm:
    """
    A tiny MultiTaskPolicyDistillation: on a MultiTaskVecEnv, an untrained teacher per task; on the default env,
    the two tasks :data:`DEFAULT_TASKS`; on any other env (or env id), that env as its one task.
    """
    if isinstance(env, MultiTaskVecEnv):
        envs = None
        teachers = {task: untrained_teacher(task_env) for task, task_env in zip(env.tasks, env.task_envs, strict=True)}
    else:
        if env == default_env_id(MultiTaskPolicyDistillation):
            envs, env = None, None
            teachers = {task: untrained_teacher(task) for task in DEFAULT_TASKS}
        else:
            env_id = env if isinstance(env, str) else None
            envs = {env_id or "task": env}
            teachers = {env_id or "task": untrained_teacher(env, policy) if teacher is None else teacher}
            env = None
    # Its one policy alias is "MultiInputPolicy" (the multi-task env's Dict observations), whatever the tasks
    return MultiTaskPolicyDistillation("MultiInputPolicy", env, teachers=teachers, envs=envs, **config)


def make_env(model_class: type[BaseAlgorithm]) -> gym.Env | VecEnv:
    """The env to load a model of :func:`make_model` with (the multi-task env of the default tasks for MULTI_TASK)."""
    if model_class in MULTI_TASK:
        task_envs = {task: make_vec_env(task) for task in DEFAULT_TASKS}
        return MultiTaskVecEnv(task_envs, env_ids={task: task for task in DEFAULT_TASKS})
    return gym.make(default_env_id(model_class))


class BoxActionEnv(gym.Env):
    """
    A tiny env with Box actions of any shape (multi-dimensional by default) and vector observations:
    reward ``-mean((action - 0.5)^2)``, 20-step episodes.
    """

    def __init__(self, action_shape: tuple[int, ...] = (2, 2), obs_dim: int = 3) -> None:
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, shape=action_shape, dtype=np.float32)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(obs_dim,), dtype=np.float32)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._steps = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        assert np.shape(action) == self.action_space.shape, f"action of shape {np.shape(action)}"
        self._steps += 1
        reward = -float(np.mean((np.asarray(action) - 0.5) ** 2))
        return self.observation_space.sample(), reward, False, self._steps >= 20, {}


def image_env(normalized: bool = False, discrete: bool = True) -> gym.Env:
    """
    A small fake Atari env (36x36, one channel first, the smallest a Nature-CNN takes): uint8 images, or with
    ``normalized=True`` float32 images already in [0, 1] (to use with ``normalize_images=False``).
    """
    env: gym.Env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=discrete, channel_first=True)
    if normalized:
        space = spaces.Box(0.0, 1.0, env.observation_space.shape, np.float32)
        env = gym.wrappers.TransformObservation(env, lambda obs: (obs / 255.0).astype(np.float32), space)
    return env


class TinyCNN(BaseFeaturesExtractor):
    """
    A features extractor for tiny channel-first images (MinAtar's 10x10 layout): one 3x3 convolution of ``filters``
    filters, ReLU, then ``features_dim`` units and ReLU. Importable, so that models using it save and load.
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 8, filters: int = 2) -> None:
        super().__init__(observation_space, features_dim)
        n_channels, height, width = observation_space.shape
        self.cnn = nn.Sequential(nn.Conv2d(n_channels, filters, kernel_size=3), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(filters * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


def tiny_image_env(n_channels: int, n_actions: int = 3, size: int = 6) -> gym.Env:
    """A fake channel-first uint8 image env of ``size`` x ``size`` x ``n_channels`` (MinAtar-like, smaller)."""
    return FakeImageEnv(
        action_dim=n_actions, screen_height=size, screen_width=size, n_channels=n_channels, discrete=True, channel_first=True
    )
