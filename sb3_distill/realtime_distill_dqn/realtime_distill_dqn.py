import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_distill.common.diagnostics import record_students_diagnostics
from sb3_distill.common.distill_dqn import DistillDQN
from sb3_distill.common.losses import (
    check_loss_name,
    check_temperature,
    distillation_loss,
    dqn_td_targets,
    stacked_huber_loss,
)
from sb3_distill.common.torch_layers import StackedQNetwork
from sb3_distill.common.utils import (
    make_discrete_env,
    step_with_member_learning_rates,
)
from sb3_distill.common.validation import (
    DQN_NUMBERS,
    STUDENT_LEARNING_RATE,
    TEMPERATURE,
    Flag,
    Number,
    check_arguments,
    checked_loss_means,
    warn_if_student_larger,
)
from sb3_distill.realtime_distill_dqn.policies import (
    CnnPolicy,
    MlpPolicy,
    RealTimeDistillDQNPolicy,
    check_students,
    member_names,
)

#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
NUMBERS = {
    **DQN_NUMBERS,
    "temperature": TEMPERATURE,
    "distill_coef": Number(low=0, meaning="the weight of the distillation loss"),
    "self_learning_coef": Number(low=0, meaning="the weight of the students' own DQN loss"),
    "student_learning_rate": STUDENT_LEARNING_RATE,
    "imitation": Flag(meaning="the imitation target of Eq. 5"),
    "stack_teacher": Flag(),
    "distill_diagnostics": Flag(),
}

SelfRealTimeDistillDQN = TypeVar("SelfRealTimeDistillDQN", bound="RealTimeDistillDQN")


class RealTimeDistillDQN(DistillDQN):
    """
    Real-time Policy Distillation (Sun & Fazli, "Real-time Policy Distillation in Deep Reinforcement
    Learning"): one DQN teacher acts and learns (Eq. 2) while one or more students of different sizes learn
    at the same time from the very same sampled batch. Each student minimises (Eq. 3)

    ``distill_coef * L_distill(S, T) + self_learning_coef * L_DQN(S)``

    where the student's own DQN ("self-learning") loss uses the "imitation" target of Eq. 5,
    ``r + gamma * Q_S^-(s', argmax_a Q_T^-(s', a))``, or its own target (Eq. 4) with ``imitation=False``.
    Each student has its own target network, updated with the teacher's. Students with the same layer
    structure, whatever their widths, are stacked (narrower ones zero-padded, which is exact) and updated as
    one batched computation.

    ``predict()`` uses ``predict_member`` (the first student by default); :meth:`export_student` turns a
    student into a plain SB3 ``DQN``.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The teacher's learning rate, it can be a function
        of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer (filled by the teacher)
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
    :param batch_size: Minibatch size for each gradient update (one batch feeds the teacher and every student)
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1) default 1 for hard update,
        for the teacher's and the students' target networks (SB3's DQN ``tau``; the paper's temperature is
        ``temperature``)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps. Alternatively pass a tuple of frequency and unit
        like ``(5, "step")`` or ``(2, "episode")``.
    :param gradient_steps: How many gradient steps to do after each rollout (see ``train_freq``)
        Set to ``-1`` means to do as many gradient steps as steps done in the environment
        during the rollout.
    :param replay_buffer_class: Replay buffer class to use (for instance ``HerReplayBuffer``).
        If ``None``, it will be automatically selected.
    :param replay_buffer_kwargs: Keyword arguments to pass to the replay buffer on creation.
    :param optimize_memory_usage: Enable a memory efficient variant of the replay buffer
        at a cost of more complexity.
    :param n_steps: When n_step > 1, uses n-step return (with the NStepReplayBuffer) when updating the Q-value networks.
    :param target_update_interval: update the target networks (teacher's and students') every
        ``target_update_interval`` environment steps.
    :param exploration_fraction: fraction of entire training period over which the exploration rate is reduced
    :param exploration_initial_eps: initial value of random action probability
    :param exploration_final_eps: final value of random action probability
    :param max_grad_norm: The maximum value for the gradient clipping, applied to the teacher and to each
        student separately
    :param students: One network description per student (keys ``net_arch``, ``activation_fn``,
        ``features_extractor_class``, ``features_extractor_kwargs``, ``normalize_images``), e.g. the paper's
        Net1..Net5 with ``CompactNatureCNN``. None: one student, the paper's Net3 ``{16, 16, 16, 64}`` for
        ``CnnPolicy`` and ``net_arch=[16, 16]`` for ``MlpPolicy``.
    :param temperature: Softmax temperature tau of the distillation loss (Eq. 1). The real-time paper does
        not state its value; the default 0.1 is that of the authors' ensemble paper.
    :param distill_loss: The distillation loss: ``"reverse_kl"`` (Eq. 6, the paper's recommendation),
        ``"forward_kl"`` (Eq. 1), ``"nll"`` or ``"mse"``
    :param distill_coef: Weight of the distillation loss in the student's loss (1 in Eq. 3)
    :param self_learning_coef: Weight of the student's own DQN loss ("self-learning", 1 in Eq. 3);
        0 gives pure real-time distillation (the students' TD loss is then not computed)
    :param imitation: Use the imitation target of Eq. 5 (the teacher's target network picks the next
        action) for the students' DQN loss; ``False`` uses each student's own target (Eq. 4)
    :param student_learning_rate: The students' learning rate (float or schedule); ``None`` uses ``learning_rate``
    :param predict_member: The member ``predict()`` uses: ``"teacher"`` or ``"student_<i>"``
    :param stack_teacher: Put the teacher into the first students' stack it can join (same layer structure;
        zero-padding where widths differ, exact for activations with f(0)=0), so that teacher and students
        run as one batched forward, backward and optimizer step. A layout choice, saved with the policy: the
        learning rates do not change it (with a ``student_learning_rate`` of its own, each student member's
        update is rescaled after the shared optimizer step, exact for optimizers whose step is linear in the
        learning rate: Adam, AdamW, SGD, RMSprop). ``policy.teacher_in_stack`` tells whether the teacher could
        join a stack (it cannot when no student has its layer structure).
    :param distill_diagnostics: Log, when the logger writes and when ``learn()`` returns (not at every ``train()``
        call: that would cost every environment step with ``train_freq=1``), from the last gradient step's
        Q-values, each
        student's agreement with the teacher's greedy action and the entropy of its distribution at the
        temperature (``train/agreement_student_k``, ``train/entropy_student_k``), and the teacher's entropy and
        one-hot rate (:func:`sb3_distill.common.diagnostics.record_students_diagnostics`)
    :param torch_compile: Compile each gradient step but its optimizer step (forward passes, losses, backward pass
        and per-member clipping of teacher and students) into one graph with ``torch.compile``: ``True`` always,
        ``False`` never, ``"auto"`` (default) in ``learn()`` calls long enough to repay the compilation (details,
        threshold and measured speed-up: :class:`~sb3_distill.common.distill_dqn.DistillDQN`)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (the teacher's network)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    layout_arguments: ClassVar[dict[str, str]] = {
        "students": "students",
        "predict_member": "predict_member",
        "stack_teacher": "stack_teacher",
    }
    reloadable_layout_arguments = ("predict_member",)
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {  # type: ignore[assignment]
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
    }
    policy: RealTimeDistillDQNPolicy  # type: ignore[assignment]
    student_lr_schedule: Schedule

    def __init__(
        self,
        policy: str | type[RealTimeDistillDQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int = 1_000_000,  # 1e6
        learning_starts: int = 100,
        batch_size: int = 32,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 4,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        target_update_interval: int = 10000,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        max_grad_norm: float = 10,
        students: list[dict[str, Any]] | None = None,
        temperature: float = 0.1,
        distill_loss: str = "reverse_kl",
        distill_coef: float = 1.0,
        self_learning_coef: float = 1.0,
        imitation: bool = True,
        student_learning_rate: float | Schedule | None = None,
        predict_member: str = "student_0",
        stack_teacher: bool = True,
        distill_diagnostics: bool = True,
        torch_compile: bool | str = "auto",
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # Make the env here (as SB3 would) so that a bad action space gets a clear error
        env = make_discrete_env(env, verbose, "RealTimeDistillDQN")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            target_update_interval=target_update_interval,
            exploration_fraction=exploration_fraction,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            max_grad_norm=max_grad_norm,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.students = students
        self.temperature = temperature
        self.distill_loss = distill_loss
        self.distill_coef = distill_coef
        self.self_learning_coef = self_learning_coef
        self.imitation = imitation
        self.student_learning_rate = student_learning_rate
        self.predict_member = predict_member
        self.stack_teacher = stack_teacher
        self.distill_diagnostics = distill_diagnostics
        self.torch_compile = torch_compile

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Validate here, not in __init__: `load()` and rl-zoo's `--trained-agent` bypass __init__
        check_arguments(self, NUMBERS)
        check_students(self.students)
        check_temperature(self.temperature)
        check_loss_name(self.distill_loss, "distill_loss")
        if not issubclass(self.policy_class, RealTimeDistillDQNPolicy):
            raise TypeError(
                f"`policy` must be 'MlpPolicy', 'CnnPolicy' or a subclass of RealTimeDistillDQNPolicy, "
                f"got {self.policy_class.__name__}"
            )
        # The policy builds the teacher and the students (and checks `predict_member`); `policy_kwargs` stays the user's
        self._setup_policy_with_layout(super()._setup_model)
        # The students' learning rate schedule (the teacher's is `lr_schedule`)
        self._setup_student_schedule()
        # The gradient step, eager or compiled (not saved: rebuilt on load)
        self._setup_gradient_step()
        warn_if_student_larger(self.compression_ratios)
        if self.distill_coef == 0 and self.self_learning_coef == 0:
            warnings.warn("`distill_coef` and `self_learning_coef` are both 0: the students will not learn")

    @property
    def n_students(self) -> int:
        """Number of students."""
        return len(self.policy.student_members)

    def acting_q_values(self, obs: PyTorchObs, n_envs: int) -> th.Tensor:
        """
        Only the teacher acts, whatever ``predict_member`` is.

        :param obs: the observations of the envs, shape (n_envs, ...)
        :param n_envs: number of envs
        :return: the teacher's Q-values, shape (n_envs, n_actions)
        """
        return self.q_net(obs)

    def _on_step(self) -> None:
        # The teacher's target network and the exploration rate, as in DQN
        super()._on_step()
        # The students' target networks are updated with the teacher's (DQN._on_step's condition)
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak_update(self.policy.student_stacks.parameters(), self.policy.student_stack_targets.parameters(), self.tau)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rates according to schedule: teacher and students (with the teacher in their stack,
        # one optimizer at the teacher's rate, the students' updates rescaled after the step)
        student_learning_rate = self._update_learning_rates(self.policy.student_optimizer)
        teacher_learning_rate = self.lr_schedule(self._current_progress_remaining)
        member_rates = self.policy.member_learning_rate_factors(teacher_learning_rate, student_learning_rate)

        # Each stack's parameters (built once per policy), for the students' own learning rate
        stack_parameters = [params for params, _ in self._parameter_stacks()[-len(self.policy.student_stacks) :]]
        losses, distill_losses, student_td_losses = [], [], []
        for _ in range(gradient_steps):
            # Sample replay buffer: one batch for the teacher and every student
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # The losses, one backward pass of their sum, each member clipped (one graph with torch_compile=True)
            loss, distill, *student_td = self._gradient_step(replay_data)
            losses.append(loss)
            distill_losses.append(distill)
            student_td_losses.extend(student_td)

            # Optimize teacher and students
            if member_rates is None:
                # One optimizer, or two in one fused kernel call at equal learning rates
                self._step_optimizers()
            else:
                step_with_member_learning_rates(self.policy.optimizer, stack_parameters, member_rates)

        # The losses' means; stop on a NaN or infinite loss, naming the member (one device synchronisation per call)
        means = checked_loss_means(self._losses_by_member(losses, distill_losses, student_td_losses), self._n_updates)
        # Increase update counter
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        # Over the gradient steps and the stacks, as the mean of the stacked losses was
        for name, values in means.items():
            self.logger.record(f"train/{name}", float(np.mean(values)))
        # The diagnostics of the last gradient step, recorded when the logger writes (see DistillDQN)
        self._diagnostics_pending = gradient_steps > 0

    def _trained_modules(self) -> list[tuple[th.nn.Module, int]]:
        # With the teacher in the students' stack it is member 0 of stack 0, and has no parameters of its own
        teacher = [] if self.policy.teacher_in_stack else [(self.q_net, 1)]
        stacks: list[StackedQNetwork] = list(self.policy.student_stacks)  # type: ignore[arg-type]
        return teacher + [(stack, stack.n_members) for stack in stacks]

    def _student_stack_sizes(self) -> th.Tensor:
        """The number of students K_i of each stack (the teacher is not one), shape (n_stacks,), built once per policy."""
        cache = self.__dict__.get("_stack_sizes_cache")
        if cache is None or cache[0] is not self.policy:
            members = self.policy.student_members
            sizes = [sum(1 for stack, _ in members if stack == i) for i in range(len(self.policy.student_stacks))]
            cache = (self.policy, th.as_tensor(sizes, device=self.device))
            self._stack_sizes_cache = cache
        return cache[1]

    def _record_distill_diagnostics(self) -> None:
        # The last gradient step's Q-values: the teacher's, and every student's in student order (K, batch, n_actions)
        teacher_q, stack_q = self._last_q_values
        students_q = th.stack([stack_q[stack][member] for stack, member in self.policy.student_members])
        record_students_diagnostics(self.logger, teacher_q, students_q, self.temperature)

    def _step_losses(self, replay_data: ReplayBufferSamples) -> tuple[th.Tensor, ...]:  # type: ignore[override]
        """
        The teacher's and the students' losses of one gradient step, and their sum.

        :param replay_data: the batch
        :return: the sum, then the teacher's DQN loss, the distillation loss of each stack and, with self-learning,
            the DQN loss of each stack
        """
        loss, distill, student_td = self._losses(replay_data)
        # Each stack's losses average over its K_i students: K_i times it is the sum of their losses
        student_loss = self.distill_coef * distill + (self.self_learning_coef * student_td if student_td is not None else 0)
        total_loss = loss + (self._student_stack_sizes() * student_loss).sum()
        return (total_loss, loss, distill) if student_td is None else (total_loss, loss, distill, student_td)

    def _losses(self, replay_data: ReplayBufferSamples) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        The losses of one gradient step on one batch.

        :param replay_data: the batch
        :return: the teacher's DQN loss (Eq. 2), and for each stack of students the mean over its K_i students of
            the distillation loss and, with self-learning, of their DQN loss (Eq. 4, or Eq. 5 with ``imitation``),
            shape (n_stacks,)
        """
        stacks, targets = self.policy.student_stacks, self.policy.student_stack_targets
        # For n-step replay, discount factor is gamma**n_steps (when no early termination)
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        in_stack = self.policy.teacher_in_stack
        with th.no_grad():
            # Target networks on s', (K_i, batch, n_actions) per stack; the teacher's, (1, batch, n_actions)
            self_learning = self.self_learning_coef > 0
            next_stack_q = [
                target(replay_data.next_observations) if self_learning or (in_stack and index == 0) else None
                for index, target in enumerate(targets)
            ]
            teacher_next_q = next_stack_q[0][:1] if in_stack else self.q_net_target(replay_data.next_observations)[None]  # type: ignore[index]
            teacher_targets = dqn_td_targets(replay_data.rewards, replay_data.dones, discounts, teacher_next_q)
        # Current Q-values of every stack, (K_i, batch, n_actions), and of the teacher, (1, batch, n_actions)
        stack_q = [stack(replay_data.observations) for stack in stacks]
        teacher_q = stack_q[0][:1] if in_stack else self.q_net(replay_data.observations)[None]
        # Kept for the diagnostics of this train() call (the last gradient step's)
        self._last_q_values = (teacher_q[0].detach(), [q.detach() for q in stack_q])
        loss = stacked_huber_loss(teacher_q, replay_data.actions, teacher_targets)[0]

        # Students, one stack of K_i at a time (without the teacher, member 0 of stack 0)
        distill, student_td = [], []
        for index, q_values in enumerate(stack_q):
            first = 1 if in_stack and index == 0 else 0
            student_q = q_values[first:]
            # Distillation from the teacher's Q-values of this step (detached inside the loss), averaged over K_i
            distill.append(self._stack_distillation_loss(index, student_q, teacher_q[0]))
            if self_learning:
                # Self-learning, with the imitation target (Eq. 5: the teacher's target network picks a') or Eq. 4
                student_targets = dqn_td_targets(
                    replay_data.rewards,
                    replay_data.dones,
                    discounts,
                    next_stack_q[index][first:],  # type: ignore[index]
                    teacher_next_q[0] if self.imitation else None,
                )
                student_td.append(stacked_huber_loss(student_q, replay_data.actions, student_targets).mean())
        return loss, th.stack(distill), th.stack(student_td) if self_learning else None

    def _stack_distillation_loss(self, stack: int, student_q: th.Tensor, teacher_q: th.Tensor) -> th.Tensor:
        """
        The distillation term of one stack: the mean over its K_i students of the loss against the teacher's
        Q-values of this step (``distill_loss``, at ``temperature``).

        :param stack: index of the stack in ``policy.student_stacks``
        :param student_q: the stack's students' Q-values (without the teacher), shape (K_i, batch, n_actions)
        :param teacher_q: the teacher's Q-values, shape (batch, n_actions); detached inside the loss
        :return: a scalar tensor
        """
        return distillation_loss(student_q, teacher_q, loss=self.distill_loss, temperature=self.temperature)

    def _losses_by_member(
        self, losses: list[th.Tensor], distill_losses: list[th.Tensor], student_td_losses: list[th.Tensor]
    ) -> dict[str, tuple[list[str], th.Tensor]]:
        """The losses of ``train()`` by gradient step and member, for :func:`check_finite_losses`."""
        # The students of each stack (the distillation and TD losses are logged per stack): (gradient_steps, n_stacks)
        stacks = [
            "+".join(f"student_{index}" for index, (stack, _) in enumerate(self.policy.student_members) if stack == i)
            for i in range(len(self.policy.student_stacks))
        ]
        by_member = {"loss": (["teacher"], th.stack(losses)), "distill_loss": (stacks, th.stack(distill_losses))}
        if student_td_losses:
            by_member["student_td_loss"] = (stacks, th.stack(student_td_losses))
        return {name: (members, values.reshape(len(losses), -1)) for name, (members, values) in by_member.items()}

    @property
    def compression_ratios(self) -> dict[str, float]:
        """Each student's parameter count divided by the teacher's: ``{"student_0": ..., ...}``."""
        teacher = self.policy.teacher_parameter_count
        stacks: list[StackedQNetwork] = list(self.policy.student_stacks)  # type: ignore[arg-type]
        return {
            f"student_{index}": stacks[stack].member_parameter_counts[member] / teacher
            for index, (stack, member) in enumerate(self.policy.student_members)
        }

    def _excluded_save_params(self) -> list[str]:
        # The last gradient step's Q-values, kept for the diagnostics only
        return [*super()._excluded_save_params(), "_last_q_values", "_stack_sizes_cache"]

    def member_q_functions(self) -> dict[str, Callable[[PyTorchObs], th.Tensor]]:
        """Every member's Q-value function, for :meth:`evaluate_members` (``"teacher"``, ``"student_0"``, ...)."""
        return {name: partial(self.policy.member_q_values, member=name) for name in member_names(self.n_students)}

    def export_student(self, index: int = 0) -> DQN:
        """
        Student ``index`` as a plain SB3 ``DQN``, to deploy without sb3_distill: its ``q_net`` and
        ``q_net_target`` hold the student's weights, so it acts exactly as the student
        (``predict(..., deterministic=True)``), ``save()``s and reloads with ``DQN.load``. The hyperparameters
        are this model's, with the students' learning rate; the optimizer starts afresh (the students'
        optimizer state is shared by their stack). No environment is attached.

        :param index: the student, in [0, n_students)
        :return: the exported ``DQN``
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.n_students:
            raise ValueError(f"`index` must be a student index in [0, {self.n_students}), got {index!r}")
        exported = self._export_dqn(self.policy.student_kwargs[index])
        stack, member = self.policy.student_members[index]
        self.policy.student_stacks[stack].copy_member_to(member, exported.policy.q_net)  # type: ignore[operator]
        exported.policy.q_net_target.load_state_dict(exported.policy.q_net.state_dict())
        return exported

    def learn(
        self: SelfRealTimeDistillDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "RealTimeDistillDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRealTimeDistillDQN:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
