"""
The base of the two DQN distillers (EnsembleDistillDQN, RealTimeDistillDQN): teachers trained by DQN's
update in the same run as their students, the students with an optimizer and a learning-rate schedule of
their own, stacked members clipped one by one, every member evaluable and a student exportable as a
plain SB3 ``DQN``.
"""

import functools
import warnings
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import update_learning_rate

from sb3_distill.common.base import PolicyLayoutMixin
from sb3_distill.common.losses import check_choice
from sb3_distill.common.save import AtomicSaveMixin
from sb3_distill.common.utils import (
    FusedAdamStep,
    clipped_per_member,
    dqn_for_export,
    epsilon_greedy,
    evaluate_q_functions,
)
from sb3_distill.common.validation import STUDENT_LEARNING_RATE, CheckedSchedule

SelfDistillDQN = TypeVar("SelfDistillDQN", bound="DistillDQN")

#: The accepted values of ``torch_compile``
TORCH_COMPILE_CHOICES = (True, False, "auto")
#: ``torch_compile="auto"`` compiles the gradient step for a ``learn()`` call expected to make at least this many
#: gradient steps: compiling costs tens of seconds once, and saves about a millisecond per step on CPU
#: (``benchmarks/step_cost.py``), so shorter runs (tests, quick experiments) stay in eager mode
AUTO_COMPILE_MIN_GRADIENT_STEPS = 20_000


@functools.cache
def _trace_autograd_ops() -> Any:
    """
    The context in which TorchDynamo traces ``th.autograd.grad`` into the compiled graph (it does only with this
    option), made once (one per step cost about 3 % of a compiled step) and only when a step is compiled (no
    TorchDynamo import otherwise). An option unknown to the installed PyTorch fails on entering it, inside the
    compiled step's fallback to eager mode.
    """
    return th._dynamo.config.patch(trace_autograd_ops=True)


def compile_keeping_distribution_checks(function: Callable[..., Any]) -> Callable[..., Any]:
    """
    ``th.compile(function)``, leaving ``torch.distributions``' argument validation as it was: the first
    ``torch.compile`` of a process turns that validation off for the whole process (TorchDynamo's
    ``TorchPatcher``), which would silently keep SB3's SAC and PPO in the same process from stopping on a NaN
    action mean. The compiled gradient step uses no distribution.

    :param function: the function to compile
    :return: the compiled function (compiled at its first call)
    """
    validate = th.distributions.Distribution._validate_args
    try:
        return th.compile(function)
    finally:
        th.distributions.Distribution.set_default_validate_args(validate)


class DistillDQN(AtomicSaveMixin, PolicyLayoutMixin, DQN):
    """
    What the DQN distillers share beyond DQN. Subclasses implement :meth:`acting_q_values` (who acts),
    :meth:`member_q_functions` (who is evaluated), :meth:`_trained_modules` (what one gradient step trains),
    :meth:`_step_losses` (the losses of one gradient step) and :meth:`_record_distill_diagnostics`, call
    :meth:`_setup_student_schedule` and :meth:`_setup_gradient_step` in ``_setup_model`` and use
    :meth:`_update_learning_rates`, :meth:`_gradient_step` and :meth:`_step_optimizers` in ``train()``, whose
    skeleton stays DQN's.

    Speed (``train_freq=1`` calls ``train()`` at every environment step, so its fixed costs count as much as
    the gradient step): the parameter lists are built once per policy, not per call; the forward passes,
    losses, backward pass and per-member clipping are one function (:meth:`_losses_and_gradients`), compiled as
    one graph when ``torch_compile`` is True, or "auto" (the default) and the ``learn()`` call is long
    (:data:`AUTO_COMPILE_MIN_GRADIENT_STEPS`); with ``torch_compile=True``, fused Adam steps are direct kernel
    calls, one per learning rate (:meth:`_step_optimizers`); the diagnostics are computed when the logger writes
    (:meth:`dump_logs`) or ``learn()`` returns, from the last gradient step's Q-values, rather than at every
    ``train()`` call (the logged values are the same).

    ``torch_compile``: ``True`` compiles the gradient step always, ``False`` never (eager mode), ``"auto"`` (the
    default) in a ``learn()`` call expected to make at least :data:`AUTO_COMPILE_MIN_GRADIENT_STEPS` (20,000)
    gradient steps, where the one-off compilation (tens of seconds on CPU) pays for itself; shorter calls, and
    ``train()`` called outside ``learn()``, stay eager. Compiled, a gradient step costs about half an eager one
    on CPU (``benchmarks/step_cost.py``). The updates are those of eager mode up to floating-point rounding. A
    compilation that fails (e.g. no C++ compiler) falls back to eager mode with a warning. With ``True`` only,
    the optimizer step also calls PyTorch's fused Adam kernel directly
    (:class:`~sb3_distill.common.utils.FusedAdamStep`, PyTorch internals); otherwise the optimizers step
    through the public ``optimizer.step()``.
    """

    student_learning_rate: float | Schedule | None
    student_lr_schedule: Schedule
    distill_diagnostics: bool
    torch_compile: bool | str
    _compiled_gradient_step: Callable[..., tuple[list[th.Tensor], tuple[th.Tensor, ...]]] | None
    #: Whether train() uses the compiled gradient step (``torch_compile=True``, or "auto" in a long ``learn()``)
    _compile_active: bool = False
    #: The compilation failed: eager mode for the rest of the model's life (one warning)
    _compile_failed: bool = False
    #: The diagnostics of the last train() call are not recorded yet
    _diagnostics_pending: bool = False

    def _setup_student_schedule(self) -> None:
        """The students' learning-rate schedule (the teachers' is SB3's ``lr_schedule``), checked where evaluated."""
        self.student_lr_schedule = CheckedSchedule(
            self._student_learning_rate(), "student_learning_rate", STUDENT_LEARNING_RATE
        )

    def _student_learning_rate(self) -> float | Schedule:
        """The students' learning rate: ``student_learning_rate``, or the teachers' when it is None."""
        return self.learning_rate if self.student_learning_rate is None else self.student_learning_rate

    def _update_learning_rates(self, student_optimizer: th.optim.Optimizer) -> float:
        """
        Set the teachers' learning rate (SB3's ``_update_learning_rate``, logged as ``train/learning_rate``) and
        the students' (logged as ``train/student_learning_rate``). An optimizer shared by teachers and students
        gets the teachers' rate.

        :param student_optimizer: the students' optimizer
        :return: the students' current learning rate
        """
        student_learning_rate = self.student_lr_schedule(self._current_progress_remaining)
        if student_optimizer is not self.policy.optimizer:
            update_learning_rate(student_optimizer, student_learning_rate)
        self._update_learning_rate(self.policy.optimizer)
        self.logger.record("train/student_learning_rate", student_learning_rate)
        return student_learning_rate

    @abstractmethod
    def _trained_modules(self) -> list[tuple[th.nn.Module, int]]:
        """
        The modules one gradient step trains, each with its number of stacked members (1 for a plain network),
        in the order :meth:`_parameter_stacks` returns their parameters.
        """

    def _parameter_stacks(self) -> list[tuple[list[th.Tensor], int]]:
        """
        The parameters of :meth:`_trained_modules`, each list with its number of stacked members, built once per
        policy (``load()`` and ``set_parameters`` keep the parameter tensors, which are updated in place).

        :return: the parameter lists, with the number of members of each
        """
        cache = self.__dict__.get("_parameter_stacks_cache")
        if cache is None or cache[0] is not self.policy:
            stacks: list[tuple[list[th.Tensor], int]] = [
                (list(module.parameters()), n_members) for module, n_members in self._trained_modules()
            ]
            cache = (self.policy, stacks)
            self._parameter_stacks_cache = cache
        return cache[1]

    @abstractmethod
    def _step_losses(self, *batch: Any) -> tuple[th.Tensor, ...]:
        """
        The losses of one gradient step on one batch.

        :param batch: the batch, as ``train()`` passes it to :meth:`_gradient_step`
        :return: the loss to minimise (the sum of every member's loss), then the losses ``train()`` logs
        """

    def _losses_and_gradients(self, *batch: Any) -> tuple[list[th.Tensor], tuple[th.Tensor, ...]]:
        """
        The losses of one gradient step, their gradients and the gradient-norm clipping of each member
        (``max_grad_norm``): everything but the optimizer step, as one pure function that ``torch_compile=True``
        compiles into one graph (forward passes, losses, backward pass, clipping). Teachers' and students'
        parameters are disjoint (or disjoint slices of one stack), so the gradient of the summed loss gives each
        network the gradient of its own loss.

        :param batch: the batch, as ``train()`` passes it to :meth:`_gradient_step`
        :return: the clipped gradients of the parameters of :meth:`_parameter_stacks`, in their order, and the
            logged losses of :meth:`_step_losses`, detached
        """
        total_loss, *losses = self._step_losses(*batch)
        stacks = self._parameter_stacks()
        # One backward pass of the sum
        parameters = [param for stack, _ in stacks for param in stack]
        gradients = list(th.autograd.grad(total_loss, parameters, allow_unused=True, materialize_grads=True))
        clipped: list[th.Tensor] = []
        for stack, n_members in stacks:
            clipped += clipped_per_member(gradients[len(clipped) : len(clipped) + len(stack)], self.max_grad_norm, n_members)
        return clipped, tuple(loss.detach() for loss in losses)

    def _setup_gradient_step(self) -> None:
        """
        The gradient step, eager or compiled (``torch_compile``, checked here; not saved: rebuilt on load). The
        compiled step is made at its first use (:meth:`_gradient_step`): a model that never compiles never
        imports TorchDynamo.
        """
        check_choice(self.torch_compile, "torch_compile", TORCH_COMPILE_CHOICES)
        self._compiled_gradient_step = None
        self._compile_failed = False
        self._compile_active = self.torch_compile is True

    def _expected_gradient_steps(self, total_timesteps: int, reset_num_timesteps: bool) -> float:
        """
        About how many gradient steps a ``learn(total_timesteps)`` call makes: its environment steps after the
        warm-up (``learning_starts``) over ``train_freq`` (counted in steps, also when its unit is episodes),
        times ``gradient_steps``.
        """
        start = 0 if reset_num_timesteps else self.num_timesteps
        after_warm_up = max(0, total_timesteps - max(0, self.learning_starts - start))
        steps_per_call = self.train_freq.frequency * self.n_envs  # type: ignore[union-attr]
        updates_per_call = self.gradient_steps if self.gradient_steps >= 0 else steps_per_call
        return after_warm_up / steps_per_call * updates_per_call

    def _gradient_step(self, *batch: Any) -> tuple[th.Tensor, ...]:
        """
        :meth:`_losses_and_gradients`, compiled when ``torch_compile`` is True or "auto" in a long ``learn()``;
        a compilation that fails (no C++ compiler, an older PyTorch) falls back to eager mode with a warning.

        :param batch: the batch
        :return: the logged losses, detached
        """
        gradients: list[th.Tensor] | None = None
        losses: tuple[th.Tensor, ...] = ()
        if self._compile_active and not self._compile_failed:
            try:
                if self._compiled_gradient_step is None:
                    self._compiled_gradient_step = compile_keeping_distribution_checks(self._losses_and_gradients)
                with _trace_autograd_ops():
                    gradients, losses = self._compiled_gradient_step(*batch)
            except Exception as error:
                # torch.compile could not build the step (e.g. no C++ compiler): eager from now on
                warnings.warn(
                    f"`torch_compile={self.torch_compile!r}` failed ({type(error).__name__}: {error}); using eager mode"
                )
                self._compiled_gradient_step, self._compile_failed = None, True
        if gradients is None:
            gradients, losses = self._losses_and_gradients(*batch)
        # The optimizers read `.grad` (as after zero_grad() and backward())
        parameters = (param for stack, _ in self._parameter_stacks() for param in stack)
        for param, gradient in zip(parameters, gradients, strict=True):
            param.grad = gradient
        return losses

    def _step_optimizers(self) -> None:
        """
        One step of the teachers' and the students' optimizers. By default (``torch_compile`` False or "auto")
        ``optimizer.step()`` (PyTorch's public API). With ``torch_compile=True`` (the opt-in fastest path) and
        fused Adam/AdamW (the default optimizer), one direct call of PyTorch's fused kernel per learning rate instead
        (:class:`~sb3_distill.common.utils.FusedAdamStep`: PyTorch internals, tested bit-identical to
        ``optimizer.step()`` on torch 2.13; it falls back to ``optimizer.step()`` whenever it does not apply).
        """
        if self.torch_compile is not True:
            public: list[th.optim.Optimizer] = [self.policy.optimizer, self.policy.student_optimizer]  # type: ignore[list-item]
            for optimizer in dict.fromkeys(public):
                optimizer.step()
            return
        cache = self.__dict__.get("_optimizer_step_cache")
        if cache is None or cache[0] is not self.policy:
            optimizers = [self.policy.optimizer, self.policy.student_optimizer]
            cache = (self.policy, FusedAdamStep(optimizers))  # type: ignore[arg-type]
            self._optimizer_step_cache = cache
        cache[1].step()

    @abstractmethod
    def acting_q_values(self, obs: PyTorchObs, n_envs: int) -> th.Tensor:
        """
        The Q-values of the member that drives each env at this step.

        :param obs: the observations of the envs, shape (n_envs, ...)
        :param n_envs: number of envs
        :return: Q-values, shape (n_envs, n_actions)
        """

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: Any = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        The acting members' actions, epsilon-greedy with the exploration schedule (one draw per env);
        before ``learning_starts``, actions are uniformly random, as in DQN.

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
            actions = self.acting_q_values(obs_tensor, n_envs).argmax(dim=-1).cpu().numpy()
        actions = epsilon_greedy(actions, self.exploration_rate, self.action_space)  # type: ignore[arg-type]
        return actions, actions

    @abstractmethod
    def member_q_functions(self) -> dict[str, Callable[[PyTorchObs], th.Tensor]]:
        """Member name -> function from an observation tensor to its Q-values (batch, n_actions)."""

    def evaluate_members(self, env: GymEnv, n_eval_episodes: int = 10) -> dict[str, tuple[float, float]]:
        """
        Evaluate every member (teachers and students), each acting greedily on its own Q-values, with SB3's
        ``evaluate_policy``.

        :param env: The evaluation environment (wrap it with ``Monitor`` to count the original rewards)
        :param n_eval_episodes: Number of episodes per member
        :return: member name -> (mean return, std of the return)
        """
        return evaluate_q_functions(self.policy, self.member_q_functions(), env, n_eval_episodes)

    def _export_dqn(self, student_kwargs: dict[str, Any]) -> DQN:
        """A plain ``DQN`` with this model's hyperparameters, the students' learning rate and a student's network."""
        return dqn_for_export(self, student_kwargs, self._student_learning_rate())

    @abstractmethod
    def _record_distill_diagnostics(self) -> None:
        """Record the distillation diagnostics of the last gradient step (``distill_diagnostics=True``)."""

    def _flush_diagnostics(self) -> None:
        """Record the diagnostics of the last ``train()`` call if they are not recorded yet."""
        if self._diagnostics_pending:
            self._diagnostics_pending = False
            if self.distill_diagnostics:
                self._record_distill_diagnostics()

    def dump_logs(self) -> None:
        # The diagnostics are recorded just before the logger writes (once per dump, not per train() call)
        self._flush_diagnostics()
        super().dump_logs()

    def learn(
        self: SelfDistillDQN,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDistillDQN:
        if self.torch_compile == "auto":
            # Compile where it pays for itself: a long call (the decision is remade at every call)
            expected = self._expected_gradient_steps(total_timesteps, reset_num_timesteps)
            self._compile_active = expected >= AUTO_COMPILE_MIN_GRADIENT_STEPS
        super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
        # The last train() calls' diagnostics, so that the logger holds them when learn() returns
        self._flush_diagnostics()
        return self

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_parameter_stacks_cache",
            "_optimizer_step_cache",
            "_diagnostics_pending",
            "_compiled_gradient_step",
            "_compile_active",
            "_compile_failed",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer", "policy.student_optimizer"]
        return state_dicts, []
