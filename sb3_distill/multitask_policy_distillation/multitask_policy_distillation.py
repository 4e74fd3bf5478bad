import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_distill.common.base import PolicyLayoutMixin
from sb3_distill.common.losses import DISTILLATION_LOSSES, check_temperature, distillation_loss
from sb3_distill.common.multitask import MultiTaskVecEnv, pad_observations, padded_indices, unpad_observations
from sb3_distill.common.save import AtomicSaveMixin, save_exported
from sb3_distill.common.teachers import (
    LoadedTeacher,
    PreprocessedPolicy,
    Teacher,
    TeacherPreprocessing,
    check_env_preprocessing,
    load_teacher,
    make_teacher_env,
    teacher_algorithm_of,
)
from sb3_distill.common.torch_layers import count_parameters
from sb3_distill.common.utils import model_for_export
from sb3_distill.common.validation import (
    OFF_POLICY_NUMBERS,
    TEACHER_PROB,
    CheckedSchedule,
    Flag,
    Number,
    check_arguments,
    check_finite_losses,
    check_net_arch,
)
from sb3_distill.multitask_policy_distillation.policies import MultiInputPolicy, MultiTaskDistillationPolicy

SelfMultiTaskPolicyDistillation = TypeVar("SelfMultiTaskPolicyDistillation", bound="MultiTaskPolicyDistillation")

#: Who acts while data is collected (as PolicyDistillation)
CONTROL_POLICIES = ("teacher", "student", "mixture")
#: The student trunk's default on vectors: one DQN teacher's size (SB3's [64, 64]), as Rusu's multi-task network
DEFAULT_NET_ARCH = [64, 64]
#: What ``student_policy_kwargs`` describes: the shared trunk (the heads are one linear layer per task)
STUDENT_KEYS = ("net_arch", "activation_fn", "features_extractor_class", "features_extractor_kwargs", "normalize_images")


class MultiTaskPolicyDistillation(AtomicSaveMixin, PolicyLayoutMixin, OffPolicyAlgorithm):
    """
    Multi-task policy distillation (Rusu et al. 2015, "Policy Distillation", arXiv:1511.06295):
    several single-task teachers, one per task, distilled into one student with a shared trunk and one output
    head per task, the task being known when training and when acting (Rusu's multi-game network reached a
    geometric mean of 89.3 % of the single-game DQNs over 10 Atari games).

    How it fits SB3: the tasks' envs are combined into one
    :class:`~sb3_distill.common.multitask.MultiTaskVecEnv` that steps every task together (each task gets the
    same number of steps), with ``Dict`` observations ``{"obs": the task's observation zero-padded to a common
    shape, "task": its index}``. This is then a plain off-policy algorithm on that env: SB3's ``learn`` loop,
    callbacks, logger, save/load and replay buffer work unchanged, and ``predict()`` takes the multi-task env's
    observations; ``predict(obs, task=name)`` takes one task's own observations. Each environment step is taken
    by the control policy of the env's task (its teacher, the student's head of that task, or a mixture). Each
    gradient step draws ``batch_size / n_tasks`` states of every task from the replay buffer (balanced
    sampling: Rusu kept one replay memory per game), labels them with that task's teacher and takes one step on
    the mean over tasks of ``loss(student_head_k(s), teacher_k(s))``.

    Supported: teachers with Discrete actions whose scores are Q-values (DQN, QR-DQN) or logits (PPO, A2C), on
    ``Box`` observations: vectors, or channel-first images (all tasks one kind). Box actions are not supported.
    Vector tasks may differ in observation length (the shorter ones are zero-padded at the end of every axis, to
    the largest size along each axis); image tasks must share height and width and may differ in their number of
    channels (e.g. MinAtar's games, 4 to 10 channels of 10x10: the channels are zero-padded at the end to the
    largest count, the images stay ``uint8``). The padding is exact for the exported students, whose first layer
    keeps the weights of the task's own inputs (columns of a first linear layer, input channels of a first
    convolution). Tasks may differ in their number of actions (one head each). The student is a shared trunk, a
    features extractor (SB3's ``FlattenExtractor`` on vectors, a CNN on images) then the hidden layers
    ``net_arch``, with one linear head per task; each task's student is exported as a plain SB3 ``DQN`` (trunk +
    that head; for a logit teacher its "Q-values" are logits, whose argmax is the policy).

    :param policy: The policy model to use: ``"MultiInputPolicy"`` (the multi-task env's observations are a
        ``Dict``; the student is an MLP trunk with one head per task)
    :param env: None (default): built from ``teachers`` and ``envs``; or a ready
        :class:`~sb3_distill.common.multitask.MultiTaskVecEnv` with the same tasks in the same order
    :param teachers: Task name -> the task's trained teacher: anything
        :func:`~sb3_distill.common.teachers.load_teacher` takes (an SB3 model, the path to its ``.zip``, an rl-zoo3
        experiment folder, a ``CheckpointFolder``). The teachers' weights are copied into this model's policy
        and saved with it, so that ``load()`` needs no teacher.
    :param envs: Task name -> its env: an env id, a gymnasium env or a ``VecEnv`` with ``n_envs_per_task`` envs.
        A task without an entry uses its name as env id. Env ids get the teacher's rl-zoo3 wrappers and frame
        stacking; the teacher's frozen ``VecNormalize`` statistics are applied by the multi-task env.
    :param n_envs_per_task: Number of envs of each task built from an env id
    :param learning_rate: The student's learning rate, it can be a function of the current progress
        remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer of control-policy states, all tasks together
        (``buffer_size / n_tasks`` per task)
    :param learning_starts: how many steps (all tasks together) of the control policy to collect before
        distillation starts (no random warm-up)
    :param batch_size: Minibatch size of each distillation step, split equally across tasks (at least one
        state per task)
    :param tau: unused (no target network), kept for SB3's signature
    :param gamma: unused (no TD learning), kept for SB3's signature
    :param train_freq: Update the student every ``train_freq`` steps of the multi-task env. Alternatively pass a
        tuple of frequency and unit like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many distillation steps to do after each rollout (see ``train_freq``);
        ``-1`` means as many as environment steps done in the rollout
    :param loss: The distillation loss of every task: ``"forward_kl"`` (KL(teacher || student), Rusu's choice
        and the default), ``"reverse_kl"``, ``"nll"`` (of the teacher's greedy action) or ``"mse"`` (on the
        scores). See :mod:`sb3_distill.common.losses`.
    :param temperature: Softmax temperature tau of the losses (both teacher and student scores are divided by
        it). ``None``: each teacher's default, 0.01 for Q-value teachers (Rusu et al.) and 1 for logit teachers.
    :param control: Who acts in each task's envs: ``"student"`` (student-driven, the default, as
        PolicyDistillation), ``"teacher"`` (teacher-driven, Rusu et al.), or ``"mixture"`` (each env step is the
        teacher's with probability ``teacher_prob``)
    :param teacher_prob: beta of the ``"mixture"`` control: the probability that the teacher takes a step,
        a float in [0, 1] or a schedule of the progress remaining (from 1 to 0)
    :param deterministic_control: Whether a logit teacher acts by its mode instead of sampling (SB3's
        ``deterministic``); Q-value teachers and the student are greedy either way
    :param student_policy_kwargs: The student's shared trunk, with the keys of DQN's ``policy_kwargs``:
        ``features_extractor_class`` and ``features_extractor_kwargs`` (vectors: ``FlattenExtractor``; images: a
        CNN, by default the first teacher's extractor and its kwargs, one teacher's size as Rusu's multi-task
        network), ``net_arch`` (the hidden layers after the extractor; default ``[64, 64]`` on vectors, one DQN
        teacher's size, and the first teacher's ``net_arch`` on images), ``activation_fn`` (default ``nn.ReLU``)
        and ``normalize_images`` (default: the first teacher's, True for SB3's ``CnnPolicy``). The layout is
        decided once from these, saved with the model, and never changed by ``load()``.
    :param max_grad_norm: The maximum value for the gradient clipping of the student (None: no clipping)
    :param stats_window_size: Window size for the rollout logging (episodes of all tasks together)
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments of the student's optimizer: ``optimizer_class`` and
        ``optimizer_kwargs``
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": MultiInputPolicy}
    # The student's trunk is sized by `student_policy_kwargs`: `load(path, student_policy_kwargs=other)` is refused
    # clearly (PolicyLayoutMixin.load) instead of failing on mismatched weights
    layout_arguments: ClassVar[dict[str, str]] = {"student_policy_kwargs": "student_policy_kwargs"}
    policy: MultiTaskDistillationPolicy
    replay_buffer: DictReplayBuffer
    tasks: list[str]
    task_env_ids: dict[str, str | None]
    teacher_algorithms: list[type[BaseAlgorithm] | None]
    teacher_preprocessings: list[TeacherPreprocessing]
    teacher_policy_classes: list[type[BasePolicy]]
    teacher_policy_kwargs: list[dict[str, Any]]
    task_observation_spaces: list[spaces.Box]
    task_action_spaces: list[spaces.Discrete]
    distill_temperatures: list[float]
    _new_teacher_states: list[dict[str, th.Tensor]] | None

    def __init__(
        self,
        policy: str | type[MultiTaskDistillationPolicy] = "MultiInputPolicy",
        env: MultiTaskVecEnv | None = None,
        teachers: dict[str, Any] | None = None,
        envs: dict[str, Any] | None = None,
        n_envs_per_task: int = 1,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        batch_size: int = 64,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        replay_buffer_class: type[DictReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        loss: str = "forward_kl",
        temperature: float | None = None,
        control: str = "student",
        teacher_prob: float | Schedule = 0.5,
        deterministic_control: bool = False,
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
        if env is None and teachers is not None:
            # The teachers decide each task's wrappers and normalisation: load them once, here
            teachers = load_teachers(teachers)
            env = make_multitask_env(teachers, envs, n_envs_per_task)
        elif env is not None and not isinstance(env, MultiTaskVecEnv):
            raise ValueError(
                f"`env` of MultiTaskPolicyDistillation is the MultiTaskVecEnv built from `teachers` and `envs`, got "
                f"{type(env).__name__}: give each task's env in `envs` instead"
            )
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
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            support_multi_env=True,
            supported_action_spaces=(spaces.Discrete,),
        )
        self.teachers = teachers
        self.task_env_ids = dict(env.env_ids) if env is not None else {}
        self.loss = loss
        self.temperature = temperature
        self.control = control
        self.teacher_prob = teacher_prob
        self.deterministic_control = deterministic_control
        self.student_policy_kwargs = student_policy_kwargs
        self.max_grad_norm = max_grad_norm
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        check_arguments(self, NUMBERS)
        self._setup_teachers()
        unknown = sorted(set(self.policy_kwargs) - {"optimizer_class", "optimizer_kwargs"})
        if unknown:
            raise ValueError(
                f"`policy_kwargs` of MultiTaskPolicyDistillation only sets the student's optimizer (`optimizer_class`, "
                f"`optimizer_kwargs`), got {unknown}; describe the student's network with `student_policy_kwargs`"
            )
        student_kwargs = self._student_kwargs()
        # The networks are described by the teachers and the student (`policy_kwargs` stays the user's)
        user_policy_kwargs = self.policy_kwargs
        self.policy_kwargs = dict(
            tasks=self.tasks,
            task_observation_spaces=self.task_observation_spaces,
            task_action_spaces=self.task_action_spaces,
            teacher_policy_classes=self.teacher_policy_classes,
            teacher_policy_kwargs=self.teacher_policy_kwargs,
            **student_kwargs,
            **user_policy_kwargs,
        )
        super()._setup_model()
        self.policy_kwargs = user_policy_kwargs
        self._check_distillation_arguments()
        if self._new_teacher_states is not None:
            for teacher, state in zip(self.policy.teachers, self._new_teacher_states, strict=True):
                teacher.load_state_dict(state)
            self._new_teacher_states = None
        self.teacher_prob_schedule = CheckedSchedule(self.teacher_prob, "teacher_prob", TEACHER_PROB)

    def _setup_teachers(self) -> None:
        """Load the teachers if given, check them against the tasks' envs and derive their description."""
        self._new_teacher_states = None
        if self.teachers is None:
            if not hasattr(self, "teacher_policy_classes"):
                raise ValueError(
                    "`teachers` is required: a dict of task name -> trained SB3 model, path to its .zip or rl-zoo3 folder"
                )
            return
        loaded = load_teachers(self.teachers, device=self.device)
        self.teachers = None  # the weights are copied into the policy: the models are not kept
        for task, teacher in loaded.items():
            adapter = Teacher.for_policy(teacher.model.policy)
            if not adapter.is_discrete:
                raise ValueError(
                    f"The teacher of task {task!r} is a {type(adapter).__name__} with {teacher.model.action_space} actions: "
                    "multi-task distillation supports Discrete-action teachers only (Q-values or logits)"
                )
        self.tasks = list(loaded)
        models = [teacher.model for teacher in loaded.values()]
        self.teacher_algorithms = [teacher_algorithm_of(model) for model in models]
        self.teacher_preprocessings = [teacher.preprocessing for teacher in loaded.values()]
        self.teacher_policy_classes = [type(model.policy) for model in models]
        self.teacher_policy_kwargs = [
            {
                key: value
                for key, value in model.policy._get_constructor_parameters().items()
                if key not in ("observation_space", "action_space", "lr_schedule")
            }
            for model in models
        ]
        self.task_observation_spaces = [model.observation_space for model in models]  # type: ignore[misc]
        self.task_action_spaces = [model.action_space for model in models]  # type: ignore[misc]
        if self.env is not None:
            _check_env_tasks(self.env, loaded)
        self._new_teacher_states = [model.policy.state_dict() for model in models]

    def _student_kwargs(self) -> dict[str, Any]:
        """
        The student trunk's full description (every key of :data:`STUDENT_KEYS`): the defaults, then the user's
        (decided from the saved arguments alone, so that ``load()`` rebuilds the same layout).
        """
        kwargs = self.student_policy_kwargs
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"`student_policy_kwargs` must be a dict or None, got {type(kwargs).__name__}")
        unknown = sorted(set(kwargs) - set(STUDENT_KEYS))
        if unknown:
            raise ValueError(
                f"`student_policy_kwargs` has unknown keys {unknown}: the multi-task student's trunk takes "
                f"{list(STUDENT_KEYS)}"
            )
        defaults = self._default_student_kwargs()
        if "features_extractor_class" in kwargs:
            defaults["features_extractor_kwargs"] = {}
        resolved = {**defaults, **kwargs}
        check_net_arch(resolved["net_arch"], "student_policy_kwargs['net_arch']")
        resolved["net_arch"] = [int(size) for size in resolved["net_arch"]]
        return resolved

    def _default_student_kwargs(self) -> dict[str, Any]:
        """Vectors: an MLP trunk of one DQN teacher's size; images: the first teacher's network (one teacher's size)."""
        if not is_image_space(self.task_observation_spaces[0]):
            return dict(
                net_arch=list(DEFAULT_NET_ARCH),
                activation_fn=nn.ReLU,
                features_extractor_class=FlattenExtractor,
                features_extractor_kwargs={},
                normalize_images=True,
            )
        teacher_kwargs = self.teacher_policy_kwargs[0]
        net_arch = teacher_kwargs.get("net_arch")
        return dict(
            # An actor-critic's dict(pi=..., vf=...) is not a trunk: no hidden layer after the CNN then
            net_arch=list(net_arch) if isinstance(net_arch, (list, tuple)) else [],
            activation_fn=teacher_kwargs.get("activation_fn", nn.ReLU),
            features_extractor_class=teacher_kwargs.get("features_extractor_class", NatureCNN),
            features_extractor_kwargs=dict(teacher_kwargs.get("features_extractor_kwargs") or {}),
            normalize_images=teacher_kwargs.get("normalize_images", True),
        )

    def _check_distillation_arguments(self) -> None:
        """Validate the distillation arguments (here, not in ``__init__``: ``load()`` and rl-zoo3 bypass it)."""
        if self.loss not in DISTILLATION_LOSSES:
            raise ValueError(f"`loss` must be one of {DISTILLATION_LOSSES}, got {self.loss!r}")
        if self.temperature is None:
            self.distill_temperatures = [adapter.default_temperature for adapter in self.policy.teacher_adapters]
        else:
            check_temperature(self.temperature)
            self.distill_temperatures = [float(self.temperature)] * len(self.tasks)
        if self.control not in CONTROL_POLICIES:
            raise ValueError(f"`control` must be one of {CONTROL_POLICIES}, got {self.control!r}")
        if self.batch_size < len(self.tasks):
            warnings.warn(
                f"`batch_size` {self.batch_size} < {len(self.tasks)} tasks: each gradient step uses one state per task"
            )

    def _excluded_save_params(self) -> list[str]:
        # The teacher models are not pickled: their weights are in `policy.teachers`
        return [*super()._excluded_save_params(), "teachers", "teacher_prob_schedule", "_new_teacher_states"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def _control_mask(self, n_envs: int) -> np.ndarray:
        """Which envs the teacher of their task drives at this step (True) and which the student drives (False)."""
        if self.control == "teacher":
            return np.ones(n_envs, dtype=bool)
        if self.control == "student":
            return np.zeros(n_envs, dtype=bool)
        return np.random.rand(n_envs) < self.teacher_prob_schedule(self._current_progress_remaining)

    def _sample_action(self, learning_starts: int, action_noise: Any = None, n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """
        The control policy's actions: each env's task teacher or the student's head of that task.

        :param learning_starts: unused (no random warm-up)
        :param action_noise: unused (Discrete actions)
        :param n_envs: number of envs
        :return: the actions for the env and for the replay buffer
        """
        assert isinstance(self._last_obs, dict), "MultiTaskVecEnv observations are a dict"
        by_teacher = self._control_mask(n_envs)
        tasks = self._last_obs["task"].reshape(-1)
        actions = np.zeros(n_envs, dtype=np.int64)
        if not by_teacher.all():
            actions, _ = self.policy.predict(self._last_obs, deterministic=True)  # type: ignore[arg-type, assignment]
        for task, teacher in enumerate(self.policy.teachers):
            rows = by_teacher & (tasks == task)
            if rows.any():
                space = self.task_observation_spaces[task]
                observations = unpad_observations(self._last_obs["obs"][rows], space.shape).astype(space.dtype)
                actions[rows] = teacher.predict(observations, deterministic=self.deterministic_control)[0]  # type: ignore[operator]
        self._teacher_steps += int(by_teacher.sum())
        self._control_steps += n_envs
        return actions, actions

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        self._teacher_steps = 0
        self._control_steps = 0
        return super()._setup_learn(*args, **kwargs)

    def _sample_task_observations(self, task: int, n_samples: int) -> th.Tensor:
        """
        ``n_samples`` padded observations of one task from the replay buffer (its envs' columns).

        :param task: the task's index
        :param n_samples: how many
        :return: shape (n_samples, *padded shape)
        """
        buffer = self.replay_buffer
        n_envs_per_task = buffer.n_envs // len(self.tasks)
        upper = buffer.buffer_size if buffer.full else buffer.pos
        batch_indices = np.random.randint(0, upper, size=n_samples)
        env_indices = task * n_envs_per_task + np.random.randint(0, n_envs_per_task, size=n_samples)
        return buffer.to_torch(buffer.observations["obs"][batch_indices, env_indices])

    def _losses(self, observations: list[th.Tensor]) -> th.Tensor:
        """
        Each task's distillation loss, ``loss(student_head_k(s), teacher_k(s))`` on its states.

        :param observations: each task's padded observations, shape (n_samples, *padded shape)
        :return: the losses, shape (n_tasks,)
        """
        # One pass of the shared trunk on every task's states: (n_tasks * n_samples, features_dim)
        features = self.policy.student.features(th.cat(observations)).split([len(obs) for obs in observations])
        losses = []
        for task, (adapter, task_obs, task_features) in enumerate(
            zip(self.policy.teacher_adapters, observations, features, strict=True)
        ):
            with th.no_grad():
                teacher_scores, _ = adapter.outputs(unpad_observations(task_obs, self.task_observation_spaces[task].shape))
            student_scores = self.policy.student.heads[task](task_features)
            losses.append(
                distillation_loss(student_scores, teacher_scores, loss=self.loss, temperature=self.distill_temperatures[task])
            )
        return th.stack(losses)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rate according to schedule
        self._update_learning_rate(self.policy.optimizer)

        # Balanced sampling: the same number of states of every task in each batch
        n_samples = max(batch_size // len(self.tasks), 1)
        task_losses: list[th.Tensor] = []
        for _ in range(gradient_steps):
            observations = [self._sample_task_observations(task, n_samples) for task in range(len(self.tasks))]
            losses = self._losses(observations)
            # Kept as tensors: no device synchronisation per step
            task_losses.append(losses.detach())

            # Optimize the student on the mean over tasks
            self.policy.optimizer.zero_grad()
            losses.mean().backward()
            if self.max_grad_norm is not None:
                th.nn.utils.clip_grad_norm_(self.policy.student.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()

        # One synchronisation: a NaN or infinite loss (e.g. from a bad observation) stops training, naming the task
        check_finite_losses({"distill_loss": (self.tasks, th.stack(task_losses))}, self._n_updates)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        mean_losses = th.stack(task_losses).mean(dim=0).tolist()
        self.logger.record("train/distill_loss", float(np.mean(mean_losses)))
        for task, task_loss in zip(self.tasks, mean_losses, strict=True):
            self.logger.record(f"train/distill_loss/{task}", task_loss)
        if self._control_steps > 0:
            self.logger.record("rollout/teacher_fraction", self._teacher_steps / self._control_steps)

    def learn(
        self: SelfMultiTaskPolicyDistillation,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "MultiTaskPolicyDistillation",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMultiTaskPolicyDistillation:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _task_index(self, task: str) -> int:
        if task not in self.tasks:
            raise ValueError(f"`task` must be one of {self.tasks}, got {task!r}")
        return self.tasks.index(task)

    def predict(  # type: ignore[override]
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        task: str | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The student's greedy action(s).

        :param observation: with ``task``: that task's own raw observation(s) (as its env gives them); without:
            the multi-task env's observation(s) ``{"obs": padded, "task": index}``
        :param state: unused (no recurrent policy)
        :param episode_start: unused
        :param deterministic: unused (the student is greedy)
        :param task: the task's name (None: read from the multi-task observation)
        :return: the action(s) and the state
        """
        if task is None:
            return super().predict(observation, state, episode_start, deterministic)
        index = self._task_index(task)
        shape = self.task_observation_spaces[index].shape
        observations = np.asarray(observation)
        if observations.shape[observations.ndim - len(shape) :] != shape or observations.ndim > len(shape) + 1:
            raise ValueError(
                f"Task {task!r} takes observations of shape {shape} (or a batch of them), got {observations.shape}"
            )
        single = observations.shape == shape
        observations = observations.reshape((-1, *shape))
        padded = self._process(index, observations)
        actions, _ = self.policy.predict({"obs": padded, "task": np.full(len(padded), index)}, deterministic=True)
        return (actions[0] if single else actions), None

    def _process(self, task: int, observations: np.ndarray) -> np.ndarray:
        """A task's raw observations as the multi-task env gives them (teacher's normalisation, padded)."""
        observations = self.teacher_preprocessings[task].normalize(observations)
        padded_space = self.observation_space["obs"]  # type: ignore[index]
        return pad_observations(observations, padded_space.shape, padded_space.dtype)

    @property
    def compression_ratio(self) -> float:
        """The student's parameters (trunk and every head) as a fraction of the sum of the teachers' acting parameters."""
        teachers = sum(adapter.acting_parameter_count() for adapter in self.policy.teacher_adapters)
        return count_parameters(self.policy.student) / teachers

    def compression_ratios(self) -> dict[str, float]:
        """
        Each task's exported student (trunk + that head, on the task's own inputs) as a fraction of that task's
        teacher (its acting parameters): the compression against one teacher.

        :return: task name -> ratio
        """
        return {
            task: count_parameters(self.export_student(task).policy.q_net) / adapter.acting_parameter_count()
            for task, adapter in zip(self.tasks, self.policy.teacher_adapters, strict=True)
        }

    def evaluate_members(
        self, env: dict[str, GymEnv] | None = None, n_eval_episodes: int = 10
    ) -> dict[str, tuple[float, float]]:
        """
        Evaluate each task's teacher and the student's head of that task, acting greedily, with SB3's
        ``evaluate_policy``.

        :param env: task name -> its evaluation env (wrap it with ``Monitor`` to count the original rewards);
            None: one env per task, built from the tasks' env ids
        :param n_eval_episodes: Number of episodes per member and task
        :return: ``{"<task>/teacher": (mean, std), "<task>/student": (mean, std), ...}``
        """
        if n_eval_episodes < 1:
            raise ValueError(f"`n_eval_episodes` must be a positive integer, got {n_eval_episodes!r}")
        eval_envs = self._evaluation_envs(env)
        self.policy.set_training_mode(False)
        results = {}
        for index, task in enumerate(self.tasks):
            # Both see the env's raw observations through the teacher's preprocessing, as in training
            members = {
                "teacher": PreprocessedPolicy(self.policy.teachers[index], self.teacher_preprocessings[index]),  # type: ignore[arg-type]
                "student": _TaskStudent(self, task),
            }
            for name, member in members.items():
                mean, std = evaluate_policy(member, eval_envs[task], n_eval_episodes=n_eval_episodes, warn=False)  # type: ignore[arg-type]
                results[f"{task}/{name}"] = (float(mean), float(std))  # type: ignore[arg-type]
        return results

    def _evaluation_envs(self, env: dict[str, GymEnv] | None) -> dict[str, GymEnv]:
        """The evaluation env of every task: given, or built from its env id."""
        envs = dict(env or {})
        for index, task in enumerate(self.tasks):
            if task not in envs:
                env_id = self.task_env_ids.get(task)
                if env_id is None:
                    raise ValueError(
                        f"Task {task!r} has no env id to build an evaluation env from: pass `env={{{task!r}: env}}`"
                    )
                envs[task] = make_teacher_env(env_id, self.teacher_preprocessings[index])
        return envs

    def make_env(self, n_envs_per_task: int = 1) -> MultiTaskVecEnv:
        """
        The multi-task env again, from the tasks' env ids (e.g. after ``load()``: ``model.set_env(model.make_env())``).

        :param n_envs_per_task: number of envs of each task
        :return: the env
        """
        task_envs = {}
        for index, task in enumerate(self.tasks):
            env_id = self.task_env_ids.get(task)
            if env_id is None:
                raise ValueError(f"Task {task!r} was given as an env object: build the MultiTaskVecEnv yourself")
            task_envs[task] = make_teacher_env(env_id, self.teacher_preprocessings[index], n_envs=n_envs_per_task)
        preprocessings = dict(zip(self.tasks, self.teacher_preprocessings, strict=True))
        return MultiTaskVecEnv(task_envs, preprocessings, self.task_env_ids)

    def export_student(
        self, task: str, learning_rate: float | Schedule | None = None, path: str | pathlib.Path | None = None
    ) -> DQN:
        """
        One task's student, the shared trunk and that task's head, as a plain SB3 ``DQN`` on the task's own spaces
        (the first layer keeps the weights of the task's own inputs: the padded ones only ever saw zeros). It
        ``save()``s and reloads with ``DQN``, predicts what ``predict(obs, task=task)`` predicts, and can be trained
        further (attach an env with ``set_env``); its target network is a copy of its Q-network.

        The student expects observations preprocessed as the task's teacher's were: with ``path``, the model is
        saved there and the preprocessing beside it as rl-zoo3 writes it (``<dir>/<name>/vecnormalize.pkl``).

        :param task: the task's name
        :param learning_rate: the exported model's learning rate (default: DQN's default)
        :param path: where to save the student and its preprocessing (None: not saved)
        :return: the DQN, with no environment attached
        """
        index = self._task_index(task)
        policy = self.policy
        algorithm_kwargs: dict[str, Any] = {} if learning_rate is None else {"learning_rate": learning_rate}
        network = dict(
            net_arch=list(policy.net_arch),
            activation_fn=policy.activation_fn,
            features_extractor_class=policy.features_extractor_class,
            features_extractor_kwargs=dict(policy.features_extractor_kwargs),
            normalize_images=policy.normalize_images,
        )
        exported = model_for_export(
            DQN,
            DQN.policy_aliases["MlpPolicy"],
            network,
            self.task_observation_spaces[index],
            self.task_action_spaces[index],
            device=self.device,
            seed=self.seed,
            **algorithm_kwargs,
        )
        state = task_q_network_state(
            policy.student, index, self.observation_space["obs"].shape, self.task_observation_spaces[index].shape  # type: ignore[index, arg-type]
        )
        exported.policy.q_net.load_state_dict(state)
        exported.policy.q_net_target.load_state_dict(exported.policy.q_net.state_dict())
        if path is not None:
            save_exported(
                exported,
                path,
                self.teacher_preprocessings[index],
                self.task_observation_spaces[index],
                self.task_action_spaces[index],
            )
        return exported


class _TaskStudent:
    """The student's head of one task, acting on the task's raw observations (for ``evaluate_policy``)."""

    def __init__(self, model: MultiTaskPolicyDistillation, task: str) -> None:
        self.model = model
        self.task = task

    def predict(self, observation: np.ndarray, *args: Any, **kwargs: Any) -> tuple[np.ndarray, None]:
        return self.model.predict(observation, task=self.task)  # type: ignore[return-value]


def load_teachers(teachers: Any, device: th.device | str = "cpu") -> dict[str, LoadedTeacher]:
    """
    Each task's teacher loaded with :func:`~sb3_distill.common.teachers.load_teacher`.

    :param teachers: task name -> anything ``load_teacher`` takes
    :param device: where to load them
    :return: task name -> the loaded teacher
    """
    if not isinstance(teachers, dict):
        raise TypeError(f"`teachers` must be a dict of task name -> teacher, got {type(teachers).__name__}")
    if not teachers:
        raise ValueError("`teachers` is empty: give at least one task name -> teacher")
    for task in teachers:
        if not isinstance(task, str):
            raise TypeError(f"`teachers` keys are task names (str), got {task!r}")
    return {task: load_teacher(teacher, device=device) for task, teacher in teachers.items()}


def make_multitask_env(
    teachers: dict[str, LoadedTeacher], envs: dict[str, Any] | None, n_envs_per_task: int
) -> MultiTaskVecEnv:
    """
    The multi-task env of the tasks of ``teachers``: each task's env from ``envs`` or its name as env id.

    :param teachers: task name -> loaded teacher (its preprocessing gives the wrappers and normalisation)
    :param envs: task name -> env id, gymnasium env or VecEnv (None: every task name is an env id)
    :param n_envs_per_task: number of envs of a task built from an env id
    :return: the env (its ``env_ids``: task name -> env id, None for an env given as an object)
    """
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    envs = dict(envs or {})
    if isinstance(n_envs_per_task, bool) or not isinstance(n_envs_per_task, (int, np.integer)) or n_envs_per_task < 1:
        raise ValueError(f"`n_envs_per_task` must be an integer >= 1, got {n_envs_per_task!r}")
    extra = sorted(set(envs) - set(teachers))
    if extra:
        raise ValueError(f"`envs` names tasks {extra} that have no teacher; the tasks are {list(teachers)}")
    task_envs: dict[str, VecEnv] = {}
    env_ids: dict[str, str | None] = {}
    for task, teacher in teachers.items():
        env = envs.get(task, task)
        if isinstance(env, str):
            if env not in gym.registry:
                raise ValueError(
                    f"Task {task!r} has no env: its name is not a registered env id and `envs` has no entry for it "
                    f"(pass `envs={{{task!r}: <env id or env>}}`)"
                )
            env_ids[task] = env
            task_envs[task] = make_teacher_env(env, teacher.preprocessing, n_envs=int(n_envs_per_task))
        else:
            env_ids[task] = None
            task_envs[task] = env if isinstance(env, VecEnv) else make_vec_env(lambda env=env: env, n_envs=1)
            check_env_preprocessing(task_envs[task], teacher.preprocessing)
    _check_spaces(task_envs, teachers)
    return MultiTaskVecEnv(task_envs, {task: teacher.preprocessing for task, teacher in teachers.items()}, env_ids)


def _check_spaces(task_envs: dict[str, VecEnv], teachers: dict[str, LoadedTeacher]) -> None:
    """A ``ValueError`` if a teacher does not see and act in its task env's spaces."""
    for task, env in task_envs.items():
        for space_name in ("observation_space", "action_space"):
            teacher_space, env_space = getattr(teachers[task].model, space_name), getattr(env, space_name)
            if teacher_space != env_space:
                raise ValueError(
                    f"The teacher of task {task!r} has {space_name} {teacher_space}, its env {env_space}: each task's "
                    "teacher must see and act in its env's spaces"
                )


def _check_env_tasks(env: VecEnv, teachers: dict[str, LoadedTeacher]) -> None:
    """A ``ValueError`` if a given multi-task env does not hold the teachers' tasks, in order, with their spaces."""
    if not isinstance(env, MultiTaskVecEnv):
        raise ValueError(f"`env` must be a MultiTaskVecEnv, got {type(env).__name__}")
    if env.tasks != list(teachers):
        raise ValueError(f"The env's tasks {env.tasks} are not the teachers' tasks {list(teachers)} (in order)")
    _check_spaces(dict(zip(env.tasks, env.task_envs, strict=True)), teachers)


def task_q_network_state(
    student: Any, task: int, padded_shape: tuple[int, ...], task_shape: tuple[int, ...]
) -> dict[str, th.Tensor]:
    """
    The state dict of one task's SB3 ``QNetwork`` (trunk + that task's head, on the task's own inputs) out of the
    multi-task student. The student's layers map one to one onto the QNetwork's (``features_extractor.*``, then
    ``q_net.<i>.*``: the trunk's hidden layers, then the head); only the first layer that sees the input differs:
    it keeps the task's own inputs, the columns of a first linear layer (vectors, see :func:`padded_indices`) or the
    first input channels of a first convolution (images, channels padded at the end). The padded inputs only ever
    held zeros, so the task's network computes exactly what the student's head does.

    :param student: the :class:`~sb3_distill.multitask_policy_distillation.policies.MultiTaskQNetwork`
    :param task: the task's index
    :param padded_shape: the padded observation shape
    :param task_shape: the task's observation shape
    :return: the QNetwork's state dict
    """
    state = {f"features_extractor.{key}": value for key, value in student.features_extractor.state_dict().items()}
    state.update({f"q_net.{key}": value for key, value in student.trunk.state_dict().items()})
    state.update({f"q_net.{len(student.trunk)}.{key}": value for key, value in student.heads[task].state_dict().items()})
    if tuple(padded_shape) == tuple(task_shape):
        return state
    # The first weight in the network's order is the one that sees the (padded) input
    first = next(key for key in state if key.endswith("weight"))
    weight = state[first]
    if weight.ndim == 2:
        # (out, prod(padded shape)) -> (out, prod(task shape))
        columns = th.as_tensor(padded_indices(padded_shape, task_shape), device=weight.device)
        state[first] = weight[:, columns]
    else:
        # A convolution, (out, padded channels, *kernel) -> (out, task channels, *kernel)
        state[first] = weight[:, : task_shape[0]]
    return state


#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
NUMBERS = {
    **OFF_POLICY_NUMBERS,
    "temperature": Number(low=0, low_open=True, optional=True, meaning="the softmax temperature tau; None: by teacher"),
    "teacher_prob": TEACHER_PROB,
    "max_grad_norm": Number(low=0, low_open=True, optional=True, meaning="None: no clipping"),
    "deterministic_control": Flag(),
}
