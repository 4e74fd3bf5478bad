import dataclasses
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_wrapper
from torch.nn import functional as F

from sb3_distill.common.base import PolicyLayoutMixin, TeacherWeightsMixin
from sb3_distill.common.losses import (
    DISTILL_UPDATE_RULES,
    VALUE_RULES,
    distill_loss_per_state,
    entropy_regularised_reward,
    expected_entropy_regularised_reward,
    n_distill_reward,
    policy_cross_entropy,
    teacher_value_bootstrap_targets,
    teacher_value_reward,
    value_gate,
)
from sb3_distill.common.save import AtomicModelSaveMixin
from sb3_distill.common.teachers import (
    LoadedTeacher,
    Teacher,
    TeacherPreprocessing,
    check_env_preprocessing,
    load_teacher,
    make_teacher_env,
)
from sb3_distill.common.utils import model_for_export
from sb3_distill.common.validation import (
    PPO_NUMBERS,
    CheckedSchedule,
    Flag,
    Number,
    UnsupportedSpaceError,
    check_arguments,
    check_finite_losses,
)
from sb3_distill.distill_ppo.policies import CnnPolicy, DistillActorCriticPolicy, MlpPolicy

SelfDistillPPO = TypeVar("SelfDistillPPO", bound="DistillPPO")

#: Who acts while the rollouts are collected (q_theta of Eq. (1))
CONTROL_POLICIES = ("student", "teacher", "mixture", "uniform")
#: The rules with a loss l (Table 1): the ones value gating applies to
LOSS_RULES = ("teacher_distill", "on_policy_distill", "n_distill", "expected_entropy_regularised")
#: The rules whose reward r^ is 0: without the environment reward they have no policy-gradient term
ZERO_REWARD_RULES = ("teacher_distill", "on_policy_distill")
#: Teacher forward passes over a rollout are done in chunks of this many states
_CHUNK = 1024


@dataclass
class _RolloutRecord:
    """What the reward r^ needs beyond the rollout buffer, per step and env (shapes (n_steps, n_envs, ...))."""

    env_rewards: np.ndarray
    bootstraps: np.ndarray
    dones: np.ndarray
    terminated: np.ndarray
    next_observations: np.ndarray


class DistillPPO(TeacherWeightsMixin, AtomicModelSaveMixin, PolicyLayoutMixin, PPO):
    """
    PPO with the student-driven distillation updates of Czarnecki et al. 2019, "Distilling Policy
    Distillation" (arXiv:1902.02186): every row of its Table 1 and Sec. 4, and *kickstarting* (Schmitt et al.
    2018, "Kickstarting Deep Reinforcement Learning", arXiv:1803.03835): a PPO agent trained on its rewards
    while a teacher's policy guides it, with a decaying weight.

    **The estimator.** Eq. (1) of the paper updates the student pi_theta in the direction
    ``E_q [ sum_t -grad log pi_theta(a_t|s_t) R^_t + grad l(pi_theta, s_t) ]``, ``R^_t = sum_{i>=t} r^_i``, where
    the control policy q, the loss l and the reward r^ define the rule. DistillPPO estimates it with PPO's
    machinery: the rollouts are collected by q (``control``); each step's reward is replaced by
    ``r_t [env_reward] + distill_coef * r^_t`` (computed at rollout time with the frozen teacher and the student of
    that rollout); the student's critic learns the value of that return and serves as the baseline, GAE and
    the clipped surrogate estimate the first term; ``distill_coef * l(s_t)`` is added to PPO's loss on every
    minibatch. With ``gamma = gae_lambda = 1``, no baseline and one unclipped step it is Eq. (1) exactly
    (for ``+R`` variants, of the environment return minus ``distill_coef`` times the distillation loss); the
    discount, baseline and clipping are PPO's usual variance reduction. Under a control policy other than the
    student, the policy-gradient term is taken under q without importance weights, as Eq. (1) writes it.

    **Update rules** (``update_rule``, with ``H^x(p||q) = -E_{a~p} log q(a)``):

    - ``"teacher_distill"``: q = teacher, ``l = H^x(pi || pi_theta)``, ``r^ = 0`` (Rusu et al. 2015).
    - ``"on_policy_distill"``: q = student, ``l = H^x(pi || pi_theta)``, ``r^ = 0``; not a gradient field
      (Theorem 1). With ``env_reward`` and a decaying ``distill_coef`` this is kickstarting.
    - ``"entropy_regularised"``: ``l = 0``, ``r^_i = log pi(a_i | s_i)`` (Distral; high variance with many actions).
    - ``"n_distill"``: ``l = H^x(pi || pi_theta)``, ``r^_i = -H^x(pi(s_{i+1}) || pi_theta(s_{i+1}))`` (Theorem 2):
      the gradient of ``E_{pi_theta}[sum_t H^x(pi(s_t) || pi_theta(s_t))]``.
    - ``"expected_entropy_regularised"``: ``l = H^x(pi_theta || pi)``, ``r^_i = log pi(a_{i+1} | s_{i+1})``: the
      gradient of ``E_{pi_theta}[sum_t -log pi(a_t | s_t)]`` with the one-step term in closed form (Sec. 3.3, the
      paper's recommendation). Where ``a_{i+1}`` was not drawn (end of a rollout, time-limit truncation), its
      expectation ``-H^x(pi_theta(s_{i+1}) || pi(s_{i+1}))`` is used.
    - ``"teacher_v_reward"``: ``l = 0``, ``r^_t = r_t + gamma V_pi(s_{t+1}) - V_pi(s_t)`` (Sec. 4.2; Table 1 prints
      ``V_{pi_theta}(s_t)`` for the last term, we follow Sec. 4.2 and its footnote 4), a potential-based shaping.
    - ``"teacher_v_bootstrap"``: "TD + V_pi" (Sec. 4.1): the advantage of ``a_t`` is
      ``r_t + gamma V_pi(s_{t+1}) - V_theta(s_t)``, one-step and bootstrapped from the teacher's critic (no GAE).

    Supported teachers (``Teacher.for_policy``): PPO and A2C (Discrete: every rule; Box: diagonal Gaussian,
    closed-form cross-entropy), DQN and QR-DQN (Discrete, ``pi = softmax(q / temperature)``, and the state value
    it implies, ``V_pi(s) = sum_a pi(a|s) q(s, a)``). The teacher's weights are copied into
    ``policy.teacher`` and saved with the model; ``predict()`` uses the student; :meth:`export_student` returns
    a plain PPO.

    :param policy: The policy model to use (``"MlpPolicy"``, ``"CnnPolicy"``, or a :class:`DistillActorCriticPolicy`
        subclass): PPO's actor-critic, which also holds the frozen teacher
    :param env: The environment to learn from (if registered in Gym, can be str); its spaces must be the
        teacher's (use the teacher's wrappers)
    :param teacher: The teacher pi: an SB3 model, the path to its ``.zip`` (what ``model.save`` writes) or an
        rl-zoo3 experiment folder (:func:`~sb3_distill.common.teachers.load_teacher`). Required at construction;
        not needed by ``load()``. An env given by its id gets the teacher's wrappers, frame stacking and, for a
        teacher trained with ``VecNormalize``, a frozen ``VecNormalize`` with its statistics (an env given as an
        object must carry them): student and teacher then see the same normalised observations.
    :param update_rule: The row of Table 1 / Sec. 4 (see above). Default ``"expected_entropy_regularised"``,
        the paper's most reliable rule (Sec. 3.3 and its Fig. 1)
    :param env_reward: Whether the environment reward is added to r^ (the paper's "+R" variants). ``None``:
        True for the two value rules (where it is inherent), False otherwise. Not defined for
        ``"teacher_distill"`` (Table 1), required by the value rules.
    :param distill_coef: Weight of the distillation terms: l is added to PPO's loss times ``distill_coef`` and r^
        (or the shaping of ``"teacher_v_reward"``) to the reward times ``distill_coef``, so that a gradient rule
        follows ``E[return] - distill_coef * loss``. A number >= 0 or a schedule of the progress remaining (from 1
        to 0): kickstarting decays it, e.g. ``LinearDecay(1.0)`` of :mod:`sb3_distill.common.utils`. Not used by
        ``"teacher_v_bootstrap"``.
    :param value_gating: Whether l(s) is multiplied by ``[V_pi(s) - V_theta(s)]_{>0}`` (Sec. 4, Proposition 2):
        the student imitates the teacher only where the teacher's value exceeds the student critic's. Needs a
        teacher with a value and a rule with a loss. The student's critic estimates the return of the rewards
        it is trained on, so the gate compares the teacher's value with the environment return only when r^ = 0
        (``"on_policy_distill"`` with ``env_reward``).
    :param control: The control policy q that collects the rollouts: ``"student"`` (student-driven, the paper's
        recommendation, Sec. 3.2), ``"teacher"`` (teacher-driven), ``"mixture"`` (each env step is the
        teacher's with probability ``teacher_prob``), ``"uniform"`` (uniformly random actions). ``None``: the
        rule's q in Table 1 (teacher for ``"teacher_distill"``, student otherwise).
    :param teacher_prob: beta of the ``"mixture"`` control, a number in [0, 1] or a schedule of the progress
        remaining (from 1 to 0)
    :param temperature: Softmax temperature tau of a Q-value teacher, ``pi = softmax(q / tau)`` (also of a logit
        teacher, where ``tau = 1`` is the teacher's own policy). ``None``: the teacher's default (0.01 for
        DQN/QR-DQN, 1 for PPO/A2C). Not used by Gaussian teachers.
    :param learning_rate: The learning rate, it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor (also of the teacher-value shaping and bootstrap)
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter, it can be a function of the current progress
        remaining (from 1 to 0).
    :param clip_range_vf: Clipping parameter for the value function,
        it can be a function of the current progress remaining (from 1 to 0).
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param use_sde: Not supported (the teacher cannot drive a gSDE student); must be False
    :param sde_sample_freq: unused (no gSDE)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (PPO's early stopping)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the student's policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}
    # The teacher's network, derived from `teacher`, is added to `policy_kwargs` only while the policy is built
    layout_arguments: ClassVar[dict[str, str]] = {
        "teacher_policy_class": "teacher_policy_class",
        "teacher_policy_kwargs": "teacher_policy_kwargs",
    }
    teacher_policy_class: type[BasePolicy]
    teacher_policy_kwargs: dict[str, Any]
    policy: DistillActorCriticPolicy
    teacher_adapter: Teacher
    teacher_preprocessing: TeacherPreprocessing
    _new_teacher: BaseAlgorithm | None
    distill_temperature: float
    distill_coef_schedule: CheckedSchedule
    teacher_prob_schedule: CheckedSchedule

    def __init__(
        self,
        policy: str | type[DistillActorCriticPolicy],
        env: GymEnv | str,
        teacher: BaseAlgorithm | LoadedTeacher | str | os.PathLike[str] | None = None,
        update_rule: str = "expected_entropy_regularised",
        env_reward: bool | None = None,
        distill_coef: float | Schedule = 1.0,
        value_gating: bool = False,
        control: str | None = None,
        teacher_prob: float | Schedule = 0.5,
        temperature: float | None = None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # PPO's constructor uses these two before `_setup_model` checks every number (SB3's assertions, or a
        # TypeError comparing a string): the same specs, earlier
        for name, value in (("n_steps", n_steps), ("batch_size", batch_size)):
            NUMBERS[name].check(value, name)
        if teacher is not None and isinstance(env, str):
            # An env given by its id gets the teacher's wrappers, frame stacking and frozen VecNormalize
            teacher = load_teacher(teacher, device="cpu")
            env = make_teacher_env(env, teacher.preprocessing)
            if teacher.preprocessing.normalizes:
                env = teacher.preprocessing.vec_normalize(env)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.teacher = teacher
        self.update_rule = update_rule
        self.env_reward = env_reward
        self.distill_coef = distill_coef
        self.value_gating = value_gating
        self.control = control
        self.teacher_prob = teacher_prob
        self.temperature = temperature
        if _init_setup_model:
            self._setup_model()
            self._forget_new_teacher()

    def _setup_model(self) -> None:
        check_arguments(self, NUMBERS)
        self._check_rule_arguments()
        self._setup_teacher()
        self._setup_policy_with_layout(super()._setup_model)
        if self._new_teacher is not None:
            # Kept until `load()` has restored the saved parameters (see `TeacherWeightsMixin`)
            self._install_new_teacher(self._new_teacher.policy.state_dict())
            self._new_teacher = None
        self.teacher_adapter = Teacher.for_policy(self.policy.teacher)
        self._check_teacher_arguments()
        # Derived values
        # A schedule's values are checked where it is evaluated
        self.distill_coef_schedule = CheckedSchedule(self.distill_coef, "distill_coef", DISTILL_COEF)
        self.teacher_prob_schedule = CheckedSchedule(self.teacher_prob, "teacher_prob", TEACHER_PROB)
        self._control = self.control or ("teacher" if self.update_rule == "teacher_distill" else "student")
        self._env_reward = self.update_rule in VALUE_RULES if self.env_reward is None else bool(self.env_reward)
        # The rules with r^ = 0 have no policy-gradient term without the environment reward
        self._policy_gradient = self._env_reward or self.update_rule not in ZERO_REWARD_RULES
        if self._control != "student" and self._policy_gradient:
            warnings.warn(
                f"`control={self._control!r}` with a policy-gradient term (`update_rule={self.update_rule!r}`, "
                f"`env_reward={self._env_reward}`): Eq. (1) is then taken under the control policy without "
                "importance weights, and the student's critic learns the control policy's return"
            )

    def _check_rule_arguments(self) -> None:
        """Validate the distillation arguments that need no teacher (here, not in ``__init__``: ``load()`` bypasses it)."""
        if self.update_rule not in DISTILL_UPDATE_RULES:
            raise ValueError(f"`update_rule` must be one of {DISTILL_UPDATE_RULES}, got {self.update_rule!r}")
        if self.env_reward is False and self.update_rule in VALUE_RULES:
            raise ValueError(
                f"`env_reward=False` with `update_rule={self.update_rule!r}`: the environment reward is part of this "
                "rule (Sec. 4 of Czarnecki et al.); use `env_reward=None` or True"
            )
        if self.env_reward and self.update_rule == "teacher_distill":
            raise ValueError(
                "`env_reward=True` with `update_rule='teacher_distill'`: Table 1 has no +R variant of teacher-driven "
                "distillation; use `update_rule='on_policy_distill'` (kickstarting) or another rule"
            )
        if self.value_gating and self.update_rule not in LOSS_RULES:
            raise ValueError(
                f"`value_gating=True` gates the loss l, but `update_rule={self.update_rule!r}` has none; "
                f"use one of {LOSS_RULES}"
            )
        if self.control is not None and self.control not in CONTROL_POLICIES:
            raise ValueError(f"`control` must be one of {CONTROL_POLICIES} or None, got {self.control!r}")
        if self.update_rule == "teacher_distill" and self.control not in (None, "teacher"):
            raise ValueError(
                f"`update_rule='teacher_distill'` is driven by the teacher (Table 1), got `control={self.control!r}`; "
                "use `update_rule='on_policy_distill'` with that control policy"
            )
        if self.use_sde:
            raise ValueError("`use_sde=True` is not supported by DistillPPO: the student's actions must have a density")

    def _setup_teacher(self) -> None:
        """Load the teacher if given, check its spaces and env preprocessing, and describe its policy in ``policy_kwargs``."""
        # The env's spaces first: a teacher in unsupported spaces is itself unsupported
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError("DistillPPO does not support Dict observation spaces yet")
        if not isinstance(self.action_space, (spaces.Discrete, spaces.Box)):
            raise UnsupportedSpaceError(f"DistillPPO needs a Discrete or Box action space, got {self.action_space}")
        self._new_teacher = None
        if self.teacher is not None:
            loaded = load_teacher(self.teacher, device=self.device)  # type: ignore[arg-type]
            self._new_teacher = loaded.model
            self.teacher = None  # the weights are copied into the policy: the model is not kept
            self.teacher_preprocessing = loaded.preprocessing
            for space_name in ("observation_space", "action_space"):
                teacher_space, space = getattr(loaded.model, space_name), getattr(self, space_name)
                if teacher_space != space:
                    raise ValueError(
                        f"The teacher's {space_name} {teacher_space} differs from the env's {space}: the student "
                        "must see and act in the teacher's spaces (use the teacher's env wrappers)"
                    )
            if self.env is not None:
                self._check_env_preprocessing(self.env, loaded.preprocessing)
            self.teacher_policy_class = type(loaded.model.policy)
            self.teacher_policy_kwargs = {
                key: value
                for key, value in loaded.model.policy._get_constructor_parameters().items()
                if key not in ("observation_space", "action_space", "lr_schedule")
            }
        elif not hasattr(self, "teacher_policy_class"):
            raise ValueError(
                "`teacher` is required: a trained SB3 model, the path to its .zip or an rl-zoo3 experiment folder"
            )

    @staticmethod
    def _check_env_preprocessing(env: VecEnv, preprocessing: TeacherPreprocessing) -> None:
        """
        A ``ValueError`` unless ``env`` carries the teacher's wrappers and frame stacking and, for a teacher trained
        with ``VecNormalize``, a frozen ``VecNormalize`` (student and teacher both see the normalised observations
        that the rollout buffer stores).
        """
        check_env_preprocessing(env, dataclasses.replace(preprocessing, obs_mean=None, obs_var=None))
        if not preprocessing.normalizes:
            return
        vec_normalize = unwrap_vec_wrapper(env, VecNormalize)
        if vec_normalize is None or vec_normalize.training or not vec_normalize.norm_obs:
            raise ValueError(
                "The teacher was trained with VecNormalize: pass the env id as a string, or wrap the env with "
                "`load_teacher(teacher).preprocessing.vec_normalize(venv)` (frozen statistics)"
            )

    def _check_teacher_arguments(self) -> None:
        """Validate what depends on the teacher: its action kind and whether it has a value."""
        kind = self.teacher_adapter.action_kind
        if kind not in ("categorical", "gaussian"):
            raise ValueError(
                f"DistillPPO needs a teacher with a categorical or diagonal Gaussian policy (PPO, A2C, DQN, QR-DQN), "
                f"got a {type(self.policy.teacher).__name__} ({kind})"
            )
        needs_value = self.update_rule in VALUE_RULES or self.value_gating
        if needs_value and not self.teacher_adapter.has_value:
            raise ValueError(
                f"`update_rule={self.update_rule!r}` / `value_gating={self.value_gating}` needs the teacher's state value "
                f"V_pi, which a {type(self.policy.teacher).__name__} teacher does not have"
            )
        if self.temperature is None:
            self.distill_temperature = float(self.teacher_adapter.default_temperature)
        else:
            self.distill_temperature = float(self.temperature)
            if kind == "gaussian":
                warnings.warn("`temperature` is not used by Gaussian teachers")
        if self.control == "uniform" and isinstance(self.action_space, spaces.Box):
            if not (np.all(np.isfinite(self.action_space.low)) and np.all(np.isfinite(self.action_space.high))):
                raise ValueError(f"`control='uniform'` needs a bounded action space, got {self.action_space}")

    def _excluded_save_params(self) -> list[str]:
        # The teacher model is not pickled: its weights are in `policy.teacher`, its description in `policy_kwargs`
        return [
            *super()._excluded_save_params(),
            "teacher",
            "_new_teacher",
            "_new_teacher_state",
            "teacher_adapter",
            "distill_coef_schedule",
            "teacher_prob_schedule",
            "_gate_fractions",
        ]

    def _control_step(self, obs_tensor: th.Tensor, n_envs: int) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """The control policy's actions, with the student's values and log-probabilities of those actions."""
        actions, values, log_probs = self.policy(obs_tensor)
        if self._control == "student":
            return actions, values, log_probs
        if self._control == "uniform":
            actions = th.as_tensor(np.stack([self.action_space.sample() for _ in range(n_envs)]), device=self.device)
            by_teacher = np.zeros(n_envs, dtype=bool)
        else:
            by_teacher = np.ones(n_envs, dtype=bool)
            if self._control == "mixture":
                by_teacher = np.random.rand(n_envs) < self.teacher_prob_schedule(self._current_progress_remaining)
            teacher_actions = self.teacher_adapter.distribution(obs_tensor, self.distill_temperature).sample()
            mask = th.as_tensor(by_teacher, device=self.device).reshape(-1, *([1] * (actions.dim() - 1)))
            actions = th.where(mask, teacher_actions.to(actions.dtype), actions)
        self._teacher_steps += int(by_teacher.sum())
        _, log_probs, _ = self.policy.evaluate_actions(obs_tensor, actions)
        return actions, values, log_probs

    def _record_step(
        self, record: _RolloutRecord, step: int, new_obs: np.ndarray, rewards: np.ndarray, dones: np.ndarray, infos: list
    ) -> np.ndarray:
        """
        Record one step's environment rewards, terminations and next states (the terminal observation where an
        episode ended); return SB3's bootstrap ``gamma V_theta(s_T)`` of time-limit truncations (0 elsewhere).
        """
        record.env_rewards[step] = rewards
        record.dones[step] = dones
        record.next_observations[step] = np.asarray(new_obs).reshape(record.next_observations.shape[1:])
        bootstraps = np.zeros(len(dones), dtype=np.float32)
        for idx, done in enumerate(dones):
            terminal_obs = infos[idx].get("terminal_observation")
            if not done or terminal_obs is None:
                continue
            record.next_observations[step, idx] = np.asarray(terminal_obs).reshape(record.next_observations.shape[2:])
            if infos[idx].get("TimeLimit.truncated", False):
                # Handle timeout by bootstrapping with value function (GitHub issue #633 of SB3)
                with th.no_grad():
                    terminal_value = self.policy.predict_values(self.policy.obs_to_tensor(terminal_obs)[0])[0]  # type: ignore[arg-type]
                bootstraps[idx] = self.gamma * float(terminal_value.item())
            else:
                record.terminated[step, idx] = True
        return bootstraps

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        ``OnPolicyAlgorithm.collect_rollouts`` with the control policy ``control`` acting, and the rewards replaced
        by ``r_t [env_reward] + distill_coef * r^_t`` before the returns and advantages are computed.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        record = self._new_record(n_rollout_steps, env.num_envs)
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions_tensor, values, log_probs = self._control_step(obs_tensor, env.num_envs)  # type: ignore[arg-type]
            actions = actions_tensor.cpu().numpy()
            # Clip the actions to avoid out of bound error as we are sampling from an unbounded Gaussian distribution
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            self._control_steps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            if isinstance(self.action_space, spaces.Discrete):
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)
            bootstraps = self._record_step(record, n_steps, new_obs, rewards, dones, infos)  # type: ignore[arg-type]
            n_steps += 1
            rollout_buffer.add(
                self._last_obs, actions, rewards + bootstraps, self._last_episode_starts, values, log_probs  # type: ignore[arg-type]
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            # Compute value for the last timestep
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]
        self._set_distillation_rewards(rollout_buffer, record, last_values=values)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _new_record(self, n_steps: int, n_envs: int) -> _RolloutRecord:
        obs_shape = self.rollout_buffer.obs_shape
        return _RolloutRecord(
            env_rewards=np.zeros((n_steps, n_envs), dtype=np.float32),
            bootstraps=np.zeros((n_steps, n_envs), dtype=np.float32),
            dones=np.zeros((n_steps, n_envs), dtype=bool),
            terminated=np.zeros((n_steps, n_envs), dtype=bool),
            next_observations=np.zeros((n_steps, n_envs, *obs_shape), dtype=self.observation_space.dtype),
        )

    def _set_distillation_rewards(self, buffer: RolloutBuffer, record: _RolloutRecord, last_values: th.Tensor) -> None:
        """Replace the buffer's rewards by ``r [env_reward] + coef * r^``, then compute returns and advantages."""
        n_steps, n_envs = record.dones.shape
        # The action a_{t+1} drawn at s_{t+1} within the rollout (for expected entropy regularised)
        next_actions = np.concatenate([buffer.actions[1:], buffer.actions[-1:]])
        next_drawn = np.zeros((n_steps, n_envs), dtype=bool)
        next_drawn[:-1] = ~record.dones[:-1]
        flat = {
            "obs": buffer.observations,
            "next_obs": record.next_observations,
            "actions": buffer.actions,
            "next_actions": next_actions,
            "next_drawn": next_drawn,
            "next_non_terminal": 1.0 - record.terminated.astype(np.float32),
            "env_rewards": record.env_rewards,
        }
        flat = {key: value.reshape(n_steps * n_envs, *value.shape[2:]) for key, value in flat.items()}
        with th.no_grad():
            distill_rewards = th.cat([self._distill_rewards(**chunk) for chunk in _chunks(flat, self.device)])
        distill_rewards_np = distill_rewards.cpu().numpy().reshape(n_steps, n_envs)
        self.logger.record("rollout/distill_reward", float(distill_rewards_np.mean()))
        if self.update_rule == "teacher_v_bootstrap":
            # TD + V_pi: one-step targets r_t + gamma V_pi(s_{t+1}), the student's critic as baseline (no GAE)
            buffer.returns = distill_rewards_np.astype(np.float32)
            buffer.advantages = buffer.returns - buffer.values
            return
        coef = self.distill_coef_schedule(self._current_progress_remaining)
        env_part = record.env_rewards if self._env_reward else np.zeros_like(record.env_rewards)
        # The buffer's rewards already hold SB3's truncation bootstrap on top of the env reward
        buffer.rewards = (buffer.rewards - record.env_rewards) + env_part + coef * distill_rewards_np
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self._last_episode_starts)  # type: ignore[arg-type]

    def _distill_rewards(
        self,
        obs: th.Tensor,
        next_obs: th.Tensor,
        actions: th.Tensor,
        next_actions: th.Tensor,
        next_drawn: th.Tensor,
        next_non_terminal: th.Tensor,
        env_rewards: th.Tensor,
    ) -> th.Tensor:
        """
        r^ of the update rule on a batch of transitions (the shaping only for ``"teacher_v_reward"``, the
        one-step targets for ``"teacher_v_bootstrap"``), shape (batch,).
        """
        teacher, tau = self.teacher_adapter, self.distill_temperature
        if isinstance(self.action_space, spaces.Discrete):
            actions, next_actions = actions.long().flatten(), next_actions.long().flatten()
        if self.update_rule == "entropy_regularised":
            return entropy_regularised_reward(teacher.distribution(obs, tau).log_prob(actions))
        if self.update_rule == "n_distill":
            next_student = self._student_distribution(next_obs)
            return n_distill_reward(next_student, teacher.distribution(next_obs, tau), next_non_terminal)
        if self.update_rule == "expected_entropy_regularised":
            next_teacher = teacher.distribution(next_obs, tau)
            # log pi(a_{i+1} | s_{i+1}) where a_{i+1} was drawn, else its expectation over the student
            expected = -policy_cross_entropy(self._student_distribution(next_obs), next_teacher)
            next_log_prob = th.where(next_drawn, next_teacher.log_prob(next_actions), expected)
            return expected_entropy_regularised_reward(next_log_prob, next_non_terminal)
        if self.update_rule == "teacher_v_reward":
            # The shaping gamma V_pi(s') - V_pi(s) (the env reward is added by the caller)
            values, next_values = teacher.value(obs, tau), teacher.value(next_obs, tau)
            return teacher_value_reward(th.zeros_like(values), values, next_values, next_non_terminal, self.gamma)
        if self.update_rule == "teacher_v_bootstrap":
            next_values = teacher.value(next_obs, tau)
            return teacher_value_bootstrap_targets(env_rewards, next_values, next_non_terminal, self.gamma)
        return th.zeros(len(next_non_terminal), device=self.device)

    def _student_distribution(self, obs: th.Tensor) -> th.distributions.Distribution:
        """The student's torch action distribution pi_theta(s)."""
        return _torch_distribution(self.policy.get_distribution(obs))

    # --- Training: PPO's loss plus distill_coef * l

    def _distill_loss(self, obs: th.Tensor, student: th.distributions.Distribution, values: th.Tensor) -> th.Tensor | None:
        """``mean_batch l(s) [gate(s)]`` of the update rule on a minibatch, or None for the rules without l."""
        if self.update_rule not in LOSS_RULES:
            return None
        with th.no_grad():
            teacher = self.teacher_adapter.distribution(obs, self.distill_temperature)
        losses = distill_loss_per_state(self.update_rule, student, teacher)
        assert losses is not None
        if self.value_gating:
            with th.no_grad():
                gate = value_gate(self.teacher_adapter.value(obs, self.distill_temperature), values)
            self._gate_fractions.append(gate.mean().item())
            losses = losses * gate
        return losses.mean()

    def _evaluate_actions(
        self, observations: th.Tensor, actions: th.Tensor, step_losses: "_StepLosses"
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None, Distribution]:
        """
        The policy's ``evaluate_actions_and_distribution``; a ``NonFiniteLossError`` instead of torch's
        ``ValueError`` when a non-finite loss of an earlier step of this ``train()`` call made the weights NaN
        (which the action distribution refuses).
        """
        try:
            return self.policy.evaluate_actions_and_distribution(observations, actions)
        except ValueError:
            step_losses.check()
            raise

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer: PPO's update plus ``distill_coef * l``
        (the policy-gradient term is skipped for the rules whose reward is 0 without ``env_reward``).
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range, and the optional one of the value function
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        distill_coef = self.distill_coef_schedule(self._current_progress_remaining)

        logs: dict[str, list[float]] = {name: [] for name in ("entropy_loss", "pg_loss", "value_loss", "clip_fraction")}
        logs["distill_loss"] = []
        self._gate_fractions: list[float] = []
        step_losses = _StepLosses(self._n_updates)
        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                losses, log_ratio = self._minibatch_losses(rollout_data, clip_range, clip_range_vf, step_losses, logs)
                policy_loss, value_loss, entropy_loss, distill_loss = losses.values()
                assert policy_loss is not None and value_loss is not None and entropy_loss is not None
                loss: th.Tensor = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if distill_loss is not None:
                    # The distillation loss l of the update rule (Eq. (1), second term)
                    loss = loss + distill_coef * distill_loss

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                step_losses.add(epoch, **losses)  # type: ignore[arg-type]
                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        # Stop on a NaN or infinite loss (one device synchronisation per call)
        step_losses.check()
        self._record_train_logs(logs, approx_kl_divs, loss, clip_range, clip_range_vf, distill_coef)

    def _minibatch_losses(
        self,
        rollout_data: Any,
        clip_range: float,
        clip_range_vf: float | None,
        step_losses: "_StepLosses",
        logs: dict[str, list[float]],
    ) -> tuple[dict[str, th.Tensor | None], th.Tensor]:
        """
        PPO's losses on one minibatch (clipped surrogate, value, entropy) and the update rule's distillation
        loss, as in SB3's ``PPO.train``; their values are appended to ``logs``.

        :return: the losses by name (``distill_loss`` None for the rules without l), and log(pi / pi_old)
        """
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):
            # Convert discrete action from float to long
            actions = rollout_data.actions.long().flatten()
        values, log_prob, entropy, distribution = self._evaluate_actions(rollout_data.observations, actions, step_losses)
        values = values.flatten()
        # Normalize advantage (normalization does not make sense if mini batchsize == 1, see GH issue #325)
        advantages = rollout_data.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        # ratio between old and new policy, should be one at the first iteration
        ratio = th.exp(log_prob - rollout_data.old_log_prob)
        # clipped surrogate loss (none when the rule has no reward)
        policy_loss_1 = advantages * ratio
        policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
        policy_loss = -th.min(policy_loss_1, policy_loss_2).mean() * float(self._policy_gradient)
        values_pred = values
        if clip_range_vf is not None:
            # Clip the difference between old and new value (NOTE: this depends on the reward scaling)
            values_pred = rollout_data.old_values + th.clamp(values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
        # Value loss using the TD(gae_lambda) target
        value_loss = F.mse_loss(rollout_data.returns, values_pred)
        # Entropy loss favor exploration (approximate entropy when no analytical form)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        distill_loss = self._distill_loss(rollout_data.observations, _torch_distribution(distribution), values)

        # Logging
        logs["pg_loss"].append(policy_loss.item())
        logs["clip_fraction"].append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())
        logs["value_loss"].append(value_loss.item())
        logs["entropy_loss"].append(entropy_loss.item())
        if distill_loss is not None:
            logs["distill_loss"].append(distill_loss.item())
        losses = dict(
            policy_gradient_loss=policy_loss, value_loss=value_loss, entropy_loss=entropy_loss, distill_loss=distill_loss
        )
        return losses, (log_prob - rollout_data.old_log_prob).detach()

    def _record_train_logs(
        self,
        logs: dict[str, list[float]],
        approx_kl_divs: list[Any],
        loss: th.Tensor,
        clip_range: float,
        clip_range_vf: float | None,
        distill_coef: float,
    ) -> None:
        """What SB3's ``PPO.train`` logs, and the distillation's own values."""
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        self.logger.record("train/entropy_loss", np.mean(logs["entropy_loss"]))
        self.logger.record("train/policy_gradient_loss", np.mean(logs["pg_loss"]))
        self.logger.record("train/value_loss", np.mean(logs["value_loss"]))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(logs["clip_fraction"]))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self._record_distillation_logs(distill_coef, logs["distill_loss"])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _record_distillation_logs(self, distill_coef: float, distill_losses: list[float]) -> None:
        """Log the distillation loss, the weight, the fraction of gated states and of teacher steps."""
        if distill_losses:
            self.logger.record("train/distill_loss", np.mean(distill_losses))
        if self._gate_fractions:
            self.logger.record("train/value_gate", np.mean(self._gate_fractions))
        self.logger.record("train/distill_coef", distill_coef)
        if self._control_steps > 0:
            self.logger.record("rollout/teacher_fraction", self._teacher_steps / self._control_steps)

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        self._teacher_steps = 0
        self._control_steps = 0
        return super()._setup_learn(*args, **kwargs)

    def learn(
        self: SelfDistillPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DistillPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDistillPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def export_student(self, learning_rate: float | Schedule | None = None) -> PPO:
        """
        The student (actor and critic) as a plain SB3 ``PPO`` with this model's PPO hyperparameters: it
        ``save()``s and reloads with PPO, predicts what this model predicts, and trains further on its own
        (attach an env with ``set_env``). The optimizer state is not carried over. For a teacher trained with
        ``VecNormalize``, the student expects the normalised observations:
        ``model.teacher_preprocessing.vec_normalize(venv)`` builds the env to play in.

        :param learning_rate: the exported model's learning rate (default: this model's)
        :return: the PPO, with no environment attached
        """
        exported = model_for_export(
            PPO,
            PPO.policy_aliases[self.policy.student_policy_alias],
            self.policy_kwargs,
            self.observation_space,
            self.action_space,
            learning_rate=self.learning_rate if learning_rate is None else learning_rate,
            n_steps=self.n_steps,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            normalize_advantage=self.normalize_advantage,
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            max_grad_norm=self.max_grad_norm,
            target_kl=self.target_kl,
            seed=self.seed,
            device=self.device,
        )
        exported.policy.load_state_dict(self.policy.student_state_dict())
        return exported


@dataclass
class _StepLosses:
    """The losses of the gradient steps of one ``train()`` call, kept on the device, with each step's epoch."""

    n_updates: int
    losses: dict[str, list[th.Tensor]] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)

    def add(self, epoch: int, **losses: th.Tensor | None) -> None:
        """Record one gradient step's losses (None: not computed by the update rule)."""
        for name, value in losses.items():
            self.losses.setdefault(name, [])
            if value is not None:
                self.losses[name].append(value.detach())
        self.epochs.append(epoch)

    def check(self) -> None:
        """Raise a ``NonFiniteLossError`` if a loss was NaN or infinite (one device synchronisation)."""
        _check_finite_step_losses(self.losses, self.epochs, self.n_updates)


def _check_finite_step_losses(losses: dict[str, list[th.Tensor]], epochs: list[int], n_updates: int) -> None:
    """
    :func:`~sb3_distill.common.validation.check_finite_losses` on the losses of one ``train()`` call: a
    ``NonFiniteLossError`` naming the loss, the update (PPO counts one per epoch, as ``train/n_updates``) and the
    minibatch of the first NaN or infinite loss. A loss of a minibatch that an early stop (``target_kl``) cut
    from its epoch counts as finite.

    :param losses: loss name -> the loss (a scalar tensor) of every gradient step, in order
    :param epochs: the epoch of every gradient step
    :param n_updates: ``_n_updates`` before the call
    """
    if not epochs:
        return
    # Each gradient step's place: (epoch, minibatch within the epoch)
    starts: dict[int, int] = {}
    minibatches = [index - starts.setdefault(epoch, index) for index, epoch in enumerate(epochs)]
    n_minibatches = max(minibatches) + 1
    members = [f"student (minibatch {minibatch})" for minibatch in range(n_minibatches)]
    tables = {}
    for name, values in losses.items():
        if not values:
            continue
        table = values[0].new_zeros(epochs[-1] + 1, n_minibatches)
        table[epochs, minibatches] = th.stack(values)
        tables[name] = (members, table)
    check_finite_losses(tables, n_updates)


def _torch_distribution(distribution: Distribution) -> th.distributions.Distribution:
    """The torch distribution inside an SB3 ``Categorical`` or ``DiagGaussian`` distribution."""
    assert isinstance(distribution.distribution, th.distributions.Distribution)
    return distribution.distribution


def _chunks(arrays: dict[str, np.ndarray], device: th.device) -> Iterator[dict[str, th.Tensor]]:
    """The arrays, cut along their first dimension into tensors of at most ``_CHUNK`` rows."""
    n_rows = len(next(iter(arrays.values())))
    for start in range(0, n_rows, _CHUNK):
        yield {key: th.as_tensor(value[start : start + _CHUNK], device=device) for key, value in arrays.items()}


#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
DISTILL_COEF = Number(low=0, schedule=True, meaning="the weight of the distillation terms")
TEACHER_PROB = Number(low=0, high=1, schedule=True, meaning="beta of the mixture control")
NUMBERS = {
    **PPO_NUMBERS,
    "distill_coef": DISTILL_COEF,
    "teacher_prob": TEACHER_PROB,
    "temperature": Number(low=0, low_open=True, optional=True, meaning="the softmax temperature tau"),
    "env_reward": Flag(optional=True, meaning="None: by `update_rule`"),
    "value_gating": Flag(),
}
