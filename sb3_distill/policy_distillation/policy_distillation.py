import dataclasses
import inspect
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import unwrap_vec_normalize

from sb3_distill.common.base import TeacherWeightsMixin
from sb3_distill.common.losses import check_temperature, distillation_loss, gaussian_distillation_loss
from sb3_distill.common.save import AtomicSaveMixin, save_exported
from sb3_distill.common.teachers import (
    CheckpointFolder,
    DQNTeacher,
    LoadedTeacher,
    PreprocessedPolicy,
    Teacher,
    TeacherPreprocessing,
    as_checkpoint_folder,
    check_env_preprocessing,
    checkpoint_steps,
    load_teacher,
    make_teacher_env,
    policy_alias,
    student_algorithm_for,
    teacher_algorithm_of,
)
from sb3_distill.common.torch_layers import check_student_policy_kwargs, default_student_kwargs
from sb3_distill.common.utils import model_for_export
from sb3_distill.common.validation import (
    OFF_POLICY_NUMBERS,
    TEACHER_PROB,
    CheckedSchedule,
    Flag,
    Number,
    check_arguments,
    check_finite_losses,
    warn_if_student_larger,
)
from sb3_distill.policy_distillation.policies import CnnPolicy, DistillationPolicy, MlpPolicy, MultiInputPolicy

SelfPolicyDistillation = TypeVar("SelfPolicyDistillation", bound="PolicyDistillation")

#: Who acts while data is collected
CONTROL_POLICIES = ("teacher", "student", "mixture", "uniform")


class PolicyDistillation(TeacherWeightsMixin, AtomicSaveMixin, OffPolicyAlgorithm):
    """
    Policy distillation (Rusu et al. 2015, "Policy Distillation") of a trained SB3 agent, the *teacher*,
    into a *student* network of the same SB3 kind, with the control-policy choices of Czarnecki et al.
    2019 ("Distilling Policy Distillation", Sec. 3.1-3.2).

    Every environment step is taken by the control policy (``control``): the teacher (teacher-driven
    distillation, Rusu), the student (student-driven, on-policy distillation), or a per-step mixture
    (DAgger-style). Transitions go into a replay buffer; every gradient step samples a batch of states,
    labels them with the frozen teacher and takes one supervised step of the student on
    ``loss(student(s), teacher(s))``. ``predict()`` uses the student; :meth:`export_student` returns it as
    a plain SB3 model (DQN for a DQN/QR-DQN teacher, PPO/A2C for PPO/A2C, SAC, TD3, DDPG).

    Supported teachers: DQN and QR-DQN (Q-values; QR-DQN's mean over quantiles), PPO and A2C with
    Discrete actions (action logits) or Box actions (diagonal Gaussian), SAC (the Gaussian before the tanh:
    the KL is exact because tanh is a bijection), TD3 and DDPG (deterministic: MSE on actions).

    The teacher carries its observation preprocessing (:func:`~sb3_distill.common.teachers.load_teacher`):
    frozen ``VecNormalize`` statistics (from an rl-zoo3 folder's ``vecnormalize.pkl``, or the teacher model's
    own ``VecNormalize`` env) are applied by the policy to every observation that teacher and student see,
    in ``predict()`` too, so that the env stays raw; rl-zoo3's ``env_wrapper`` and ``frame_stack`` are added
    to an env given by its id, and checked on an env given as an object (a clear error if missing).

    :param policy: The student's policy alias (``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"``),
        resolved against the student algorithm's aliases (DQN's ``CnnPolicy`` for a DQN teacher, PPO's for a
        PPO teacher, ...), or a :class:`DistillationPolicy` subclass. ``None``: the teacher's policy alias.
    :param env: The environment to learn from (if registered in Gym, can be str); its observation and
        action spaces must be the teacher's
    :param teacher: The trained teacher: an SB3 model, the path to its ``.zip`` (what ``model.save`` and
        rl-zoo3 write), an rl-zoo3 experiment folder (``logs/<algo>/<env>_<id>/``), or what
        :func:`~sb3_distill.common.teachers.load_teacher` returns. Its weights are copied into this model's
        policy and saved with it, so that ``load()`` needs no teacher; ``load(path, teacher=other)`` replaces
        them with ``other``'s.
    :param learning_rate: The student's learning rate, it can be a function of the current progress
        remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer of control-policy states
    :param learning_starts: how many steps of the control policy to collect before distillation starts
        (there is no random warm-up: the control policy acts from the first step)
    :param batch_size: Minibatch size of each distillation step
    :param tau: unused (no target network), kept for SB3's signature
    :param gamma: unused (no TD learning), kept for SB3's signature
    :param train_freq: Update the student every ``train_freq`` steps. Alternatively pass a tuple of frequency
        and unit like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many distillation steps to do after each rollout (see ``train_freq``);
        ``-1`` means as many as environment steps done in the rollout
    :param action_noise: Noise added to the control policy's (scaled) Box actions, e.g. for a deterministic
        TD3 teacher driving the data collection
    :param replay_buffer_class: Replay buffer class to use. If ``None``, it will be automatically selected.
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
    :param loss: The distillation loss. Discrete teachers: ``"forward_kl"`` (KL(teacher || student) =
        H(teacher || student) minus a constant, Rusu's choice and the default), ``"reverse_kl"``, ``"nll"``
        (of the teacher's greedy action), ``"mse"`` (on Q-values or logits). Continuous teachers:
        ``"forward_kl"``, ``"reverse_kl"`` (closed-form Gaussian KL) or ``"mse"`` (on the means). ``None``:
        ``"forward_kl"``, except ``"mse"`` for deterministic TD3/DDPG teachers (the only choice there).
        See :mod:`sb3_distill.common.losses`.
    :param temperature: Softmax temperature tau of the discrete losses (Rusu's sharpening; both teacher and
        student outputs are divided by it). ``None``: 0.01 for Q-value teachers (Rusu et al.: Q-values are
        close to each other, sharpening makes the teacher's preference visible) and 1 for logit teachers
        (PPO/A2C logits are the teacher's log-probabilities, which tau = 1 reproduces exactly). Not used by
        continuous teachers.
    :param control: Who acts while data is collected: ``"student"`` (student-driven, the default: Czarnecki
        et al. report it needs about 3x fewer steps than teacher-driven to recover the teacher, and it was
        the best or tied in ``benchmarks/control_policy.py``), ``"teacher"`` (teacher-driven, Rusu et al.), or
        ``"mixture"`` (each env step is the teacher's with probability ``teacher_prob``), or ``"uniform"``
        (uniformly random actions, Czarnecki et al.'s uniform control policy)
    :param teacher_prob: beta of the ``"mixture"`` control: the probability that the teacher takes a step,
        a float in [0, 1] or a schedule of the progress remaining (from 1 to 0), e.g. a DAgger-style decay
    :param deterministic_control: Whether the acting policy takes its mode instead of sampling (SB3's
        ``deterministic`` flag of ``predict``). A Q-value student (DQN or QR-DQN teacher) samples from its
        softmax policy ``softmax(q / temperature)``, the stochastic student of on-policy distillation
        (Czarnecki et al.), or acts greedily with ``deterministic_control=True``; a Q-value teacher acts greedily
    :param value_coef: Weight of an MSE loss between the student's and the teacher's value functions (V of
        PPO/A2C; each Q head of SAC/TD3/DDPG on the buffer's state-action pairs, head to head), so that the
        exported student can be trained further with RL. 0 (default) distills the policy only, as Rusu et al.
        Not used for Q-value teachers, whose Q-values are the policy.
    :param teacher_refresh_interval: Online distillation (Rusu et al. 2015: distilling from a teacher
        while it still trains): every ``teacher_refresh_interval`` environment steps, the newest complete
        checkpoint of ``teacher``, the folder that the teacher's training writes checkpoints into (SB3's
        ``CheckpointCallback``, rl-zoo3's ``--save-freq``), replaces the teacher's weights; half-written or
        corrupt files are skipped with a warning. The steps of the checkpoint in use are logged as
        ``train/teacher_checkpoint_steps``. A folder with no checkpoint yet is an error, unless ``teacher`` is a
        :class:`~sb3_distill.common.teachers.CheckpointFolder` with a ``timeout`` to wait for one. Teachers
        trained with ``VecNormalize`` are not supported online (their statistics move as they train).
        ``None`` (default): the teacher is fixed.
    :param student_policy_kwargs: The student's network, with the keys of the student algorithm's
        ``policy_kwargs`` (e.g. ``dict(net_arch=[32, 32])``, or ``CompactNatureCNN`` as features extractor).
        ``None`` gives ``net_arch=[16, 16]`` for vector observations and the papers' student1
        ``{16, 16, 16, 64}`` for a Nature-CNN teacher. The teacher's ``normalize_images`` is used unless given.
    :param max_grad_norm: The maximum value for the gradient clipping of the student (None: no clipping)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments of the student's optimizer: ``optimizer_class`` and
        ``optimizer_kwargs`` (the networks are set by ``teacher`` and ``student_policy_kwargs``)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DistillationPolicy
    teacher_algorithm: type[BaseAlgorithm] | None
    student_algorithm: type[BaseAlgorithm]
    teacher_preprocessing: TeacherPreprocessing
    teacher_policy_class: type[BasePolicy]
    teacher_policy_kwargs: dict[str, Any]
    student_policy_class: type[BasePolicy]
    _student_kwargs: dict[str, Any]
    _new_teacher: BaseAlgorithm | None
    #: Online distillation: the checkpoint folder of the teacher and the steps of the checkpoint in use
    teacher_checkpoint_folder: str | None = None
    teacher_checkpoint_steps: int | None = None
    _last_teacher_refresh: int = 0

    def __init__(
        self,
        policy: str | type[DistillationPolicy] | None = None,
        env: GymEnv | str | None = None,
        teacher: BaseAlgorithm | LoadedTeacher | CheckpointFolder | str | pathlib.Path | None = None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        batch_size: int = 64,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        loss: str | None = None,
        temperature: float | None = None,
        control: str = "student",
        teacher_prob: float | Schedule = 0.5,
        deterministic_control: bool = False,
        value_coef: float = 0.0,
        teacher_refresh_interval: int | None = None,
        student_policy_kwargs: dict[str, Any] | None = None,
        max_grad_norm: float | None = 10.0,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if teacher is not None and (policy is None or isinstance(env, str)):
            # The teacher decides the default policy alias and the wrappers of an env given by its id
            loaded = load_teacher(_teacher_source(teacher, teacher_refresh_interval), device="cpu")
            policy = policy_alias(loaded.model) if policy is None else policy
            if isinstance(env, str):
                env = make_teacher_env(env, loaded.preprocessing)
            # Loaded once; an online teacher stays its checkpoint folder
            teacher = loaded if teacher_refresh_interval is None else teacher
        if policy is None:
            raise ValueError("`policy` is required without a `teacher` to take its policy alias from")
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
            supported_action_spaces=(spaces.Discrete, spaces.Box),
        )
        self.teacher = teacher
        self.loss = loss
        self.temperature = temperature
        self.control = control
        self.teacher_prob = teacher_prob
        self.deterministic_control = deterministic_control
        self.value_coef = value_coef
        self.teacher_refresh_interval = teacher_refresh_interval
        self.student_policy_kwargs = student_policy_kwargs
        self.max_grad_norm = max_grad_norm
        if _init_setup_model:
            self._setup_model()
            self._forget_new_teacher()

    def _setup_model(self) -> None:
        check_arguments(self, NUMBERS)
        self._setup_teacher()
        # The policy holds the teacher (frozen) and the student; `policy_kwargs` only sets the optimizer
        unknown = sorted(set(self.policy_kwargs) - {"optimizer_class", "optimizer_kwargs"})
        if unknown:
            raise ValueError(
                f"`policy_kwargs` of PolicyDistillation only sets the student's optimizer (`optimizer_class`, "
                f"`optimizer_kwargs`), got {unknown}; describe the student's network with `student_policy_kwargs`"
            )
        # The networks are described by the teacher and the student (kept aside: `policy_kwargs` stays the user's)
        user_policy_kwargs = self.policy_kwargs
        self.policy_kwargs = dict(
            teacher_policy_class=self.teacher_policy_class,
            teacher_policy_kwargs=self.teacher_policy_kwargs,
            student_policy_class=self.student_policy_class,
            student_policy_kwargs=self._student_kwargs,
            distill_value=self.value_coef > 0,
            teacher_preprocessing=self.teacher_preprocessing,
            **user_policy_kwargs,
        )
        super()._setup_model()
        self.policy_kwargs = user_policy_kwargs
        self._check_distillation_arguments()
        if self._new_teacher is not None:
            # Kept until `load()` has restored the saved parameters (see `TeacherWeightsMixin`)
            self._install_new_teacher(self._new_teacher.policy.state_dict())
            self._new_teacher = None
        self.teacher_prob_schedule = CheckedSchedule(self.teacher_prob, "teacher_prob", TEACHER_PROB)
        warn_if_student_larger(self.compression_ratio)

    def _setup_teacher(self) -> None:
        """Load the teacher if given, and derive its policy, preprocessing and the student's algorithm."""
        self._new_teacher = None
        self._check_teacher_refresh_interval()
        if self.teacher is not None:
            source = _teacher_source(self.teacher, self.teacher_refresh_interval)
            loaded = load_teacher(source, device=self.device)  # type: ignore[arg-type]
            if isinstance(source, CheckpointFolder):
                self._setup_online_teacher(source, loaded)
            self._new_teacher = loaded.model
            self.teacher = None  # the weights are copied into the policy: the model is not kept
            self.teacher_preprocessing = loaded.preprocessing
            self.teacher_algorithm = teacher_algorithm_of(loaded.model)
            adapter = Teacher.for_policy(loaded.model.policy)
            self.student_algorithm = student_algorithm_for(adapter, self.teacher_algorithm)
            self.teacher_policy_class = type(loaded.model.policy)
            self.teacher_policy_kwargs = {
                key: value
                for key, value in loaded.model.policy._get_constructor_parameters().items()
                if key not in ("observation_space", "action_space", "lr_schedule")
            }
            env_normalizer = unwrap_vec_normalize(self.env) if self.env is not None else None
            if env_normalizer is not None and self.teacher_preprocessing.same_statistics(env_normalizer):
                # The env already normalises as the teacher was trained (e.g. the teacher's own VecNormalize env)
                self.teacher_preprocessing = dataclasses.replace(self.teacher_preprocessing, obs_mean=None, obs_var=None)
            if self.env is not None:
                # first, so that a missing wrapper is named rather than seen as a space mismatch
                check_env_preprocessing(self.env, self.teacher_preprocessing)
            self._check_teacher_spaces(loaded.model)
        elif not hasattr(self, "teacher_policy_class"):
            raise ValueError(
                "`teacher` is required: a trained SB3 model, the path to its .zip or an rl-zoo3 experiment folder"
            )
        elif self.env is not None:
            check_env_preprocessing(self.env, self.teacher_preprocessing)
        alias = self.policy_class.student_policy_alias  # type: ignore[attr-defined]
        self.student_policy_class = self.student_algorithm.policy_aliases[alias]
        self._student_kwargs = self._resolve_student_kwargs()

    def _check_teacher_refresh_interval(self) -> None:
        """``teacher_refresh_interval``: an integer >= 1, or None (with a checkpoint folder to refresh from)."""
        interval = self.teacher_refresh_interval
        if interval is None:
            return
        if isinstance(interval, bool) or not isinstance(interval, (int, np.integer)) or interval < 1:
            raise ValueError(
                f"`teacher_refresh_interval` must be an integer >= 1 (environment steps) or None, got {interval!r}"
            )
        self.teacher_refresh_interval = int(interval)
        if self.teacher is None and self.teacher_checkpoint_folder is None:
            raise ValueError(
                "`teacher_refresh_interval` reloads the teacher from the folder its training writes checkpoints into, "
                "but this model's teacher was not read from one: pass `teacher=<checkpoint folder>` too"
            )

    def _setup_online_teacher(self, folder: CheckpointFolder, loaded: LoadedTeacher) -> None:
        """Remember the checkpoint folder and the checkpoint in use; refuse teachers whose statistics move."""
        if loaded.preprocessing.normalizes or folder.normalizes():
            raise ValueError(
                f"The teacher in {str(folder.path)!r} is trained with VecNormalize, whose statistics change as it "
                "trains: online distillation (`teacher_refresh_interval`) does not support it; distil a saved "
                "checkpoint instead (`teacher_refresh_interval=None`)"
            )
        self.teacher_checkpoint_folder = str(folder.path)
        self.teacher_checkpoint_steps = checkpoint_steps(loaded.path)
        self._last_teacher_refresh = 0

    def refresh_teacher(self) -> bool:
        """
        Online distillation: load the newest complete checkpoint of the teacher's folder into ``policy.teacher``
        if it is newer than the one in use (unreadable files are skipped with a warning). Called every
        ``teacher_refresh_interval`` steps during ``learn()``.

        :return: whether a newer checkpoint was loaded
        """
        if self.teacher_checkpoint_folder is None:
            raise ValueError("`refresh_teacher()` needs a teacher read from a checkpoint folder (`teacher_refresh_interval`)")
        self._last_teacher_refresh = self.num_timesteps
        folder = CheckpointFolder(pathlib.Path(self.teacher_checkpoint_folder))
        in_use = -1 if self.teacher_checkpoint_steps is None else self.teacher_checkpoint_steps
        newest = folder.newest_checkpoint(newer_than=in_use, device=self.device)
        if newest is None:
            return False
        steps, path, policy_state = newest
        try:
            self.policy.teacher.load_state_dict(policy_state)
        except RuntimeError as error:
            message = f"The teacher checkpoint {str(path)!r} holds another network than the teacher's: {error}"
            raise ValueError(message) from error
        self.teacher_checkpoint_steps = steps
        if self.verbose >= 1:
            print(f"Teacher refreshed from {path} ({steps} steps)")
        return True

    def _on_step(self) -> None:
        super()._on_step()
        interval = self.teacher_refresh_interval
        if interval is not None and self.num_timesteps - self._last_teacher_refresh >= interval:
            self.refresh_teacher()

    def _check_teacher_spaces(self, teacher: BaseAlgorithm) -> None:
        """A ``ValueError`` if the teacher does not see and act in this model's spaces."""
        for space_name in ("observation_space", "action_space"):
            teacher_space, space = getattr(teacher, space_name), getattr(self, space_name)
            if teacher_space != space:
                raise ValueError(
                    f"The teacher's {space_name} {teacher_space} differs from the env's {space}: the student "
                    "must see and act in the teacher's spaces (use the teacher's env wrappers)"
                )

    def _resolve_student_kwargs(self) -> dict[str, Any]:
        """The student policy's keyword arguments: the defaults for the teacher's network, then the user's."""
        # The student's description: any keyword of its policy class but the spaces and schedule
        accepted_keys = [
            name
            for name in inspect.signature(self.student_policy_class.__init__).parameters
            if name not in ("self", "observation_space", "action_space", "lr_schedule")
        ]
        check_student_policy_kwargs(self.student_policy_kwargs, accepted_keys=accepted_keys)
        features_extractor_class = self.teacher_policy_kwargs.get("features_extractor_class")
        student_kwargs: dict[str, Any] = {
            **(default_student_kwargs(features_extractor_class) if features_extractor_class is not None else {}),
            # The teacher's image normalization and number of critics (head-to-head value distillation;
            # DDPG has one), unless given
            **{
                key: self.teacher_policy_kwargs[key]
                for key in ("normalize_images", "n_critics")
                if key in self.teacher_policy_kwargs
            },
            **(self.student_policy_kwargs or {}),
        }
        if self.student_policy_kwargs is not None and "features_extractor_class" in self.student_policy_kwargs:
            if "features_extractor_kwargs" not in self.student_policy_kwargs:
                student_kwargs.pop("features_extractor_kwargs", None)
        return student_kwargs

    def _check_distillation_arguments(self) -> None:
        """Validate the distillation arguments (here, not in ``__init__``: ``load()`` and rl-zoo3 bypass it)."""
        adapter = self.policy.teacher_adapter
        name = self.teacher_algorithm.__name__ if self.teacher_algorithm is not None else type(adapter).__name__
        if self.loss is None:
            self.distill_loss = adapter.losses[0]
        elif self.loss not in adapter.losses:
            raise ValueError(f"`loss` must be one of {adapter.losses} for a {name} teacher, got {self.loss!r}")
        else:
            self.distill_loss = self.loss
        if self.temperature is None:
            self.distill_temperature = adapter.default_temperature
        else:
            check_temperature(self.temperature)
            self.distill_temperature = float(self.temperature)
            if not adapter.is_discrete:
                warnings.warn(f"`temperature` is not used by continuous ({name}) teachers")
        if self.control not in CONTROL_POLICIES:
            raise ValueError(f"`control` must be one of {CONTROL_POLICIES}, got {self.control!r}")
        for progress in (1.0, 0.0):
            beta = self.teacher_prob(progress) if callable(self.teacher_prob) else self.teacher_prob
            if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
                raise ValueError(
                    f"`teacher_prob` must be a float in [0, 1] or a schedule with values in [0, 1], got {self.teacher_prob!r}"
                )
        if self.value_coef > 0 and isinstance(adapter, DQNTeacher):
            warnings.warn("`value_coef` is not used for Q-value teachers (DQN, QR-DQN): their Q-values are the policy")
            self.value_coef = 0.0
        n_critics = (self.teacher_policy_kwargs.get("n_critics"), self._student_kwargs.get("n_critics"))
        if self.value_coef > 0 and n_critics[0] != n_critics[1]:
            raise ValueError(
                f"`value_coef > 0` distills the teacher's {n_critics[0]} Q heads head to head: the student's "
                f"`n_critics` must be the same, got {n_critics[1]}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"`max_grad_norm` must be a number > 0 or None, got {self.max_grad_norm!r}")

    def _excluded_save_params(self) -> list[str]:
        # The teacher model is not pickled: its weights are in `policy.teacher`, its description in `teacher_policy_*`
        return [*super()._excluded_save_params(), "teacher", "teacher_prob_schedule", "_new_teacher", "_new_teacher_state"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _control_mask(self, n_envs: int) -> np.ndarray:
        """Which envs the teacher drives at this step (True) and which the student (or the uniform policy) drives."""
        if self.control == "teacher":
            return np.ones(n_envs, dtype=bool)
        if self.control in ("student", "uniform"):
            return np.zeros(n_envs, dtype=bool)
        return np.random.rand(n_envs) < self.teacher_prob_schedule(self._current_progress_remaining)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: ActionNoise | None = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        The control policy's actions (no random warm-up: the teacher or student acts from the first step).

        :param learning_starts: unused
        :param action_noise: noise added to the scaled Box actions
        :param n_envs: number of envs
        :return: the actions for the env and the (scaled) actions for the replay buffer
        """
        assert self._last_obs is not None, "self._last_obs was not set"
        by_teacher = self._control_mask(n_envs)
        actions = None
        if self.control == "uniform":
            # The uniform control policy: uniformly random actions
            actions = np.array([self.action_space.sample() for _ in range(n_envs)])
        # Both policies see the observations through the teacher's preprocessing
        observations = self.policy.normalize_obs(self._last_obs)  # type: ignore[arg-type]
        for member, mask in ((self.policy.teacher, by_teacher), (self.policy.student, ~by_teacher)):
            if mask.any() and self.control != "uniform":
                if member is self.policy.student and self._softmax_student():
                    member_actions = self._softmax_student_actions(observations)
                else:
                    member_actions, _ = member.predict(observations, deterministic=self.deterministic_control)  # type: ignore[arg-type]
                if actions is None:
                    actions = member_actions
                else:
                    actions[mask] = member_actions[mask]
        assert actions is not None
        self._teacher_steps += int(by_teacher.sum())
        self._control_steps += n_envs
        if isinstance(self.action_space, spaces.Box):
            scaled_action = self.policy.scale_action(actions)
            if action_noise is not None:
                scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
            return self.policy.unscale_action(scaled_action), scaled_action
        return actions, actions

    def _softmax_student(self) -> bool:
        """Whether the student acts by sampling from ``softmax(q / temperature)`` (a Q-value student, not greedy)."""
        return isinstance(self.policy.student_adapter, DQNTeacher) and not self.deterministic_control

    def _softmax_student_actions(self, observations: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """
        A Q-value student's actions sampled from its softmax policy ``softmax(q / temperature)``.

        :param observations: the observations, preprocessed as the teacher's were, shape (n_envs, ...)
        :return: the actions, shape (n_envs,)
        """
        self.policy.set_training_mode(False)
        obs_tensor, _ = self.policy.obs_to_tensor(observations)
        with th.no_grad():
            q_values, _ = self.policy.student_adapter.outputs(obs_tensor)
        if not bool(q_values.isfinite().all()):
            raise ValueError(
                f"The student's Q-values are not finite at step {self.num_timesteps}: a NaN or infinite observation "
                "(wrap the env with SB3's `VecCheckNan` to find it) or diverged weights"
            )
        with th.no_grad():
            actions = th.distributions.Categorical(logits=q_values / self.distill_temperature).sample()
        return actions.cpu().numpy()

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        self._teacher_steps = 0
        self._control_steps = 0
        result = super()._setup_learn(*args, **kwargs)
        # Steps counted from 0 again: so is the refresh interval
        self._last_teacher_refresh = min(self._last_teacher_refresh, self.num_timesteps)
        return result

    def _losses(self, observations: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """The distillation loss of the student on a batch, and the value loss (None with ``value_coef=0``)."""
        teacher, student = self.policy.teacher_adapter, self.policy.student_adapter
        # The buffer holds raw observations: apply the teacher's frozen normalisation
        observations = self.policy.obs_normalizer(observations)
        with th.no_grad():
            teacher_out, teacher_log_std = teacher.outputs(observations)
        student_out, student_log_std = student.outputs(observations)
        if teacher.is_discrete:
            loss = distillation_loss(student_out, teacher_out, loss=self.distill_loss, temperature=self.distill_temperature)
        else:
            loss = gaussian_distillation_loss(
                student_out, student_log_std, teacher_out, teacher_log_std, loss=self.distill_loss
            )
        if self.value_coef == 0:
            return loss, None
        with th.no_grad():
            teacher_values = teacher.critic_values(observations, actions)
        student_values = student.critic_values(observations, actions)
        return loss, (student_values - teacher_values).pow(2).mean()

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rate according to schedule
        self._update_learning_rate(self.policy.optimizer)

        distill_losses: list[th.Tensor] = []
        value_losses: list[th.Tensor] = []
        for _ in range(gradient_steps):
            # Sample replay buffer: only the states (and, for value distillation, the actions) are used
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            loss, value_loss = self._losses(replay_data.observations, replay_data.actions)  # type: ignore[arg-type]
            # Kept as tensors: no device synchronisation per step
            distill_losses.append(loss.detach())
            if value_loss is not None:
                value_losses.append(value_loss.detach())
                loss = loss + self.value_coef * value_loss

            # Optimize the student
            self.policy.optimizer.zero_grad()
            loss.backward()
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.student_trainable_parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        # Stop on a NaN or infinite loss (one device synchronisation per call)
        losses = {"distill_loss": (["student"], th.stack(distill_losses))}
        if value_losses:
            losses["value_loss"] = (["student"], th.stack(value_losses))
        check_finite_losses(losses, self._n_updates)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/distill_loss", th.stack(distill_losses).mean().item())
        if value_losses:
            self.logger.record("train/value_loss", th.stack(value_losses).mean().item())
        if self._control_steps > 0:
            self.logger.record("rollout/teacher_fraction", self._teacher_steps / self._control_steps)
        if self.teacher_checkpoint_steps is not None:
            self.logger.record("train/teacher_checkpoint_steps", self.teacher_checkpoint_steps)

    def learn(
        self: SelfPolicyDistillation,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PolicyDistillation",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPolicyDistillation:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    @property
    def compression_ratio(self) -> float:
        """The student's parameters that acting needs, as a fraction of the teacher's (``Teacher.acting_parameter_count``)."""
        return self.policy.student_adapter.acting_parameter_count() / self.policy.teacher_adapter.acting_parameter_count()

    def evaluate_members(self, env: GymEnv, n_eval_episodes: int = 10) -> dict[str, tuple[float, float]]:
        """
        Evaluate the teacher and the student, each acting deterministically, with SB3's ``evaluate_policy``.

        :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
        :param n_eval_episodes: Number of episodes per member
        :return: ``{"teacher": (mean, std), "student": (mean, std)}``
        """
        if n_eval_episodes < 1:
            raise ValueError(f"`n_eval_episodes` must be a positive integer, got {n_eval_episodes!r}")
        self.policy.set_training_mode(False)
        results = {}
        for name, member in (("teacher", self.policy.teacher), ("student", self.policy.student)):
            # Both see the env's raw observations through the teacher's preprocessing, as in training
            acting = PreprocessedPolicy(member, self.teacher_preprocessing)
            mean, std = evaluate_policy(acting, env, n_eval_episodes=n_eval_episodes, warn=False)  # type: ignore[arg-type]
            results[name] = (float(mean), float(std))  # type: ignore[arg-type]
        return results

    def export_student(
        self, learning_rate: float | Schedule | None = None, path: str | pathlib.Path | None = None
    ) -> BaseAlgorithm:
        """
        The student as a plain SB3 model of the natural kind: ``DQN`` for a DQN or QR-DQN teacher, ``PPO`` /
        ``A2C`` for those teachers, ``SAC`` / ``TD3`` / ``DDPG`` for those. It ``save()``s and reloads with the
        plain SB3 class, predicts what this model predicts, and can be trained further (attach an env with
        ``set_env``). Its target networks are copies of the student's networks. Networks the distillation
        did not train (the critics of a SAC/TD3/DDPG student, the value head of a PPO/A2C student, unless
        ``value_coef > 0``) keep their fresh initialisation.

        The student expects observations preprocessed as the teacher's were: with ``path``, the model is saved
        there and the preprocessing beside it as rl-zoo3 writes it (``<dir>/<name>/vecnormalize.pkl`` and
        ``config.yml`` for ``<dir>/<name>.zip``), which ``load_teacher`` and rl-zoo3's ``enjoy`` read; in Python,
        ``model.teacher_preprocessing.vec_normalize(venv)`` builds the frozen ``VecNormalize`` to play in.

        :param learning_rate: the exported model's learning rate (default: the algorithm's default)
        :param path: where to save the student and its preprocessing (None: not saved)
        :return: the SB3 model, with no environment attached
        """
        algorithm = self.student_algorithm
        algorithm_kwargs: dict[str, Any] = {} if learning_rate is None else {"learning_rate": learning_rate}
        if "target_entropy" in inspect.signature(algorithm.__init__).parameters:
            # SAC's (and TQC's) "auto" target entropy reads the env, which an exported model does not have
            algorithm_kwargs["target_entropy"] = -float(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        exported = model_for_export(
            algorithm,
            self.student_policy_class,
            self._student_kwargs,
            self.observation_space,
            self.action_space,
            device=self.device,
            seed=self.seed,
            **algorithm_kwargs,
        )
        exported.policy.load_state_dict(self.policy.student.state_dict())
        # Target networks start as copies of the trained networks
        for online, target in (("q_net", "q_net_target"), ("critic", "critic_target"), ("actor", "actor_target")):
            if hasattr(exported.policy, target):
                getattr(exported.policy, target).load_state_dict(getattr(exported.policy, online).state_dict())
        if path is not None:
            save_exported(exported, path, self.teacher_preprocessing, self.observation_space, self.action_space)
        return exported


def _teacher_source(teacher: Any, teacher_refresh_interval: Any) -> Any:
    """What to load the teacher from: for online distillation, the folder of its checkpoints."""
    return teacher if teacher_refresh_interval is None else as_checkpoint_folder(teacher)


#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
NUMBERS = {
    **OFF_POLICY_NUMBERS,
    "temperature": Number(low=0, low_open=True, optional=True, meaning="the softmax temperature tau; None: by teacher"),
    "teacher_prob": TEACHER_PROB,
    "value_coef": Number(low=0, meaning="the weight of the value loss"),
    "max_grad_norm": Number(low=0, low_open=True, optional=True, meaning="None: no clipping"),
    "deterministic_control": Flag(),
}
