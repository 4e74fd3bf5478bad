import warnings
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, polyak_update, update_learning_rate
from torch.nn import functional as F

from sb3_distill.common.diagnostics import record_students_diagnostics
from sb3_distill.common.losses import check_loss_name, check_temperature, distillation_loss, student_td_targets
from sb3_distill.common.torch_layers import StackedQNetwork
from sb3_distill.common.utils import (
    clip_grad_norm_per_member_,
    dqn_for_export,
    epsilon_greedy,
    evaluate_q_functions,
    make_discrete_env,
)
from sb3_distill.realtime_distill_dqn.policies import (
    CnnPolicy,
    MlpPolicy,
    RealTimeDistillDQNPolicy,
    check_students,
    member_names,
)

SelfRealTimeDistillDQN = TypeVar("SelfRealTimeDistillDQN", bound="RealTimeDistillDQN")


class RealTimeDistillDQN(DQN):
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
        run as one batched forward, backward and optimizer step. It applies only when the students use the
        teacher's learning rate (``student_learning_rate`` None or equal to ``learning_rate``): one optimizer
        then covers the stack. ``policy.teacher_in_stack`` tells whether it happened.
    :param distill_diagnostics: Log, once per ``train()`` call and from the last gradient step's Q-values, each
        student's agreement with the teacher's greedy action and the entropy of its distribution at the
        temperature (``train/agreement_student_k``, ``train/entropy_student_k``), and the teacher's entropy and
        one-hot rate (:func:`sb3_distill.common.diagnostics.record_students_diagnostics`)
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

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Validate here, not in __init__: `load()` and rl-zoo's `--trained-agent` bypass __init__
        check_students(self.students)
        check_temperature(self.temperature)
        check_loss_name(self.distill_loss, "distill_loss")
        for name in ("distill_coef", "self_learning_coef"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}")
        if not isinstance(self.imitation, bool):
            raise ValueError(f"`imitation` must be True or False, got {self.imitation!r}")
        if not issubclass(self.policy_class, RealTimeDistillDQNPolicy):
            raise TypeError(
                f"`policy` must be 'MlpPolicy', 'CnnPolicy' or a subclass of RealTimeDistillDQNPolicy, "
                f"got {self.policy_class.__name__}"
            )
        # The policy builds the teacher and the students (and checks `predict_member`)
        if not isinstance(self.stack_teacher, bool):
            raise ValueError(f"`stack_teacher` must be True or False, got {self.stack_teacher!r}")
        if not isinstance(self.distill_diagnostics, bool):
            raise ValueError(f"`distill_diagnostics` must be True or False, got {self.distill_diagnostics!r}")
        # The teacher joins the students' stack only if one optimizer (one learning rate) can serve them all
        same_learning_rate = self.student_learning_rate is None or self.student_learning_rate == self.learning_rate
        self.policy_kwargs = {
            **self.policy_kwargs,
            "students": self.students,
            "predict_member": self.predict_member,
            "stack_teacher": self.stack_teacher and same_learning_rate,
        }
        super()._setup_model()
        # The students' learning rate schedule (the teacher's is `lr_schedule`)
        student_learning_rate = self.learning_rate if self.student_learning_rate is None else self.student_learning_rate
        self.student_lr_schedule = FloatSchedule(student_learning_rate)
        if self.distill_coef == 0 and self.self_learning_coef == 0:
            warnings.warn("`distill_coef` and `self_learning_coef` are both 0: the students will not learn")

    @property
    def n_students(self) -> int:
        """Number of students."""
        return len(self.policy.student_members)

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: Any = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Only the teacher acts (epsilon-greedy with the exploration schedule, one draw per env), whatever
        ``predict_member`` is; before ``learning_starts``, actions are uniformly random, as in DQN.

        :param learning_starts: Number of steps before learning for the warm-up phase.
        :param action_noise: unused (discrete actions)
        :param n_envs: number of environments
        :return: the actions to take and to store in the replay buffer (the same for discrete actions)
        """
        if self.num_timesteps < learning_starts:
            actions = np.array([self.action_space.sample() for _ in range(n_envs)])
            return actions, actions
        assert self._last_obs is not None, "self._last_obs was not set"
        obs_tensor, _ = self.policy.obs_to_tensor(self._last_obs)
        with th.no_grad():
            actions = self.q_net(obs_tensor).argmax(dim=1).cpu().numpy()
        actions = epsilon_greedy(actions, self.exploration_rate, self.action_space)  # type: ignore[arg-type]
        return actions, actions

    def _on_step(self) -> None:
        # The teacher's target network and the exploration rate, as in DQN
        super()._on_step()
        # The students' target networks are updated with the teacher's (DQN._on_step's condition)
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            polyak_update(self.policy.student_stacks.parameters(), self.policy.student_stack_targets.parameters(), self.tau)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rates according to schedule: teacher, then students
        self._update_learning_rate(self.policy.optimizer)
        student_learning_rate = self.student_lr_schedule(self._current_progress_remaining)
        update_learning_rate(self.policy.student_optimizer, student_learning_rate)
        self.logger.record("train/student_learning_rate", student_learning_rate)

        stacks: list[StackedQNetwork] = list(self.policy.student_stacks)  # type: ignore[arg-type]
        targets: list[StackedQNetwork] = list(self.policy.student_stack_targets)  # type: ignore[arg-type]
        # With the teacher in the students' stack it is member 0 of stack 0, and has no parameters of its own
        teacher_in_stack = self.policy.teacher_in_stack
        teacher_parameters = [] if teacher_in_stack else list(self.q_net.parameters())
        stack_parameters = [list(stack.parameters()) for stack in stacks]
        all_parameters = teacher_parameters + [param for parameters in stack_parameters for param in parameters]
        losses, distill_losses, student_td_losses = [], [], []
        for _ in range(gradient_steps):
            # Sample replay buffer: one batch for the teacher and every student
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # For n-step replay, discount factor is gamma**n_steps (when no early termination)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            with th.no_grad():
                # Target networks on s': (K_i, batch, n_actions) per stack, computed when needed
                next_stack_q: dict[int, th.Tensor] = {}
                if teacher_in_stack:
                    next_stack_q[0] = targets[0](replay_data.next_observations)
                    teacher_next_q_values = next_stack_q[0][0]
                else:
                    # Compute the next Q-values using the teacher's target network
                    teacher_next_q_values = self.q_net_target(replay_data.next_observations)
                # Follow greedy policy: use the one with the highest value
                next_q_values, _ = teacher_next_q_values.max(dim=1)
                # Avoid potential broadcast issue
                next_q_values = next_q_values.reshape(-1, 1)
                # 1-step TD target (Eq. 4)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

            # Current Q-values of every stack, (K_i, batch, n_actions), and of the teacher
            stack_q_values = [stack(replay_data.observations) for stack in stacks]
            all_q_values = stack_q_values[0][0] if teacher_in_stack else self.q_net(replay_data.observations)
            # Retrieve the q-values for the actions from the replay buffer
            current_q_values = th.gather(all_q_values, dim=1, index=replay_data.actions.long())
            # Compute Huber loss (less sensitive to outliers): the teacher's DQN loss (Eq. 2)
            loss = F.smooth_l1_loss(current_q_values, target_q_values)
            total_loss = loss

            # Students, one stack of same-architecture students at a time (without the teacher, member 0 of stack 0)
            for index, target in enumerate(targets):
                first = 1 if teacher_in_stack and index == 0 else 0
                student_q_values = stack_q_values[index][first:]
                n_members = student_q_values.shape[0]
                # Distillation from the teacher's Q-values of this step (detached inside the loss);
                # the loss averages over the K students, so K times it is the sum of their losses
                distill = distillation_loss(
                    student_q_values, all_q_values, loss=self.distill_loss, temperature=self.temperature
                )
                total_loss = total_loss + self.distill_coef * n_members * distill
                distill_losses.append(distill.detach())
                if self.self_learning_coef > 0:
                    if index not in next_stack_q:
                        with th.no_grad():
                            next_stack_q[index] = target(replay_data.next_observations)
                    # Self-learning: each student's own DQN loss, with the imitation target (Eq. 5) or its own (Eq. 4)
                    student_targets = student_td_targets(
                        replay_data.rewards,
                        replay_data.dones,
                        discounts,
                        next_stack_q[index][first:],
                        teacher_next_q_values if self.imitation else None,
                    )
                    actions = replay_data.actions.long().unsqueeze(0).expand(n_members, -1, -1)
                    student_current = th.gather(student_q_values, dim=2, index=actions).squeeze(2)
                    # Each student's Huber loss, averaged over the batch: (K,)
                    td = F.smooth_l1_loss(student_current, student_targets, reduction="none").mean(dim=1)
                    total_loss = total_loss + self.self_learning_coef * td.sum()
                    student_td_losses.append(td.detach().mean())
            losses.append(loss.detach())

            # Optimize teacher and students: their parameters are disjoint (or disjoint slices of one stack),
            # so one backward pass of the sum gives each network the gradient of its own loss. Clear the
            # gradients first (what the optimizers' zero_grad() do, without their per-call overhead)
            for param in all_parameters:
                param.grad = None
            total_loss.backward()
            # Clip gradient norm of the teacher, and of each student (per member of each stack, the teacher included)
            if not teacher_in_stack:
                clip_grad_norm_per_member_(teacher_parameters, self.max_grad_norm, n_members=1)
            for stack, parameters in zip(stacks, stack_parameters, strict=True):
                clip_grad_norm_per_member_(parameters, self.max_grad_norm, stack.n_members)
            self.policy.optimizer.step()
            if self.policy.student_optimizer is not self.policy.optimizer:
                self.policy.student_optimizer.step()

        # Increase update counter
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", th.stack(losses).mean().item())
        self.logger.record("train/distill_loss", th.stack(distill_losses).mean().item())
        if student_td_losses:
            self.logger.record("train/student_td_loss", th.stack(student_td_losses).mean().item())
        if self.distill_diagnostics and gradient_steps > 0:
            # The last gradient step's Q-values: every student's, (K, batch, n_actions), and the teacher's
            students_q = th.cat([q[1:] if teacher_in_stack and i == 0 else q for i, q in enumerate(stack_q_values)])
            record_students_diagnostics(self.logger, all_q_values.detach(), students_q.detach(), self.temperature)

    @property
    def compression_ratios(self) -> dict[str, float]:
        """Each student's parameter count divided by the teacher's: ``{"student_0": ..., ...}``."""
        teacher = self.policy.teacher_parameter_count
        stacks: list[StackedQNetwork] = list(self.policy.student_stacks)  # type: ignore[arg-type]
        return {
            f"student_{index}": stacks[stack].member_parameter_counts[member] / teacher
            for index, (stack, member) in enumerate(self.policy.student_members)
        }

    def evaluate_members(self, env: GymEnv, n_eval_episodes: int = 10) -> dict[str, tuple[float, float]]:
        """
        Evaluate the teacher and every student, each acting greedily on its own Q-values.

        :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
        :param n_eval_episodes: Number of episodes per member
        :return: member name (``"teacher"``, ``"student_0"``, ...) -> (mean return, std of the return)
        """
        q_functions = {name: partial(self.policy.member_q_values, member=name) for name in member_names(self.n_students)}
        return evaluate_q_functions(self.policy, q_functions, env, n_eval_episodes)  # type: ignore[arg-type]

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
        learning_rate = self.learning_rate if self.student_learning_rate is None else self.student_learning_rate
        exported = dqn_for_export(self, self.policy.student_kwargs[index], learning_rate)
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

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer", "policy.student_optimizer"]
        return state_dicts, []
