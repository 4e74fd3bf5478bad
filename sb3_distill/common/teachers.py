"""
Teachers: a trained SB3 policy seen through what distillation needs from it.

A :class:`Teacher` is an adapter around a frozen SB3 policy module (the module itself lives inside the
distilling model's policy, so that it is saved with the model). One subclass per kind of policy, found
from the policy's class by :meth:`Teacher.for_policy`; each says what the policy outputs (a categorical
distribution from Q-values or logits, a diagonal Gaussian, a deterministic action), the state value where
the kind has one, the parameters acting needs, the SB3 algorithm of a student of the same kind, the
distillation losses that apply and the default temperature. The same adapters are used for students,
which are plain SB3 policies too.

Adding a kind (TQC, CrossQ, a policy of your own) is one subclass, registered with
:func:`register_teacher`::

    from sb3_contrib import TQC
    from sb3_contrib.tqc.policies import TQCPolicy

    @register_teacher
    class TQCTeacher(SACTeacher):
        policy_class = TQCPolicy
        algorithms = (TQC,)
        student_algorithm = TQC

A teacher is loaded with :func:`load_teacher` from an SB3 model, a ``.zip`` (its algorithm read from the
file), an rl-zoo3 experiment folder, or the newest complete checkpoint of a folder that a training teacher
writes checkpoints into (:class:`CheckpointFolder`), with its observation preprocessing
(:class:`TeacherPreprocessing`).
"""

import inspect
import os
import pathlib
import pickle
import re
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch as th
from sb3_contrib import QRDQN
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.qrdqn.policies import QRDQNPolicy
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecFrameStack, VecNormalize, unwrap_vec_wrapper
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal
from torch.nn import functional as F

from sb3_distill.common.save import atomic_save_path
from sb3_distill.common.torch_layers import count_parameters

#: What the distribution of a policy is, by ``Teacher.action_kind``
ACTION_KINDS = ("categorical", "gaussian", "squashed_gaussian", "deterministic")
#: Discrete distillation losses (:data:`sb3_distill.common.losses.DISTILLATION_LOSSES`) and continuous ones
_DISCRETE_LOSSES = ("forward_kl", "reverse_kl", "nll", "mse")
_GAUSSIAN_LOSSES = ("forward_kl", "reverse_kl", "mse")

_REGISTRY: list[type["Teacher"]] = []
#: What SB3 saves of a model beyond its constructor arguments (SB3 2.x), for reading the algorithm of a file
_GENERIC_SAVED_ATTRIBUTES = {
    "action_noise", "action_space", "ep_info_buffer", "ep_success_buffer", "lr_schedule", "n_envs", "num_timesteps",
    "observation_space", "policy_class", "start_time", "batch_norm_stats", "batch_norm_stats_target",
    "exploration_rate", "exploration_schedule", "sde_sample_freq", "use_sde", "use_sde_at_warmup", "n_quantiles",
    "actor_batch_norm_stats", "actor_batch_norm_stats_target", "critic_batch_norm_stats",
    "critic_batch_norm_stats_target", "policy_delay", "target_noise_clip", "target_policy_noise",
}  # fmt: skip


def register_teacher(teacher_class: type["Teacher"]) -> type["Teacher"]:
    """
    Register a :class:`Teacher` subclass, so that :meth:`Teacher.for_policy` and :func:`load_teacher` find
    it. Later registrations are tried first: a subclass registered by a user takes precedence.

    :param teacher_class: the class
    :return: the class (usable as a decorator)
    """
    _REGISTRY.insert(0, teacher_class)
    return teacher_class


def supported_teachers() -> str:
    """The registered teacher kinds, in words, for error messages."""
    return ", ".join(f"{cls.__name__} ({'/'.join(a.__name__ for a in cls.algorithms)})" for cls in reversed(_REGISTRY))


class Teacher(ABC):
    """
    A frozen SB3 policy and what distillation needs from it. Subclasses set the class attributes and
    implement :meth:`outputs` (and :meth:`value` where the kind has a state value).

    :param policy: the SB3 policy (an instance of ``policy_class``)
    """

    #: The SB3 policy class this adapter applies to (subclasses included)
    policy_class: ClassVar[type[BasePolicy]]
    #: The SB3 algorithms whose policies these are (the first one is the default when a file does not say)
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = ()
    #: The SB3 algorithm of a student of the same kind (what ``export_student()`` returns)
    student_algorithm: ClassVar[type[BaseAlgorithm]]
    #: One of :data:`ACTION_KINDS`
    action_kind: str = "categorical"
    #: The distillation losses that apply, the first one being the default
    losses: ClassVar[tuple[str, ...]] = _DISCRETE_LOSSES
    #: Default softmax temperature tau of the discrete losses
    default_temperature: ClassVar[float] = 1.0
    #: Whether :meth:`value` gives a state value V(s)
    has_value: ClassVar[bool] = False

    def __init__(self, policy: BasePolicy) -> None:
        # Any: each subclass reaches the attributes of its own policy class
        self.policy: Any = policy

    @classmethod
    def matches(cls, policy: BasePolicy) -> bool:
        """Whether this adapter applies to ``policy``."""
        return isinstance(policy, cls.policy_class)

    @classmethod
    def for_policy(cls, policy: BasePolicy) -> "Teacher":
        """
        The adapter of a policy, or a ``ValueError`` naming the supported teachers.

        :param policy: an SB3 policy
        :return: the registered adapter that applies to it
        """
        for teacher_class in _REGISTRY:
            if teacher_class.matches(policy):
                return teacher_class(policy)
        raise ValueError(
            f"`teacher` with policy {type(policy).__name__} is not supported. Supported teachers: {supported_teachers()}"
        )

    @property
    def is_discrete(self) -> bool:
        """Whether the policy is a categorical distribution over discrete actions."""
        return self.action_kind == "categorical"

    @abstractmethod
    def outputs(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
        """
        The outputs the distillation losses compare, on a batch of observations.

        :param obs: observations as the policy takes them (preprocessing already applied), shape (batch, ...)
        :return: categorical: the scores (Q-values or logits) (batch, n_actions) and None; Gaussian: the mean and
            the log standard deviation (batch, action_dim); deterministic: the action in [-1, 1] and None
        """

    def log_probs(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        """
        log pi(.|s) of a categorical policy, pi = softmax(scores / temperature).

        :param obs: observations, shape (batch, ...)
        :param temperature: the softmax temperature tau
        :return: log-probabilities, shape (batch, n_actions)
        """
        if not self.is_discrete:
            raise ValueError(f"{type(self).__name__} is not a categorical policy")
        scores, _ = self.outputs(obs)
        return F.log_softmax(scores / temperature, dim=-1)

    def distribution(self, obs: PyTorchObs, temperature: float = 1.0) -> Distribution:
        """
        The policy's action distribution: ``Categorical`` of softmax(scores / temperature), or an
        ``Independent(Normal)`` over the action dimensions (before the tanh for SAC).

        :param obs: observations, shape (batch, ...)
        :param temperature: the softmax temperature tau of a categorical policy
        :return: the distribution, batch shape (batch,)
        """
        if self.is_discrete:
            return Categorical(logits=self.log_probs(obs, temperature))
        mean, log_std = self.outputs(obs)
        if log_std is None:
            raise ValueError(f"{type(self).__name__} is deterministic: it has no action density")
        return Independent(Normal(mean, log_std.exp()), 1)

    def value(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        """
        The state value V_pi(s) (see each subclass for what it is).

        :param obs: observations, shape (batch, ...)
        :param temperature: the temperature of a Q-value policy's softmax
        :return: values, shape (batch,)
        """
        raise ValueError(f"{type(self).__name__} has no state value")

    def critic_values(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """
        The value estimates that value distillation matches head to head: V(s) of an actor-critic policy,
        shape (batch, 1), or every Q head of a SAC/TD3 critic on (s, a), shape (n_critics, batch, 1).

        :param obs: observations, shape (batch, ...)
        :param actions: actions scaled to [-1, 1] for Box spaces, shape (batch, action_dim)
        :return: the values
        """
        raise ValueError(f"{type(self).__name__} has no separate value function to distill")

    @abstractmethod
    def acting_modules(self) -> list[nn.Module]:
        """The modules acting needs (not target networks, critics or value heads)."""

    def acting_parameter_count(self) -> int:
        """Number of parameters the policy needs to act: what a deployed student costs."""
        return sum(count_parameters(module) for module in self.acting_modules())

    def trainable_parameters(self, distill_value: bool = False) -> list[nn.Parameter]:
        """
        The parameters that distillation trains when this policy is a student.

        :param distill_value: whether its value function (V or Q heads) is trained too
        :return: the parameters
        """
        return list(self.policy.parameters())


@register_teacher
class DQNTeacher(Teacher):
    """
    A DQN policy: pi = softmax(Q / tau). Its state value is the softmax policy's,
    V(s) = sum_a pi(a|s) Q(s, a), which tends to max_a Q(s, a) as tau -> 0 (Rusu et al. use tau = 0.01).
    """

    policy_class: ClassVar[type[BasePolicy]] = DQNPolicy
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = (DQN,)
    student_algorithm: ClassVar[type[BaseAlgorithm]] = DQN
    default_temperature = 0.01
    has_value = True

    def q_values(self, obs: PyTorchObs) -> th.Tensor:
        """Q-values, shape (batch, n_actions)."""
        return self.policy.q_net(obs)  # type: ignore[operator]

    def outputs(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
        return self.q_values(obs), None

    def value(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        q_values = self.q_values(obs)
        return (F.softmax(q_values / temperature, dim=-1) * q_values).sum(dim=-1)

    def acting_modules(self) -> list[nn.Module]:
        return [self.policy.q_net]  # type: ignore[list-item]

    def trainable_parameters(self, distill_value: bool = False) -> list[nn.Parameter]:
        return list(self.policy.q_net.parameters())  # type: ignore[union-attr]


@register_teacher
class QRDQNTeacher(DQNTeacher):
    """A QR-DQN policy: its Q-values are the means over quantiles; the student is a DQN."""

    policy_class: ClassVar[type[BasePolicy]] = QRDQNPolicy
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = (QRDQN,)
    student_algorithm: ClassVar[type[BaseAlgorithm]] = DQN

    def q_values(self, obs: PyTorchObs) -> th.Tensor:
        # (batch, n_quantiles, n_actions) -> (batch, n_actions)
        return self.policy.quantile_net(obs).mean(dim=1)  # type: ignore[operator]

    def acting_modules(self) -> list[nn.Module]:
        return [self.policy.quantile_net]  # type: ignore[list-item]


@register_teacher
class ActorCriticTeacher(Teacher):
    """
    A PPO or A2C policy with a categorical (Discrete actions: logits) or diagonal Gaussian (Box actions,
    no gSDE) distribution. Its state value is its critic's V(s). Recurrent policies are not supported.
    """

    policy_class: ClassVar[type[BasePolicy]] = ActorCriticPolicy
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = (PPO, A2C)
    student_algorithm: ClassVar[type[BaseAlgorithm]] = PPO
    has_value = True

    def __init__(self, policy: BasePolicy) -> None:
        super().__init__(policy)
        assert isinstance(policy, ActorCriticPolicy)
        self.action_kind = "categorical" if isinstance(policy.action_dist, CategoricalDistribution) else "gaussian"
        self.losses = _DISCRETE_LOSSES if self.action_kind == "categorical" else _GAUSSIAN_LOSSES  # type: ignore[misc]

    @classmethod
    def matches(cls, policy: BasePolicy) -> bool:
        return (
            isinstance(policy, ActorCriticPolicy)
            and not isinstance(policy, RecurrentActorCriticPolicy)
            and isinstance(policy.action_dist, (CategoricalDistribution, DiagGaussianDistribution))
        )

    def outputs(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
        distribution = self.policy.get_distribution(obs).distribution  # type: ignore[operator]
        if self.action_kind == "categorical":
            return distribution.logits, None
        return distribution.mean, distribution.stddev.log()

    def value(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        return self.policy.predict_values(obs).squeeze(-1)  # type: ignore[operator, union-attr]

    def critic_values(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        return self.policy.predict_values(obs)  # type: ignore[operator]

    def acting_modules(self) -> list[nn.Module]:
        policy: Any = self.policy
        return [policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net]

    def acting_parameter_count(self) -> int:
        log_std = self.policy.log_std.numel() if self.action_kind == "gaussian" else 0  # type: ignore[union-attr]
        return super().acting_parameter_count() + log_std


@register_teacher
class SACTeacher(Teacher):
    """
    A SAC policy (no gSDE): the diagonal Gaussian before the tanh (the KL between two such policies is
    the KL of their Gaussians, tanh being a bijection). Its state value, for value-based update rules, is
    min_i Q_i(s, a*) at the mean action a* = tanh(mean) (the entropy bonus is left out): a documented
    choice, the exact soft value needs an expectation over actions.
    """

    policy_class: ClassVar[type[BasePolicy]] = SACPolicy
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = (SAC,)
    student_algorithm: ClassVar[type[BaseAlgorithm]] = SAC
    action_kind = "squashed_gaussian"
    losses: ClassVar[tuple[str, ...]] = _GAUSSIAN_LOSSES
    has_value = True

    @classmethod
    def matches(cls, policy: BasePolicy) -> bool:
        return isinstance(policy, cls.policy_class) and not policy.actor.use_sde  # type: ignore[union-attr]

    def outputs(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
        mean, log_std, _ = self.policy.actor.get_action_dist_params(obs)  # type: ignore[union-attr]
        return mean, log_std

    def value(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        mean, _ = self.outputs(obs)
        q_values = th.cat(self.policy.critic(obs, th.tanh(mean)), dim=1)  # type: ignore[operator]
        return q_values.min(dim=1).values

    def critic_values(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        return th.stack(self.policy.critic(obs, actions))  # type: ignore[operator]

    def acting_modules(self) -> list[nn.Module]:
        return [self.policy.actor]  # type: ignore[list-item]

    def trainable_parameters(self, distill_value: bool = False) -> list[nn.Parameter]:
        modules = [self.policy.actor] + ([self.policy.critic] if distill_value else [])  # type: ignore[list-item]
        return [param for module in modules for param in module.parameters()]


@register_teacher
class TD3Teacher(SACTeacher):
    """
    A TD3 or DDPG policy: deterministic actions in [-1, 1], distilled with MSE. Its state value is
    min_i Q_i(s, mu(s)).
    """

    policy_class: ClassVar[type[BasePolicy]] = TD3Policy
    algorithms: ClassVar[tuple[type[BaseAlgorithm], ...]] = (TD3, DDPG)
    student_algorithm: ClassVar[type[BaseAlgorithm]] = TD3
    action_kind = "deterministic"
    losses: ClassVar[tuple[str, ...]] = ("mse",)

    @classmethod
    def matches(cls, policy: BasePolicy) -> bool:
        return isinstance(policy, cls.policy_class)

    def outputs(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor | None]:
        return self.policy.actor(obs), None  # type: ignore[operator]

    def value(self, obs: PyTorchObs, temperature: float = 1.0) -> th.Tensor:
        q_values = th.cat(self.policy.critic(obs, self.policy.actor(obs)), dim=1)  # type: ignore[operator]
        return q_values.min(dim=1).values


@dataclass
class TeacherPreprocessing:
    """
    The observation preprocessing a teacher was trained with, beyond what its policy does itself.

    :param obs_mean: the frozen ``VecNormalize`` running mean of the observations (None: not normalised)
    :param obs_var: its running variance
    :param clip_obs: ``VecNormalize``'s clipping of normalised observations
    :param epsilon: ``VecNormalize``'s epsilon
    :param env_wrapper: rl-zoo3's ``env_wrapper`` hyperparameter (gymnasium wrappers the env must carry)
    :param frame_stack: rl-zoo3's ``frame_stack`` hyperparameter (None: no frame stacking)
    """

    obs_mean: np.ndarray | None = None
    obs_var: np.ndarray | None = None
    clip_obs: float = 10.0
    epsilon: float = 1e-8
    env_wrapper: Any = None
    frame_stack: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def normalizes(self) -> bool:
        """Whether observations are normalised with frozen statistics."""
        return self.obs_mean is not None

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """``VecNormalize.normalize_obs`` with the frozen statistics (the identity if there are none)."""
        if self.obs_mean is None or self.obs_var is None:
            return obs
        normalized = (obs - self.obs_mean) / np.sqrt(self.obs_var + self.epsilon)
        return np.clip(normalized, -self.clip_obs, self.clip_obs).astype(np.float32)

    def same_statistics(self, vec_normalize: VecNormalize) -> bool:
        """Whether a ``VecNormalize`` normalises observations exactly as these frozen statistics do."""
        obs_rms: Any = vec_normalize.obs_rms
        return (
            self.obs_mean is not None
            and self.obs_var is not None
            and bool(vec_normalize.norm_obs)
            and not isinstance(obs_rms, dict)
            and np.array_equal(obs_rms.mean, self.obs_mean)
            and np.array_equal(obs_rms.var, self.obs_var)
            and vec_normalize.clip_obs == self.clip_obs
            and vec_normalize.epsilon == self.epsilon
        )

    def vec_normalize(self, venv: VecEnv) -> VecNormalize:
        """
        ``venv`` wrapped in a frozen ``VecNormalize`` with these statistics (``training=False``, rewards left
        as they are): the env an exported student plays in.

        :param venv: the raw vectorised env
        :return: the wrapped env
        """
        if self.obs_mean is None or self.obs_var is None:
            raise ValueError("This teacher's observations are not normalised: there is no VecNormalize to build")
        vec_normalize = VecNormalize(venv, training=False, norm_reward=False, clip_obs=self.clip_obs, epsilon=self.epsilon)
        obs_rms: Any = vec_normalize.obs_rms
        obs_rms.mean, obs_rms.var = self.obs_mean.copy(), self.obs_var.copy()
        return vec_normalize

    def save(self, folder: str | os.PathLike[str], observation_space: Any, action_space: Any) -> None:
        """
        Write the preprocessing as rl-zoo3 does (``vecnormalize.pkl`` and ``config.yml`` in ``folder``),
        so that ``load_teacher``, rl-zoo3's ``enjoy`` and ``VecNormalize.load`` find it.

        :param folder: the folder, ``<dir>/<name>/`` beside a model saved as ``<dir>/<name>.zip``
        :param observation_space: the model's observation space
        :param action_space: the model's action space
        """
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        # Each file written atomically (a crash leaves the previous one intact)
        if self.normalizes:
            vec_normalize = self.vec_normalize(DummyVecEnv([lambda: _SpacesEnv(observation_space, action_space)]))
            with atomic_save_path(folder / "vecnormalize.pkl", None) as temporary:
                vec_normalize.save(str(temporary))
        import yaml

        config = {"normalize": self.normalizes, "env_wrapper": self.env_wrapper, "frame_stack": self.frame_stack}
        with atomic_save_path(folder / "config.yml", None) as temporary, open(temporary, "w") as file:  # type: ignore[arg-type]
            yaml.dump({key: value for key, value in config.items() if value}, file)


class _SpacesEnv(gym.Env):
    """An env that only has spaces, to build a ``VecNormalize`` to save."""

    def __init__(self, observation_space: Any, action_space: Any) -> None:
        self.observation_space = observation_space
        self.action_space = action_space


class PreprocessedPolicy:
    """
    A policy that applies the teacher's frozen normalisation before SB3's ``predict()``, so that SB3's
    ``evaluate_policy`` can score it on the raw env.

    :param policy: an SB3 policy
    :param preprocessing: the preprocessing (None: the identity)
    """

    def __init__(self, policy: BasePolicy, preprocessing: TeacherPreprocessing | None) -> None:
        self.policy = policy
        self.preprocessing = preprocessing

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        if self.preprocessing is not None and not isinstance(observation, dict):
            observation = self.preprocessing.normalize(observation)
        return self.policy.predict(observation, state, episode_start, deterministic)


class ObservationNormalizer(nn.Module):
    """
    :meth:`TeacherPreprocessing.normalize` on tensors: the frozen ``VecNormalize`` normalisation of a batch
    of observations, the identity without statistics. Its buffers are not saved: they come from the
    preprocessing, which the owning policy keeps among its constructor arguments.

    :param preprocessing: the teacher's preprocessing (None: the identity)
    """

    def __init__(self, preprocessing: TeacherPreprocessing | None) -> None:
        super().__init__()
        self.active = preprocessing is not None and preprocessing.normalizes
        if preprocessing is not None and preprocessing.obs_mean is not None and preprocessing.obs_var is not None:
            self.register_buffer("mean", th.as_tensor(preprocessing.obs_mean, dtype=th.float64), persistent=False)
            std = th.as_tensor(np.sqrt(preprocessing.obs_var + preprocessing.epsilon), dtype=th.float64)
            self.register_buffer("std", std, persistent=False)
            self.clip_obs = preprocessing.clip_obs

    def forward(self, obs: PyTorchObs) -> PyTorchObs:
        if not self.active or isinstance(obs, dict):
            return obs
        # In float64 as VecNormalize computes it, then back to the observations' dtype
        mean: th.Tensor = self.mean  # type: ignore[assignment]
        std: th.Tensor = self.std  # type: ignore[assignment]
        return ((obs.double() - mean) / std).clamp(-self.clip_obs, self.clip_obs).to(obs.dtype)


class LoadedTeacher(NamedTuple):
    """A teacher model, the preprocessing it was trained with, and the file it was read from (None: a model)."""

    model: BaseAlgorithm
    preprocessing: TeacherPreprocessing
    path: pathlib.Path | None = None


def _algorithm_from_data(data: dict[str, Any], policy_class: Any, path: str) -> type[BaseAlgorithm]:
    """The algorithm that saved a file: the registered one whose policy class and constructor match."""
    candidates = [
        algorithm
        for teacher_class in _REGISTRY
        if isinstance(policy_class, type) and issubclass(policy_class, teacher_class.policy_class)
        for algorithm in teacher_class.algorithms
    ]
    # Every constructor argument of an SB3 algorithm is saved as an attribute of the same name, but a few
    ignored = {"self", "policy", "env", "_init_setup_model", "device", "seed", "verbose", "tensorboard_log"}
    ignored |= {"policy_kwargs", "replay_buffer_class", "replay_buffer_kwargs", "rollout_buffer_class"}
    ignored |= {"rollout_buffer_kwargs", "monitor_wrapper", "stats_window_size", "action_noise", "train_freq"}
    # A2C keeps its RMSprop choice in `policy_kwargs` only
    ignored |= {"use_rms_prop", "rms_prop_eps"}
    matching = []
    stored = {key for key in data if not key.startswith("_")}
    for algorithm in candidates:
        names = set(inspect.signature(algorithm.__init__).parameters)
        # All its arguments stored, and nothing an unknown subclass (e.g. TRPO for A2C) would add
        if names - ignored <= stored and not stored - names - _GENERIC_SAVED_ATTRIBUTES:
            matching.append((len(names), algorithm))
    name = getattr(policy_class, "__name__", str(policy_class))
    if not matching:
        raise ValueError(
            f"`teacher` {path!r} holds a {name} policy saved by an algorithm that is not supported. "
            f"Supported teachers: {supported_teachers()}"
        )
    # DDPG is TD3 without target smoothing and with one critic update per actor update
    if any(algorithm is DDPG for _, algorithm in matching):
        return DDPG if data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0 else TD3
    # The most specific match: the algorithm whose constructor arguments are all stored, with the most of them
    return max(matching, key=lambda item: item[0])[1]


def _find_zoo_stats_folder(zip_path: pathlib.Path) -> pathlib.Path | None:
    """
    rl-zoo3's statistics folder of a model file: ``<log_path>/<env>/`` beside ``<log_path>/<env>.zip``
    (also for ``best_model.zip`` and checkpoints, whose folder is the only one holding an ``args.yml``).
    """
    beside = zip_path.parent / zip_path.name.removesuffix(".zip")
    if beside.is_dir():
        return beside
    folders = [path.parent for path in zip_path.parent.glob("*/args.yml")] + [
        path.parent for path in zip_path.parent.glob("*/config.yml")
    ]
    unique = sorted(set(folders))
    return unique[0] if len(unique) == 1 else None


def _find_zoo_model(folder: pathlib.Path) -> pathlib.Path:
    """The final model of an rl-zoo3 experiment folder ``logs/<algo>/<env>_<id>/`` (else its best model)."""
    stats = [path.parent for path in folder.glob("*/args.yml")] + [path.parent for path in folder.glob("*/config.yml")]
    for stats_folder in sorted(set(stats)):
        final = folder / f"{stats_folder.name}.zip"
        if final.is_file():
            return final
    zips = sorted(folder.glob("*.zip"))
    if (folder / "best_model.zip").is_file():
        return folder / "best_model.zip"
    checkpoints = CheckpointFolder(folder)
    if checkpoints.checkpoints():
        # A teacher still training (rl-zoo3's `--save-freq`, SB3's CheckpointCallback): its newest checkpoint
        return checkpoints.wait_for_checkpoint()
    if len(zips) == 1:
        return zips[0]
    raise ValueError(
        f"`teacher` folder {str(folder)!r} is not an rl-zoo3 experiment folder with one model: expected "
        f"<env>.zip beside <env>/args.yml, best_model.zip, checkpoints <name_prefix>_<steps>_steps.zip or a "
        f"single .zip; found {[path.name for path in zips]}"
    )


#: A checkpoint as SB3's ``CheckpointCallback`` and rl-zoo3's ``--save-freq`` name it: ``<name_prefix>_<steps>_steps.zip``
CHECKPOINT_PATTERN = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$")


def checkpoint_steps(path: str | os.PathLike[str] | None) -> int | None:
    """The training steps in a checkpoint's name (``rl_model_5000_steps.zip`` -> 5000), None for another name."""
    match = CHECKPOINT_PATTERN.match(pathlib.Path(path).name) if path is not None else None
    return int(match["steps"]) if match else None


@dataclass(frozen=True)
class CheckpointFolder:
    """
    A folder that a teacher writes checkpoints into while it trains, possibly in another process or on another
    machine over a shared disk: SB3's ``CheckpointCallback(save_freq, save_path=folder)`` writes
    ``<name_prefix>_<steps>_steps.zip``, rl-zoo3's ``--save-freq`` writes ``rl_model_<steps>_steps.zip`` into
    its experiment folder. As a ``teacher`` it stands for its newest *complete* checkpoint: a file that cannot
    be read (half-written while the teacher saves it, truncated, corrupt) is skipped with a warning and the
    next older one is taken.

    A folder with no complete checkpoint yet fails at once with a ``ValueError`` (``timeout=0``, the default:
    a wrong path is seen at once), or is watched for up to ``timeout`` seconds (start the student alongside a
    teacher that has not saved yet).

    :param path: the folder
    :param timeout: seconds to wait for a first complete checkpoint when there is none (0: do not wait)
    :param poll_interval: seconds between two looks at the folder while waiting
    """

    path: pathlib.Path
    timeout: float = 0.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", pathlib.Path(self.path))
        for name, minimum in (("timeout", 0.0), ("poll_interval", 1e-9)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ValueError(f"`{name}` of CheckpointFolder must be a finite number of seconds, got {value!r}")
            if value < minimum:
                raise ValueError(f"`{name}` of CheckpointFolder must be {'>= 0' if minimum == 0 else '> 0'}, got {value!r}")

    def checkpoints(self) -> list[tuple[int, pathlib.Path]]:
        """The checkpoint files ``<name_prefix>_<steps>_steps.zip`` and their steps, newest (most steps) first."""
        if not self.path.is_dir():
            return []
        found = [(checkpoint_steps(path), path) for path in self.path.glob("*_steps.zip")]
        return sorted(((steps, path) for steps, path in found if steps is not None), reverse=True)

    def normalizes(self) -> bool:
        """Whether the teacher saves ``VecNormalize`` statistics with its checkpoints (``*_vecnormalize_*_steps.pkl``)."""
        return self.path.is_dir() and any(self.path.glob("*_vecnormalize_*_steps.pkl"))

    def newest_checkpoint(
        self, newer_than: int = -1, device: th.device | str = "cpu"
    ) -> tuple[int, pathlib.Path, dict[str, th.Tensor]] | None:
        """
        The newest checkpoint that reads, with its policy's parameters; unreadable files are skipped with a warning.

        :param newer_than: only checkpoints with more steps than this (the one in use)
        :param device: where to load the parameters
        :return: its steps, its path and its ``policy.state_dict()``; None if there is none
        """
        for steps, path in self.checkpoints():
            if steps <= newer_than:
                return None
            try:
                _, params, _ = load_from_zip_file(path, device=device, load_data=False)
                policy_state: dict[str, th.Tensor] = params["policy"]  # type: ignore[index, assignment]
            except Exception as error:  # half-written (BadZipFile), truncated (EOFError), deleted, foreign
                warnings.warn(f"Skipping the teacher checkpoint {str(path)!r}: it cannot be read yet ({error!r})")
                continue
            return steps, path, policy_state
        return None

    def wait_for_checkpoint(self, device: th.device | str = "cpu") -> pathlib.Path:
        """
        The path of the newest complete checkpoint, waiting up to ``timeout`` seconds for a first one.

        :param device: where to read the file
        :return: the path
        """
        deadline = time.monotonic() + float(self.timeout)
        while True:
            newest = self.newest_checkpoint(device=device)
            if newest is not None:
                return newest[1]
            left = deadline - time.monotonic()
            if left <= 0:
                state = "holds no complete checkpoint" if self.path.is_dir() else "does not exist"
                waited = f" after waiting {float(self.timeout):g} s" if self.timeout > 0 else ""
                raise ValueError(
                    f"`teacher` folder {str(self.path)!r} {state}{waited} (expected <name_prefix>_<steps>_steps.zip, as "
                    "SB3's CheckpointCallback and rl-zoo3's --save-freq write): start the teacher's training first, or "
                    "pass `teacher=CheckpointFolder(path, timeout=<seconds>)` to wait for its first checkpoint"
                )
            time.sleep(min(float(self.poll_interval), left))

    def vec_normalize_path(self, checkpoint: pathlib.Path) -> pathlib.Path | None:
        """The ``VecNormalize`` statistics saved with a checkpoint (``<prefix>_vecnormalize_<steps>_steps.pkl``), if any."""
        match = CHECKPOINT_PATTERN.match(checkpoint.name)
        if match is None:
            return None
        path = checkpoint.parent / f"{match['prefix']}_vecnormalize_{match['steps']}_steps.pkl"
        return path if path.is_file() else None


def as_checkpoint_folder(source: Any) -> CheckpointFolder:
    """
    ``source`` as a :class:`CheckpointFolder`: itself, or a folder path.

    :param source: a ``CheckpointFolder`` or the path of a folder
    :return: the folder
    """
    if isinstance(source, CheckpointFolder):
        return source
    if isinstance(source, (str, os.PathLike)) and pathlib.Path(source).is_dir():
        return CheckpointFolder(pathlib.Path(source))
    raise ValueError(
        "`teacher_refresh_interval` reloads the teacher from the folder its training writes checkpoints into: "
        f"`teacher` must be that folder (a path or a CheckpointFolder), got {source!r}"
    )


def _read_yaml(path: pathlib.Path) -> dict[str, Any]:
    import yaml  # rl-zoo3's dependency, needed only for its experiment folders

    with open(path) as file:
        # rl-zoo3 writes its hyperparameters with Python tags (OrderedDict), read as rl-zoo3 reads them
        content = yaml.load(file, Loader=yaml.UnsafeLoader)
    return dict(content) if content else {}


def read_zoo_preprocessing(stats_folder: pathlib.Path | None) -> TeacherPreprocessing:
    """
    The preprocessing an rl-zoo3 experiment recorded: frozen ``VecNormalize`` statistics
    (``vecnormalize.pkl``), ``env_wrapper`` and ``frame_stack`` (``config.yml``).

    :param stats_folder: the folder holding ``config.yml`` / ``vecnormalize.pkl`` (None: nothing recorded)
    :return: the preprocessing
    """
    preprocessing = TeacherPreprocessing()
    if stats_folder is None:
        return preprocessing
    config_path = stats_folder / "config.yml"
    if config_path.is_file():
        config = _read_yaml(config_path)
        preprocessing.env_wrapper = config.get("env_wrapper")
        preprocessing.frame_stack = config.get("frame_stack") or None
    vec_normalize_path = stats_folder / "vecnormalize.pkl"
    if vec_normalize_path.is_file():
        with open(vec_normalize_path, "rb") as file:
            vec_normalize = pickle.load(file)
        _copy_vec_normalize(vec_normalize, preprocessing, str(vec_normalize_path))
    return preprocessing


def _copy_vec_normalize(vec_normalize: Any, preprocessing: TeacherPreprocessing, origin: str) -> None:
    """Copy the frozen observation statistics of a ``VecNormalize`` into ``preprocessing``."""
    if not getattr(vec_normalize, "norm_obs", False):
        return
    if isinstance(vec_normalize.obs_rms, dict):
        raise ValueError(
            f"The teacher's VecNormalize ({origin}) normalises Dict observations, which sb3_distill cannot apply yet: "
            "distill a teacher trained without VecNormalize, or on Box observations"
        )
    obs_rms: Any = vec_normalize.obs_rms
    preprocessing.obs_mean = np.asarray(obs_rms.mean, dtype=np.float64).copy()
    preprocessing.obs_var = np.asarray(obs_rms.var, dtype=np.float64).copy()
    preprocessing.clip_obs = float(vec_normalize.clip_obs)
    preprocessing.epsilon = float(vec_normalize.epsilon)


def _zoo_algorithm(stats_folder: pathlib.Path | None) -> type[BaseAlgorithm] | None:
    """The algorithm named by rl-zoo3's ``args.yml`` (None without one)."""
    if stats_folder is None or not (stats_folder / "args.yml").is_file():
        return None
    name = str(_read_yaml(stats_folder / "args.yml").get("algo", "")).lower()
    by_name = {algorithm.__name__.lower(): algorithm for cls in _REGISTRY for algorithm in cls.algorithms}
    if name not in by_name:
        raise ValueError(
            f"`teacher` in {str(stats_folder.parent)!r} was trained by rl-zoo3's {name!r}, which is not a supported "
            f"teacher. Supported teachers: {supported_teachers()}"
        )
    return by_name[name]


def load_teacher(
    source: "BaseAlgorithm | LoadedTeacher | CheckpointFolder | str | os.PathLike[str]", device: th.device | str = "auto"
) -> LoadedTeacher:
    """
    Load a teacher and the observation preprocessing it was trained with.

    :param source: an SB3 model (its ``VecNormalize`` env, if any, gives the statistics); a
        :class:`CheckpointFolder` (its newest complete checkpoint, with the ``VecNormalize`` statistics saved
        beside it); the path of a ``.zip`` written by ``model.save`` (its algorithm is read from the file: from
        rl-zoo3's ``args.yml`` when the file sits in an rl-zoo3 experiment folder, else from the policy class and
        the constructor arguments stored in it); or an rl-zoo3 experiment folder ``logs/<algo>/<env>_<id>/`` (its
        final model, else ``best_model.zip``, else its newest checkpoint). rl-zoo3's ``vecnormalize.pkl`` and
        ``config.yml`` beside the model give the preprocessing.
    :param device: the device to load the model on
    :return: the model and its preprocessing
    """
    if isinstance(source, LoadedTeacher):
        return source
    if isinstance(source, BaseAlgorithm):
        if type(source).__module__.startswith("sb3_distill"):
            raise ValueError(
                f"`teacher` is a {type(source).__name__}: distill one of its members instead, "
                "e.g. `teacher=model.export_student()`"
            )
        Teacher.for_policy(source.policy)  # a clear error for a policy no adapter supports
        preprocessing = TeacherPreprocessing()
        vec_normalize = source.get_vec_normalize_env()
        if vec_normalize is not None:
            _copy_vec_normalize(vec_normalize, preprocessing, "the teacher's env")
        return LoadedTeacher(source, preprocessing)
    if isinstance(source, CheckpointFolder):
        path = source.wait_for_checkpoint(device)
        loaded = _load_teacher_file(path, device)
        vec_normalize_path = source.vec_normalize_path(path)
        if vec_normalize_path is not None:
            with open(vec_normalize_path, "rb") as file:
                _copy_vec_normalize(pickle.load(file), loaded.preprocessing, str(vec_normalize_path))
        return loaded
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "`teacher` must be an SB3 model, the path of its .zip, an rl-zoo3 experiment folder or a "
            f"CheckpointFolder, got {type(source).__name__}"
        )
    path = pathlib.Path(source)
    if path.is_dir():
        path = _find_zoo_model(path)
    elif not path.is_file() and pathlib.Path(f"{path}.zip").is_file():
        path = pathlib.Path(f"{path}.zip")
    if not path.is_file():
        raise ValueError(f"`teacher` path {str(source)!r} does not exist")
    return _load_teacher_file(path, device)


def _load_teacher_file(path: pathlib.Path, device: th.device | str) -> LoadedTeacher:
    """A teacher from a model file, with the preprocessing of the rl-zoo3 folder it sits in (if any)."""
    stats_folder = _find_zoo_stats_folder(path)
    try:
        data, _, _ = load_from_zip_file(path, device=device, load_data=True)
    except Exception as error:  # a truncated or foreign file: say which, and why
        raise ValueError(f"`teacher` file {str(path)!r} is not a readable SB3 model: {error!r}") from error
    if data is None or "policy_class" not in data:
        raise ValueError(f"`teacher` file {str(path)!r} is not an SB3 model (no policy class stored)")
    algorithm = _zoo_algorithm(stats_folder) or _algorithm_from_data(data, data["policy_class"], str(path))
    return LoadedTeacher(algorithm.load(path, device=device), read_zoo_preprocessing(stats_folder), path)


def student_algorithm_for(teacher: Teacher, teacher_algorithm: type[BaseAlgorithm] | None) -> type[BaseAlgorithm]:
    """
    The SB3 algorithm of a student distilled from ``teacher``: the teacher's own algorithm when a student
    of that algorithm has the same kind of policy (an A2C teacher gives an A2C student, DDPG a DDPG), else
    the adapter's ``student_algorithm`` (a QR-DQN teacher gives a DQN student).

    :param teacher: the teacher's adapter
    :param teacher_algorithm: the teacher model's algorithm (None: unknown)
    :return: the student's algorithm
    """
    if teacher.student_algorithm in teacher.algorithms and teacher_algorithm in teacher.algorithms:
        assert teacher_algorithm is not None
        return teacher_algorithm
    return teacher.student_algorithm


def teacher_algorithm_of(model: BaseAlgorithm) -> type[BaseAlgorithm] | None:
    """The registered SB3 algorithm a model is an instance of (the most derived one), or None."""
    known = {algorithm for cls in _REGISTRY for algorithm in cls.algorithms}
    return next((cls for cls in type(model).__mro__ if cls in known), None)  # type: ignore[misc]


def policy_alias(model: BaseAlgorithm) -> str:
    """The alias (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``) of a model's policy class."""
    for alias, policy_class in model.policy_aliases.items():
        if type(model.policy) is policy_class:
            return alias
    raise ValueError(
        f"The teacher's policy class {type(model.policy).__name__} is none of {type(model).__name__}'s aliases "
        f"{list(model.policy_aliases)}: pass `policy` explicitly"
    )


def _wrapper_classes(env_wrapper: Any) -> list[type]:
    """The gymnasium wrapper classes named by rl-zoo3's ``env_wrapper`` hyperparameter."""
    import importlib

    entries = env_wrapper if isinstance(env_wrapper, list) else [env_wrapper]
    classes = []
    for entry in entries:
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        if isinstance(name, type):
            classes.append(name)
            continue
        module_name, class_name = str(name).rsplit(".", 1)
        classes.append(getattr(importlib.import_module(module_name), class_name))
    return classes


def make_teacher_env(env_id: str, preprocessing: TeacherPreprocessing, n_envs: int = 1) -> VecEnv:
    """
    The env ``env_id`` with the gymnasium wrappers and frame stacking the teacher was trained with, as
    rl-zoo3 builds it (the ``VecNormalize`` statistics are applied by the distilling policy, not here).

    :param env_id: a registered gymnasium env id
    :param preprocessing: the teacher's preprocessing
    :param n_envs: number of envs
    :return: the vectorised env
    """
    wrapper_class = None
    if preprocessing.env_wrapper is not None:
        from rl_zoo3.utils import get_wrapper_class  # an rl-zoo3 teacher: rl-zoo3 is installed

        wrapper_class = get_wrapper_class({"env_wrapper": preprocessing.env_wrapper})
    env = make_vec_env(env_id, n_envs=n_envs, wrapper_class=wrapper_class)
    if preprocessing.frame_stack is not None:
        env = VecFrameStack(env, preprocessing.frame_stack)
    return env


def check_env_preprocessing(env: VecEnv, preprocessing: TeacherPreprocessing) -> None:
    """
    A ``ValueError`` if ``env`` does not carry the wrappers and frame stacking the teacher was trained with,
    or already normalises observations (the distilling policy applies the teacher's frozen statistics).

    :param env: the distilling model's env
    :param preprocessing: the teacher's preprocessing
    """
    fix = "pass the env id as a string (the wrappers are then added) or build the env as rl-zoo3 does"
    if preprocessing.env_wrapper is not None:
        for wrapper_class in _wrapper_classes(preprocessing.env_wrapper):
            if not all(env.env_is_wrapped(wrapper_class)):
                raise ValueError(
                    f"The teacher was trained with the env wrapper {wrapper_class.__name__} (rl-zoo3 `env_wrapper`), "
                    f"which the env lacks: {fix}"
                )
    if preprocessing.frame_stack is not None:
        frame_stack = unwrap_vec_wrapper(env, VecFrameStack)
        if frame_stack is None or frame_stack.stacked_obs.n_stack != preprocessing.frame_stack:
            raise ValueError(
                f"The teacher was trained on {preprocessing.frame_stack} stacked frames (rl-zoo3 `frame_stack`): "
                f"wrap the env with VecFrameStack(env, {preprocessing.frame_stack}), or {fix}"
            )
    if preprocessing.normalizes and unwrap_vec_wrapper(env, VecNormalize) is not None:
        raise ValueError(
            "The teacher's frozen VecNormalize statistics are applied by the distilling model: pass the env "
            "without VecNormalize (it would normalise twice)"
        )
