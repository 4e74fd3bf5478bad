"""
The multi-task DQN baseline of Rusu et al. ("Policy Distillation", 2015, arXiv:1511.06295, Sec. 5.3 and Table 3):
the multi-task student's architecture (a shared trunk and one Q-value head per task) trained from the games'
rewards alone, by DQN, instead of distilled from single-task teachers. Rusu's distilled multi-game network reached
a geometric mean of 89.3 % of the single-game DQNs and beat this baseline.

:class:`MultiTaskDQN` is SB3's ``DQN`` on a :class:`~sb3_distill.common.multitask.MultiTaskVecEnv` (every task
stepped together, observations ``{"obs": padded, "task": index}``) with a Q-network that is
:class:`~sb3_distill.multitask_policy_distillation.policies.MultiTaskQNetwork`, the student of
``MultiTaskPolicyDistillation``: described by the same keys (``net_arch``, ``features_extractor_class``, ...,
given as ``policy_kwargs``), the same trunk and heads. DQN's update is unchanged: each transition's TD target uses
its own task's head (the other heads' actions are ``-inf``, never the max); exploration draws random actions within
each task's own action set. The replay buffer holds every task's transitions in its env columns, so each batch is
balanced across tasks only on average (uniform sampling; Rusu's multi-task DQN also sampled uniformly).

Used by ``benchmarks/minatar_multitask.py``; tested in ``tests/test_multitask_dqn.py``.
"""

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from sb3_distill.common.multitask import MultiTaskVecEnv, pad_observations
from sb3_distill.multitask_policy_distillation.policies import MultiTaskQNetwork


class MultiTaskQNet(BasePolicy):
    """
    SB3's ``QNetwork`` role (``forward(obs) -> Q-values``, ``_predict``) played by the multi-task student: the task
    index of each observation picks its head.

    :param observation_space: the multi-task env's ``Dict`` space
    :param action_space: ``Discrete(max n_actions)``
    :param task_n_actions: each task's number of actions
    :param net_arch: hidden layers after the features extractor
    :param activation_fn: their activation
    :param features_extractor_class: the trunk's features extractor
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: whether images are divided by 255
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        task_n_actions: list[int],
        net_arch: list[int],
        activation_fn: type[nn.Module],
        features_extractor_class: type[BaseFeaturesExtractor],
        features_extractor_kwargs: dict[str, Any],
        normalize_images: bool,
    ) -> None:
        super().__init__(observation_space, action_space, normalize_images=normalize_images)
        padded_space = observation_space["obs"]
        self.student = MultiTaskQNetwork(
            padded_space,  # type: ignore[arg-type]
            task_n_actions,
            features_extractor_class(padded_space, **features_extractor_kwargs),
            net_arch,
            activation_fn,
            normalize_images,
        )

    def forward(self, obs: PyTorchObs) -> th.Tensor:  # type: ignore[override]
        assert isinstance(obs, dict), "MultiTaskVecEnv observations are a dict"
        return self.student(obs["obs"], obs["task"].long().flatten())

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self(observation).argmax(dim=1)


class MultiTaskDQNPolicy(DQNPolicy):
    """
    SB3's ``DQNPolicy`` whose Q-network and target are :class:`MultiTaskQNet` (the multi-task student's trunk and
    heads). Its keyword arguments are DQN's (they describe the shared trunk) plus ``task_n_actions``.

    :param task_n_actions: each task's number of actions (set by :class:`MultiTaskDQN`)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        task_n_actions: list[int],
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.task_n_actions = list(task_n_actions)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64, 64] if net_arch is None else net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def make_q_net(self) -> MultiTaskQNet:  # type: ignore[override]
        return MultiTaskQNet(
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,  # type: ignore[arg-type]
            self.task_n_actions,
            self.net_arch,
            self.activation_fn,
            self.features_extractor_class,
            self.features_extractor_kwargs,
            self.normalize_images,
        ).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "task_n_actions": self.task_n_actions}


class MultiTaskDQN(DQN):
    """
    DQN with the multi-task student's architecture, on a :class:`~sb3_distill.common.multitask.MultiTaskVecEnv`,
    trained from rewards (Rusu et al.'s multi-task DQN baseline). Every argument is SB3 DQN's; ``policy_kwargs``
    describes the shared trunk with the keys of ``MultiTaskPolicyDistillation``'s ``student_policy_kwargs``.

    :param policy: ``"MultiInputPolicy"`` (:class:`MultiTaskDQNPolicy`)
    :param env: the multi-task env (see :func:`make_multitask_env`)
    :param kwargs: SB3 DQN's keyword arguments
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": MultiTaskDQNPolicy}  # type: ignore[assignment]

    def __init__(self, policy: str, env: MultiTaskVecEnv | None, **kwargs: Any) -> None:
        if env is None:
            # load(): the tasks and the policy's kwargs come from the saved model
            super().__init__(policy, env, **kwargs)  # type: ignore[arg-type]
            return
        if not isinstance(env, MultiTaskVecEnv):
            raise ValueError(f"`env` of MultiTaskDQN must be a MultiTaskVecEnv, got {type(env).__name__}")
        self.tasks = list(env.tasks)
        self.task_observation_spaces = list(env.task_observation_spaces)
        self.task_n_actions = [int(space.n) for space in env.task_action_spaces]
        policy_kwargs = {**(kwargs.pop("policy_kwargs", None) or {}), "task_n_actions": self.task_n_actions}
        super().__init__(policy, env, policy_kwargs=policy_kwargs, **kwargs)

    def _random_actions(self, tasks: np.ndarray) -> np.ndarray:
        """A uniformly random action of each observation's own task."""
        return np.array([np.random.randint(self.task_n_actions[int(task)]) for task in tasks.reshape(-1)])

    def predict(  # type: ignore[override]
        self,
        observation: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        task: str | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        Epsilon-greedy actions (greedy with ``deterministic``), random ones within each task's own actions.

        :param observation: the multi-task env's observations; with ``task``: that task's own raw observation(s)
        :param task: the task's name (None: read from the multi-task observation)
        """
        if task is not None:
            index = self.tasks.index(task)
            shape = self.task_observation_spaces[index].shape
            observations = np.asarray(observation)
            single = observations.shape == shape
            padded_space = self.observation_space["obs"]  # type: ignore[index]
            padded = pad_observations(observations.reshape((-1, *shape)), padded_space.shape, padded_space.dtype)
            actions, _ = self.predict({"obs": padded, "task": np.full(len(padded), index)}, deterministic=deterministic)
            return (actions[0] if single else actions), None
        if not deterministic and np.random.rand() < self.exploration_rate:
            return self._random_actions(np.asarray(observation["task"])), state
        return self.policy.predict(observation, state, episode_start, deterministic)  # type: ignore[arg-type]

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        # As OffPolicyAlgorithm's: random actions before `learning_starts` (within each task's actions), then predict()
        assert isinstance(self._last_obs, dict), "MultiTaskVecEnv observations are a dict"
        if self.num_timesteps < learning_starts:
            actions = self._random_actions(self._last_obs["task"])
        else:
            actions, _ = self.predict(self._last_obs, deterministic=False)
        return actions, actions


def make_multitask_env(env_ids: list[str], n_envs_per_task: int = 1, seed: int | None = None) -> MultiTaskVecEnv:
    """
    The multi-task env of ``env_ids`` (each task named by its env id), for :class:`MultiTaskDQN`.

    :param env_ids: the tasks' env ids
    :param n_envs_per_task: envs of each task
    :param seed: seed of the envs (None: not seeded)
    """
    task_envs = {env_id: make_vec_env(env_id, n_envs=n_envs_per_task, seed=seed) for env_id in env_ids}
    return MultiTaskVecEnv(task_envs, env_ids={env_id: env_id for env_id in env_ids})
