from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.dqn.policies import QNetwork

from sb3_distill.common.diagnostics import record_ensemble_diagnostics
from sb3_distill.common.distill_dqn import DistillDQN
from sb3_distill.common.losses import (
    TEACHER_WEIGHTINGS,
    TEMPERATURE_SCALINGS,
    check_choice,
    check_loss_name,
    check_positive_number,
    check_reduction_name,
    check_temperature,
    dqn_td_targets,
    return_weights,
    spread_scaled_q_values,
    stacked_huber_loss,
    update_running_spread_,
    weighted_distillation_loss,
)
from sb3_distill.common.torch_layers import StackedQNetwork, check_student_policy_kwargs, count_parameters
from sb3_distill.common.utils import (
    make_discrete_env,
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
from sb3_distill.ensemble_distill_dqn.policies import CnnPolicy, EnsembleDistillDQNPolicy, MlpPolicy

SelfEnsembleDistillDQN = TypeVar("SelfEnsembleDistillDQN", bound="EnsembleDistillDQN")

#: The numeric arguments and what they accept (see :func:`sb3_distill.common.validation.check_arguments`)
NUMBERS = {
    **DQN_NUMBERS,
    "n_teachers": Number(low=1, integer=True, meaning="M, the number of teachers"),
    "temperature": TEMPERATURE,
    "student_learning_rate": STUDENT_LEARNING_RATE,
    "distill_diagnostics": Flag(),
}


class EnsembleDistillDQN(DistillDQN):
    """
    Ensemble Policy Distillation (Sun & Fazli, "Ensemble Policy Distillation in Deep Reinforcement
    Learning", Algorithm 1): M DQN teachers act in turn, one environment step each, into one shared
    replay buffer; every gradient step samples one batch on which every teacher takes its own DQN step
    and a compact student is distilled in real time from the ensemble of teachers (reverse KL by default).

    One difference from Algorithm 1, made for speed: the student distills from the teachers' Q-values of
    the forward pass that also computes their DQN losses, i.e. before (not after) the teachers' update of
    the same gradient step; this saves a second forward pass and lags the targets by one gradient step.

    The teachers are stacked into a single module (batched matmul / grouped convolutions, one optimizer
    over the stack, per-member gradient clipping), so the ensemble costs no Python loop over members.
    ``predict()`` uses the student; :meth:`export_student` turns it into a plain SB3 ``DQN``.

    Default hyperparameters are DQN's (SB3), except the distillation ones, which follow the paper:
    3 teachers, temperature 0.1, reverse KL averaged over the teachers.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, ...)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The teachers' learning rate, it can be a function
        of the current progress remaining (from 1 to 0)
    :param buffer_size: size of the replay buffer shared by all teachers
    :param learning_starts: how many steps of the model to collect transitions for before learning starts
    :param batch_size: Minibatch size for each gradient update (one batch feeds every teacher and the student)
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1) default 1 for hard update
        (SB3's DQN ``tau``; the paper's temperature tau is ``temperature``)
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
    :param n_steps: When n_step > 1, uses n-step return (with the NStepReplayBuffer) when updating the Q-value network.
    :param target_update_interval: update the target networks every ``target_update_interval``
        environment steps (C in Algorithm 1).
    :param exploration_fraction: fraction of entire training period over which the exploration rate is reduced
    :param exploration_initial_eps: initial value of random action probability
    :param exploration_final_eps: final value of random action probability (the paper keeps 5 %)
    :param max_grad_norm: The maximum value for the gradient clipping, applied to each teacher and to the student
        separately
    :param n_teachers: Number of teachers (M in the paper; 3 in its experiments)
    :param temperature: Softmax temperature of the distillation loss (tau in the paper; 0.1 in its experiments)
    :param distill_loss: The distillation loss: ``"reverse_kl"`` (the paper's choice, Eq. 3), ``"forward_kl"``
        (Eq. 2), ``"nll"`` or ``"mse"``; see :func:`sb3_distill.common.losses.distillation_loss`
    :param ensemble_reduction: How the teachers are combined: ``"mean_loss"`` averages the per-teacher losses
        (the paper's Eq. 4), ``"mean_probs"`` distills from the averaged teacher distribution
    :param temperature_scaling: ``None`` (the paper's, to reproduce it): ``p_j = softmax(q_j / tau)``.
        ``"spread"``: each teacher's Q-values are first divided by a running estimate of their spread,
        ``p_j = softmax(q_j / (sigma_j tau))`` with ``sigma_j`` a bias-corrected moving average (decay 0.99 per
        gradient step) of ``mean_batch (max_a q_j - min_a q_j)``
        (:func:`sb3_distill.common.losses.spread_scaled_q_values`), so that ``1 / tau`` is the logit gap between
        a teacher's best and worst action on an average state whatever the reward scale, and no teacher
        dominates the reverse-KL vote only because its Q-values are larger. The spreads are saved with the model.
    :param teacher_weighting: ``None``: the teachers' terms are averaged (the paper's Eq. 4). ``"returns"``:
        teacher j's term is weighted by ``w_j = softmax_j(z_j / beta)``, ``z_j`` its mean greedy return over
        the last 3 calls of :meth:`evaluate_members` (e.g. by ``EvalMembersCallback``) standardised by the pooled
        standard deviation of the teachers' returns (:func:`sb3_distill.common.losses.return_weights`), so that a
        diverging teacher loses its vote. The teachers act in turn one step each (Algorithm 1), so training
        episodes are not any one teacher's: the returns come from evaluations, and the weights stay uniform
        until the first one.
    :param teacher_weighting_temperature: beta of ``teacher_weighting="returns"`` (> 0): the smaller, the more
        weight goes to the best teachers (our choice, 0.25: a teacher one pooled standard deviation below the
        mean weighs ``e^-4`` times one at the mean)
    :param distill_diagnostics: Log, when the logger writes and when ``learn()`` returns (not at every ``train()``
        call: that would cost every environment step with ``train_freq=1``), from the last gradient step's
        Q-values, each
        teacher's agreement with the student's greedy action, the entropy and one-hot rate of its distribution
        at the temperature and its Q-value spread (``train/agreement_teacher_j``, ...), and warn when one teacher
        is near one-hot on most states while the others are not
        (:func:`sb3_distill.common.diagnostics.record_ensemble_diagnostics`)
    :param student_policy_kwargs: The student's network, with the keys of DQN's ``policy_kwargs``
        (``net_arch``, ``activation_fn``, ``features_extractor_class``, ``features_extractor_kwargs``, ...).
        ``None`` gives the paper's student1 ``{16, 16, 16, 64}`` for ``CnnPolicy`` and ``net_arch=[16, 16]``
        for ``MlpPolicy``.
    :param student_learning_rate: The student's learning rate (float or schedule); ``None`` uses
        ``learning_rate``. The paper uses a slightly higher rate for the student than for the teachers.
    :param torch_compile: Compile each gradient step but its optimizer step (forward passes, losses, backward pass
        and per-member clipping of teachers and student) into one graph with ``torch.compile``: ``True`` always,
        ``False`` never, ``"auto"`` (default) in ``learn()`` calls long enough to repay the compilation (details,
        threshold and measured speed-up: :class:`~sb3_distill.common.distill_dqn.DistillDQN`)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (the teachers' network)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (such as device or wrappers used), 2 for
        debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    layout_arguments: ClassVar[dict[str, str]] = {
        "n_teachers": "n_teachers",
        "student_policy_kwargs": "student_policy_kwargs",
    }
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {  # type: ignore[assignment]
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
    }
    q_net: StackedQNetwork  # type: ignore[assignment]
    q_net_target: StackedQNetwork  # type: ignore[assignment]
    student: QNetwork
    policy: EnsembleDistillDQNPolicy  # type: ignore[assignment]
    student_lr_schedule: Schedule

    def __init__(
        self,
        policy: str | type[EnsembleDistillDQNPolicy],
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
        n_teachers: int = 3,
        temperature: float = 0.1,
        distill_loss: str = "reverse_kl",
        ensemble_reduction: str = "mean_loss",
        temperature_scaling: str | None = None,
        teacher_weighting: str | None = None,
        teacher_weighting_temperature: float = 0.25,
        distill_diagnostics: bool = True,
        student_policy_kwargs: dict[str, Any] | None = None,
        student_learning_rate: float | Schedule | None = None,
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
        env = make_discrete_env(env, verbose, "EnsembleDistillDQN")
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
        self.n_teachers = n_teachers
        self.temperature = temperature
        self.distill_loss = distill_loss
        self.ensemble_reduction = ensemble_reduction
        self.temperature_scaling = temperature_scaling
        self.teacher_weighting = teacher_weighting
        self.teacher_weighting_temperature = teacher_weighting_temperature
        self.distill_diagnostics = distill_diagnostics
        # Each evaluation's teachers' (mean returns, stds), the input of `teacher_weighting="returns"`
        self.teacher_evaluations: list[list[list[float]]] = []
        self.student_policy_kwargs = student_policy_kwargs
        self.student_learning_rate = student_learning_rate
        self.torch_compile = torch_compile

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # Validate here, not in __init__: `load()` and rl-zoo's `--trained-agent` bypass __init__
        check_arguments(self, NUMBERS)
        check_temperature(self.temperature)
        check_loss_name(self.distill_loss, "distill_loss")
        check_reduction_name(self.ensemble_reduction, "ensemble_reduction")
        check_student_policy_kwargs(self.student_policy_kwargs)
        check_choice(self.temperature_scaling, "temperature_scaling", TEMPERATURE_SCALINGS)
        check_choice(self.teacher_weighting, "teacher_weighting", TEACHER_WEIGHTINGS)
        check_positive_number(self.teacher_weighting_temperature, "teacher_weighting_temperature", "beta")
        if not issubclass(self.policy_class, EnsembleDistillDQNPolicy):
            raise TypeError(
                f"`policy` must be 'MlpPolicy', 'CnnPolicy' or a subclass of EnsembleDistillDQNPolicy, "
                f"got {self.policy_class.__name__}"
            )
        # The policy builds the teachers and the student (`policy_kwargs` stays the user's)
        self._setup_policy_with_layout(super()._setup_model)
        # The student's learning rate schedule (the teachers' is `lr_schedule`)
        self._setup_student_schedule()
        # The gradient step, eager or compiled (not saved: rebuilt on load)
        self._setup_gradient_step()
        # Running Q-value spread of each teacher (saved; `load()` restores it after this)
        self.q_spread_ema = th.zeros(self.n_teachers, device=self.device)
        self.q_spread_ema_weight = th.zeros((), device=self.device)
        self._last_distill_q: tuple[th.Tensor, th.Tensor] | None = None
        self._update_teacher_weights()
        warn_if_student_larger(self.compression_ratio, "one teacher")

    def _create_aliases(self) -> None:
        super()._create_aliases()
        self.student = self.policy.student

    def acting_q_values(self, obs: PyTorchObs, n_envs: int) -> th.Tensor:
        """
        The teachers act in turn (Algorithm 1, Fig. 1): at vectorised step t, env i is driven by teacher
        ``(t + i) mod M`` (:meth:`acting_teachers`).

        :param obs: the observations of the envs, shape (n_envs, ...)
        :param n_envs: number of envs
        :return: each env's acting teacher's Q-values, shape (n_envs, n_actions)
        """
        # Q-values of every teacher: (M, n_envs, n_actions), one stacked forward pass
        q_values = self.q_net(obs)
        teachers = th.as_tensor(self.acting_teachers(n_envs), device=q_values.device)
        return q_values[teachers, th.arange(n_envs, device=q_values.device)]

    def acting_teachers(self, n_envs: int | None = None) -> np.ndarray:
        """
        Index of the teacher that drives each environment at the current step: env i at vectorised
        step t (``num_timesteps // n_envs``) is driven by teacher ``(t + i) mod M``.

        :param n_envs: number of environments (default: the model's)
        :return: teacher indices, shape (n_envs,)
        """
        n_envs = self.n_envs if n_envs is None else n_envs
        step = self.num_timesteps // n_envs
        return (step + np.arange(n_envs)) % self.n_teachers

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update learning rates according to schedule: teachers and student
        self._update_learning_rates(self.policy.student_optimizer)

        teacher_losses, distill_losses = [], []
        for _ in range(gradient_steps):
            # Sample replay buffer: one batch for every teacher and the student
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # For n-step replay, discount factor is gamma**n_steps (when no early termination)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            batch = (
                replay_data.observations,
                replay_data.actions,
                replay_data.next_observations,
                replay_data.rewards,
                replay_data.dones,
                discounts,
            )
            # Each teacher's DQN loss (M,) and the student's distillation loss, on the same batch; one backward pass
            # of their sum, each teacher and the student clipped (compiled as one graph with torch_compile=True)
            teacher_loss, distill_loss = self._gradient_step(*batch)
            teacher_losses.append(teacher_loss)
            distill_losses.append(distill_loss)

            # Optimize teachers and student (one fused kernel call when their learning rates are equal)
            self._step_optimizers()

        # The losses' means; stop on a NaN or infinite loss, naming the member (one device synchronisation per call)
        teachers = [f"teacher_{j}" for j in range(self.n_teachers)]
        means = checked_loss_means(
            {"loss": (teachers, th.stack(teacher_losses)), "distill_loss": (["student"], th.stack(distill_losses))},
            self._n_updates,
        )
        # Increase update counter
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(means["loss"])))
        for teacher_idx, loss in enumerate(means["loss"]):
            self.logger.record(f"train/loss_teacher_{teacher_idx}", loss)
        self.logger.record("train/distill_loss", means["distill_loss"][0])
        # The diagnostics of the last gradient step, recorded when the logger writes (see DistillDQN)
        self._diagnostics_pending = self._last_distill_q is not None

    def _trained_modules(self) -> list[tuple[th.nn.Module, int]]:
        # The stacked teachers (M members) and the student
        return [(self.q_net, self.n_teachers), (self.student, 1)]

    def _record_distill_diagnostics(self) -> None:
        assert self._last_distill_q is not None
        spread = self.q_spread_ema / self.q_spread_ema_weight.clamp_min(1e-8)
        record_ensemble_diagnostics(self.logger, *self._last_distill_q, self.temperature, spread, self._teacher_weights)

    def _step_losses(self, *batch: Any) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        # The sum of the teachers' DQN losses and the student's distillation loss; each, logged
        teacher_loss, distill_loss = self._losses(*batch)
        return teacher_loss.sum() + distill_loss, teacher_loss, distill_loss

    def _losses(
        self,
        observations: th.Tensor,
        actions: th.Tensor,
        next_observations: th.Tensor,
        rewards: th.Tensor,
        dones: th.Tensor,
        discounts: th.Tensor | float,
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        The losses of one gradient step on one batch.

        :param observations: (batch, *obs_shape)
        :param actions: (batch, 1)
        :param next_observations: (batch, *obs_shape)
        :param rewards: (batch, 1)
        :param dones: (batch, 1)
        :param discounts: the discount factor, or (batch, 1) per-sample discounts for n-step returns
        :return: each teacher's DQN (Huber) loss, shape (M,), and the student's distillation loss, a scalar
        """
        with th.no_grad():
            # 1-step TD targets of every teacher from its target network (M, batch, n_actions): (M, batch)
            target_q_values = dqn_td_targets(rewards, dones, discounts, self.q_net_target(next_observations))

        # Current Q-values of every teacher: (M, batch, n_actions)
        all_q_values = self.q_net(observations)
        # Each teacher's own Huber loss, averaged over the batch: (M,)
        teacher_loss = stacked_huber_loss(all_q_values, actions, target_q_values)

        # Distillation on the same observations against the teachers' Q-values of this step
        # (the forward pass above, detached inside the loss)
        student_q_values = self.student(observations)
        teacher_q_values = self._distillation_teacher_q(all_q_values)
        distill_loss = weighted_distillation_loss(
            student_q_values,
            teacher_q_values,
            self._teacher_weights,
            loss=self.distill_loss,
            temperature=self.temperature,
            reduction=self.ensemble_reduction,
        )
        # Kept for the diagnostics of this train() call
        self._last_distill_q = (teacher_q_values.detach(), student_q_values.detach())
        return teacher_loss, distill_loss

    def _distillation_teacher_q(self, all_q_values: th.Tensor) -> th.Tensor:
        """
        Update each teacher's running Q-value spread sigma_j and return the Q-values the distillation uses:
        raw (the paper's) or divided by sigma_j (``temperature_scaling="spread"``).

        :param all_q_values: the teachers' Q-values, (M, batch, n_actions)
        :return: (M, batch, n_actions)
        """
        spread = update_running_spread_(self.q_spread_ema, self.q_spread_ema_weight, all_q_values)
        if self.temperature_scaling == "spread":
            return spread_scaled_q_values(all_q_values, spread)
        return all_q_values

    def _update_teacher_weights(self) -> None:
        """Each teacher's weight in the distillation loss (None: uniform), from its recent evaluations."""
        self._teacher_weights: th.Tensor | None = None
        if self.teacher_weighting == "returns" and self.teacher_evaluations:
            # (n_evaluations, M) -> per teacher: mean return, and a std that pools episodes and evaluations
            means, stds = (np.array(values) for values in zip(*self.teacher_evaluations[-3:], strict=True))
            pooled_stds = np.sqrt((stds**2).mean(axis=0) + means.var(axis=0))
            self._teacher_weights = return_weights(
                th.as_tensor(means.mean(axis=0), dtype=th.float32, device=self.device),
                th.as_tensor(pooled_stds, dtype=th.float32, device=self.device),
                self.teacher_weighting_temperature,
            )

    @property
    def compression_ratio(self) -> float:
        """The student's parameter count divided by one teacher's (e.g. 0.036 for the paper's student1)."""
        return count_parameters(self.student) / (count_parameters(self.q_net) / self.n_teachers)

    def member_q_functions(self) -> dict[str, Callable[[PyTorchObs], th.Tensor]]:
        """
        Every member's Q-value function, for :meth:`evaluate_members` (member names ``"teacher_0"``, ...,
        ``"student"``).
        """
        q_functions: dict[str, Callable[[PyTorchObs], th.Tensor]] = {
            f"teacher_{j}": partial(self.policy.teacher_q_values, member=j) for j in range(self.n_teachers)
        }
        q_functions["student"] = self.student
        return q_functions

    def evaluate_members(self, env: GymEnv, n_eval_episodes: int = 10) -> dict[str, tuple[float, float]]:
        """
        Evaluate every teacher and the student, each acting greedily on its own Q-values; the teachers'
        scores also feed ``teacher_weighting="returns"``.

        :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
        :param n_eval_episodes: Number of episodes per member
        :return: member name (``"teacher_0"``, ..., ``"student"``) -> (mean return, std of the return)
        """
        results = super().evaluate_members(env, n_eval_episodes)
        # The teachers' returns, for `teacher_weighting="returns"`
        teachers = [results[f"teacher_{j}"] for j in range(self.n_teachers)]
        self.teacher_evaluations = [*self.teacher_evaluations[-2:], [[m for m, _ in teachers], [s for _, s in teachers]]]
        self._update_teacher_weights()
        return results

    def export_student(self) -> DQN:
        """
        The student as a plain SB3 ``DQN``, to deploy without sb3_distill: its ``q_net`` and ``q_net_target``
        hold the student's weights and its optimizer the student's optimizer state, so it acts exactly as
        the student (``predict(..., deterministic=True)``), ``save()``s, reloads with ``DQN.load`` and can be
        fine-tuned with ``set_env`` and ``learn``. The hyperparameters are this model's, with the student's
        learning rate. No environment is attached.

        :return: the exported ``DQN``
        """
        exported = self._export_dqn(self.policy.student_kwargs)
        exported.policy.q_net.load_state_dict(self.student.state_dict())
        exported.policy.q_net_target.load_state_dict(self.student.state_dict())
        exported.policy.optimizer.load_state_dict(self.policy.student_optimizer.state_dict())
        return exported

    def learn(
        self: SelfEnsembleDistillDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "EnsembleDistillDQN",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfEnsembleDistillDQN:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "student", "_last_distill_q", "_teacher_weights"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer", "policy.student_optimizer"]
        return state_dicts, ["q_spread_ema", "q_spread_ema_weight"]
