"""
The base of the two DQN distillers (EnsembleDistillDQN, RealTimeDistillDQN): teachers trained by DQN's
update in the same run as their students, the students with an optimizer and a learning-rate schedule of
their own, stacked members clipped one by one, every member evaluable and a student exportable as a
plain SB3 ``DQN``.
"""

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.common.utils import update_learning_rate

from sb3_distill.common.base import PolicyLayoutMixin
from sb3_distill.common.save import AtomicSaveMixin
from sb3_distill.common.utils import clip_grad_norm_per_member_, dqn_for_export, epsilon_greedy, evaluate_q_functions
from sb3_distill.common.validation import STUDENT_LEARNING_RATE, CheckedSchedule


class DistillDQN(AtomicSaveMixin, PolicyLayoutMixin, DQN):
    """
    What the DQN distillers share beyond DQN. Subclasses implement :meth:`acting_q_values` (who acts) and
    :meth:`member_q_functions` (who is evaluated), call :meth:`_setup_student_schedule` in ``_setup_model``
    and use :meth:`_update_learning_rates` and :meth:`_backward_and_clip` in ``train()``, whose skeleton
    stays DQN's.
    """

    student_learning_rate: float | Schedule | None
    student_lr_schedule: Schedule

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

    def _backward_and_clip(self, loss: th.Tensor, stacks: Sequence[tuple[Sequence[th.Tensor], int]]) -> None:
        """
        One backward pass of the summed loss, then gradient-norm clipping of each member (``max_grad_norm``).
        Teachers' and students' parameters are disjoint (or disjoint slices of one stack), so one backward
        pass of the sum gives each network the gradient of its own loss.

        :param loss: the sum of every member's loss
        :param stacks: each group of parameters with its number of stacked members (1 for a plain network)
        """
        # Clear the gradients (what the optimizers' zero_grad() do, without their per-call overhead)
        for parameters, _ in stacks:
            for param in parameters:
                param.grad = None
        loss.backward()
        for parameters, n_members in stacks:
            clip_grad_norm_per_member_(parameters, self.max_grad_norm, n_members)

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

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer", "policy.student_optimizer"]
        return state_dicts, []
