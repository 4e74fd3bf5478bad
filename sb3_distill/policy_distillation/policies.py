"""
Policies of PolicyDistillation: a frozen teacher policy and a trainable student policy of the natural SB3
kind, held in one module so that both are saved with the model.
"""

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn

from sb3_distill.common.torch_layers import count_parameters

#: What a teacher's policy outputs, by teacher kind:
#: ``"q_values"`` (DQN), ``"quantiles"`` (QR-DQN, reduced to their mean), ``"logits"`` (PPO/A2C, Discrete),
#: ``"gaussian"`` (PPO/A2C, Box: a diagonal Gaussian), ``"squashed_gaussian"`` (SAC: a Gaussian before tanh),
#: ``"deterministic"`` (TD3/DDPG: actions).
TEACHER_KINDS = ("q_values", "quantiles", "logits", "gaussian", "squashed_gaussian", "deterministic")
#: Teacher kinds whose policy is a categorical distribution over discrete actions
DISCRETE_KINDS = ("q_values", "quantiles", "logits")


def student_kind(teacher_kind: str) -> str:
    """
    The kind of the student's outputs: the teacher's, except that a QR-DQN teacher gets a DQN student
    (Q-values, the mean of the teacher's quantiles).

    :param teacher_kind: one of :data:`TEACHER_KINDS`
    :return: the student's kind
    """
    return "q_values" if teacher_kind == "quantiles" else teacher_kind


def policy_outputs(kind: str, policy: Any, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
    """
    The outputs of a policy that the distillation losses compare, on a batch of (raw) observations.

    :param kind: the policy's kind, one of :data:`TEACHER_KINDS`
    :param policy: an SB3 policy of that kind
    :param obs: observations as stored in the replay buffer, shape (batch, ...)
    :return: for discrete kinds, Q-values or logits (batch, n_actions) and None; for Gaussian kinds, the
        means and log standard deviations (batch, action_dim); for deterministic policies, the actions
        (in [-1, 1]) and None
    """
    if kind == "q_values":
        return policy.q_net(obs), None
    if kind == "quantiles":
        # (batch, n_quantiles, n_actions) -> Q-values (batch, n_actions)
        return policy.quantile_net(obs).mean(dim=1), None
    if kind in ("logits", "gaussian"):
        distribution = policy.get_distribution(obs).distribution
        if kind == "logits":
            return distribution.logits, None
        return distribution.mean, distribution.stddev.log()
    if kind == "squashed_gaussian":
        mean, log_std, _ = policy.actor.get_action_dist_params(obs)
        return mean, log_std
    if kind == "deterministic":
        return policy.actor(obs), None
    raise ValueError(f"Unknown teacher kind {kind!r}, expected one of {TEACHER_KINDS}")


def value_outputs(kind: str, policy: Any, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
    """
    The value estimates that ``value_coef`` distills: V(s) of an actor-critic policy, shape (batch, 1), or
    every Q head of a SAC/TD3 critic on the buffer's (s, a) pairs, shape (n_critics, batch, 1).

    :param kind: the policy's kind, one of ``"logits"``, ``"gaussian"``, ``"squashed_gaussian"``, ``"deterministic"``
    :param policy: an SB3 policy of that kind
    :param obs: observations, shape (batch, ...)
    :param actions: the buffer's actions (scaled to [-1, 1] for Box spaces), shape (batch, action_dim)
    :return: the values
    """
    if kind in ("logits", "gaussian"):
        return policy.predict_values(obs)
    if kind in ("squashed_gaussian", "deterministic"):
        return th.stack(policy.critic(obs, actions))
    raise ValueError(f"Policies of kind {kind!r} have no separate value function to distill")


def acting_parameter_count(kind: str, policy: Any) -> int:
    """
    Number of parameters a policy needs to act (what a deployed student costs): the Q-network of a DQN,
    the actor of SAC/TD3, the features extractor, policy branch, action head (and log std) of an
    actor-critic policy; target networks, critics and value heads are not counted.

    :param kind: the policy's kind, one of :data:`TEACHER_KINDS`
    :param policy: an SB3 policy of that kind
    :return: the parameter count
    """
    if kind == "q_values":
        return count_parameters(policy.q_net)
    if kind == "quantiles":
        return count_parameters(policy.quantile_net)
    if kind in ("squashed_gaussian", "deterministic"):
        return count_parameters(policy.actor)
    assert isinstance(policy, ActorCriticPolicy)
    modules: list[nn.Module] = [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]
    log_std = policy.log_std.numel() if kind == "gaussian" else 0
    return sum(count_parameters(module) for module in modules) + log_std


def check_teacher_policy(policy: BasePolicy) -> str:
    """
    The kind of a teacher policy, or a ``ValueError`` that names the supported teachers.

    :param policy: the teacher's SB3 policy
    :return: one of :data:`TEACHER_KINDS`
    """
    supported = (
        "DQN and QR-DQN (Discrete actions, Q-values), PPO and A2C (Discrete actions, logits; Box actions, "
        "Gaussian without gSDE), SAC (Box, without gSDE), TD3 and DDPG (Box)"
    )
    name = type(policy).__name__
    if isinstance(policy, DQNPolicy):
        return "q_values"
    if type(policy).__module__.startswith("sb3_contrib.qrdqn"):
        return "quantiles"
    if isinstance(policy, SACPolicy) and not policy.actor.use_sde:
        return "squashed_gaussian"
    if isinstance(policy, TD3Policy):
        return "deterministic"
    # Recurrent policies subclass ActorCriticPolicy but need hidden states: not supported
    if isinstance(policy, ActorCriticPolicy) and "Recurrent" not in name:
        if isinstance(policy.action_dist, CategoricalDistribution):
            return "logits"
        if isinstance(policy.action_dist, DiagGaussianDistribution):
            return "gaussian"
    raise ValueError(f"`teacher` with policy {name} is not supported. Supported teachers: {supported}")


class DistillationPolicy(BasePolicy):
    """
    A frozen teacher policy and a trainable student policy, both plain SB3 policies, in one module.
    ``predict()`` and ``forward()`` use the student; the teacher is always in evaluation mode.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (passed to both SB3 policies, which need one to be built;
        the student is trained by this policy's ``optimizer``)
    :param teacher_policy_class: the teacher's SB3 policy class
    :param teacher_policy_kwargs: the teacher policy's constructor parameters (``_get_constructor_parameters()``
        without the spaces and schedule)
    :param student_policy_class: the student's SB3 policy class
    :param student_policy_kwargs: keyword arguments of the student policy (its network)
    :param teacher_kind: the teacher's kind, one of :data:`TEACHER_KINDS`
    :param distill_value: whether the student's value function (V or Q heads) is trained too, so that the
        optimizer covers it
    :param optimizer_class: The optimizer of the student
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
    """

    #: The SB3 alias of the student's policy class (resolved against the student algorithm's aliases)
    student_policy_alias: ClassVar[str] = "MlpPolicy"
    teacher: BasePolicy
    student: BasePolicy

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        teacher_policy_class: type[BasePolicy],
        teacher_policy_kwargs: dict[str, Any],
        student_policy_class: type[BasePolicy],
        student_policy_kwargs: dict[str, Any],
        teacher_kind: str,
        distill_value: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.teacher_policy_class = teacher_policy_class
        self.teacher_policy_kwargs = teacher_policy_kwargs
        self.student_policy_class = student_policy_class
        self.student_policy_kwargs = student_policy_kwargs
        self.teacher_kind = teacher_kind
        self.distill_value = distill_value
        self.teacher = teacher_policy_class(observation_space, action_space, lr_schedule, **teacher_policy_kwargs)
        self.teacher.set_training_mode(False)
        self.teacher.requires_grad_(False)
        self.student = student_policy_class(observation_space, action_space, lr_schedule, **student_policy_kwargs)
        self.optimizer = self.optimizer_class(
            self.student_trainable_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs  # type: ignore[call-arg]
        )

    def student_trainable_parameters(self) -> list[nn.Parameter]:
        """
        The student parameters that distillation trains: the Q-network of a DQN student; the actor (and the
        critic with ``distill_value``) of a SAC/TD3 student; the whole policy of an actor-critic student
        (its value head only changes with ``distill_value``).

        :return: the parameters
        """
        kind = student_kind(self.teacher_kind)
        student: Any = self.student
        if kind == "q_values":
            return list(student.q_net.parameters())
        if kind in ("squashed_gaussian", "deterministic"):
            modules = [student.actor] + ([student.critic] if self.distill_value else [])
            return [param for module in modules for param in module.parameters()]
        return list(student.parameters())

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            teacher_policy_class=self.teacher_policy_class,
            teacher_policy_kwargs=self.teacher_policy_kwargs,
            student_policy_class=self.student_policy_class,
            student_policy_kwargs=self.student_policy_kwargs,
            teacher_kind=self.teacher_kind,
            distill_value=self.distill_value,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )

    @staticmethod
    def _dummy_schedule(_: float) -> float:
        return 0.0

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the student in training or evaluation mode; the teacher stays in evaluation mode.

        :param mode: True for training mode
        """
        self.student.set_training_mode(mode)
        self.training = mode

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.student._predict(observation, deterministic=deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The student's action(s) from an observation, as the student's own SB3 policy gives them.

        :param observation: the input observation
        :param state: The last hidden states (unused)
        :param episode_start: The last masks (unused)
        :param deterministic: Whether or not to return deterministic actions.
        :return: the student's action and the state
        """
        # Evaluation mode, as SB3's BasePolicy.predict (the student's predict switches only the student)
        self.set_training_mode(False)
        return self.student.predict(observation, state, episode_start, deterministic)


class MlpPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``MlpPolicy``."""

    student_policy_alias = "MlpPolicy"


class CnnPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``CnnPolicy``."""

    student_policy_alias = "CnnPolicy"


class MultiInputPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``MultiInputPolicy``."""

    student_policy_alias = "MultiInputPolicy"
