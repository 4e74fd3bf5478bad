"""
TEMPORARY stand-in for ``sb3_distill.common.teachers`` (being written on main), with exactly its API for the
parts DistillPPO uses. Deleted when main's module is merged.
"""

import pathlib
from typing import Any, ClassVar, NamedTuple

import torch as th
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy
from torch.nn import functional as F

from sb3_distill.policy_distillation.policy_distillation import load_teacher as _load_zip


class Teacher:
    action_kind: ClassVar[str]
    student_algorithm: ClassVar[type[BaseAlgorithm]]
    default_temperature: ClassVar[float]
    has_value: ClassVar[bool]

    def __init__(self, policy: BasePolicy) -> None:
        self.policy = policy

    @classmethod
    def for_policy(cls, policy: BasePolicy) -> "Teacher":
        if isinstance(policy, DQNPolicy):
            return DQNTeacher(policy)
        if isinstance(policy, ActorCriticPolicy) and "Recurrent" not in type(policy).__name__:
            if isinstance(policy.action_dist, CategoricalDistribution):
                return ActorCriticTeacher(policy)
            if isinstance(policy.action_dist, DiagGaussianDistribution):
                return GaussianActorCriticTeacher(policy)
        raise ValueError(f"`teacher` with policy {type(policy).__name__} is not supported. Supported teachers: DQN, PPO, A2C")

    def outputs(self, obs: Any) -> tuple[th.Tensor, th.Tensor | None]:
        raise NotImplementedError

    def log_probs(self, obs: Any, temperature: float) -> th.Tensor:
        return F.log_softmax(self.outputs(obs)[0] / temperature, dim=-1)

    def distribution(self, obs: Any, temperature: float = 1.0) -> th.distributions.Distribution:
        scores, log_std = self.outputs(obs)
        if self.action_kind == "categorical":
            return th.distributions.Categorical(logits=scores / temperature)
        assert log_std is not None
        return th.distributions.Independent(th.distributions.Normal(scores, log_std.exp()), 1)

    def value(self, obs: Any, temperature: float = 1.0) -> th.Tensor:
        raise NotImplementedError


class ActorCriticTeacher(Teacher):
    action_kind = "categorical"
    student_algorithm = PPO
    default_temperature = 1.0
    has_value = True

    def outputs(self, obs: Any) -> tuple[th.Tensor, th.Tensor | None]:
        return self.policy.get_distribution(obs).distribution.logits, None  # type: ignore[attr-defined,operator]

    def value(self, obs: Any, temperature: float = 1.0) -> th.Tensor:
        return self.policy.predict_values(obs).flatten()  # type: ignore[attr-defined,operator]


class GaussianActorCriticTeacher(ActorCriticTeacher):
    action_kind = "gaussian"

    def outputs(self, obs: Any) -> tuple[th.Tensor, th.Tensor | None]:
        distribution = self.policy.get_distribution(obs).distribution  # type: ignore[attr-defined,operator]
        return distribution.mean, distribution.stddev.log()


class DQNTeacher(Teacher):
    action_kind = "categorical"
    student_algorithm = DQN
    default_temperature = 0.01
    has_value = True

    def outputs(self, obs: Any) -> tuple[th.Tensor, th.Tensor | None]:
        return self.policy.q_net(obs), None  # type: ignore[attr-defined,operator]

    def value(self, obs: Any, temperature: float = 1.0) -> th.Tensor:
        q_values = self.outputs(obs)[0]
        return (F.softmax(q_values / temperature, dim=-1) * q_values).sum(dim=-1)


class LoadedTeacher(NamedTuple):
    model: BaseAlgorithm
    vec_normalize: Any
    env_kwargs: dict[str, Any]


def load_teacher(source: BaseAlgorithm | str | pathlib.Path, device: th.device | str = "auto") -> LoadedTeacher:
    if isinstance(source, BaseAlgorithm):
        return LoadedTeacher(source, None, {})
    if isinstance(source, (str, pathlib.Path)):
        return LoadedTeacher(_load_zip(source, device=device), None, {})
    raise TypeError(f"`teacher` must be an SB3 model or the path to its .zip, got {type(source).__name__}")


__all__ = ["A2C", "LoadedTeacher", "Teacher", "load_teacher"]
