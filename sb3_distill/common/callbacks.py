"""Callbacks shared by the sb3_distill algorithms."""

import warnings

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.type_aliases import GymEnv


class EvalMembersCallback(BaseCallback):
    """
    Evaluate every member of a distillation model (each teacher and each student) every ``eval_freq``
    calls and log ``eval/<member>`` (mean return), ``eval/<member>_std`` and ``eval/<student>_to_teachers``
    (each student's mean return divided by the teachers' mean), e.g. ``eval/student_to_teachers`` for
    EnsembleDistillDQN and ``eval/student_0_to_teachers`` for RealTimeDistillDQN.

    The model must provide ``evaluate_members(env, n_eval_episodes)``; each member acts greedily. Every
    evaluation is kept in ``evaluations`` (``(num_timesteps, results)``), and a warning is raised when a
    student's mean return is below the worst teacher's (:func:`students_below_teachers`).

    :param eval_env: The environment used for evaluation, or an env id (``gym.make(eval_env)`` wrapped in a
        ``Monitor``), so that rl-zoo3's ``callback`` hyperparameter can give it in YAML
    :param eval_freq: Evaluate every ``eval_freq`` calls of the callback (as ``EvalCallback``, one call is
        one ``env.step()`` of the training VecEnv, that is ``n_envs`` timesteps)
    :param n_eval_episodes: The number of episodes per member and evaluation
    :param verbose: Verbosity level: 0 no output, 1 a line per evaluation
    """

    def __init__(
        self,
        eval_env: GymEnv | str,
        eval_freq: int = 10_000,
        n_eval_episodes: int = 5,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose=verbose)
        if eval_freq < 1:
            raise ValueError(f"`eval_freq` must be a positive integer, got {eval_freq!r}")
        if n_eval_episodes < 1:
            raise ValueError(f"`n_eval_episodes` must be a positive integer, got {n_eval_episodes!r}")
        if isinstance(eval_env, str):
            eval_env = Monitor(gym.make(eval_env))
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.last_results: dict[str, tuple[float, float]] = {}
        self.evaluations: list[tuple[int, dict[str, tuple[float, float]]]] = []

    def _init_callback(self) -> None:
        if not hasattr(self.model, "evaluate_members"):
            raise TypeError(f"`EvalMembersCallback` needs a model with `evaluate_members()`, got {type(self.model).__name__}")

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq == 0:
            results = self.model.evaluate_members(  # type: ignore[attr-defined]
                self.eval_env, n_eval_episodes=self.n_eval_episodes
            )
            self.last_results = results
            self.evaluations.append((self.num_timesteps, results))
            for name, (mean, std) in results.items():
                self.logger.record(f"eval/{name}", mean)
                self.logger.record(f"eval/{name}_std", std)
            derived = self._record_derived(results)
            if self.verbose >= 1:
                summary = ", ".join(f"{name}={mean:.1f}" for name, (mean, _) in results.items())
                print(f"Eval num_timesteps={self.num_timesteps}: {summary}, {derived}")
        return True

    def _record_derived(self, results: dict[str, tuple[float, float]]) -> str:
        """
        Log what is derived from the members' results: each student's return over the teachers' mean.

        :param results: member name -> (mean, std)
        :return: the same figures as text, for the verbose line
        """
        ratios = student_to_teachers_ratios(results)
        for name, ratio in ratios.items():
            self.logger.record(f"eval/{name}_to_teachers", ratio)
        for name in students_below_teachers(results):
            warnings.warn(
                f"At {self.num_timesteps} timesteps the {name}'s evaluation ({results[name][0]:.4g}) is below every "
                f"teacher's ({', '.join(f'{mean:.4g}' for key, (mean, _) in results.items() if key.startswith('teacher'))}): "
                "it follows a bad teacher or none; see train/agreement_teacher_* and train/one_hot_rate_teacher_*.",
                stacklevel=2,
            )
        return ", ".join(f"{name}/teachers={ratio:.3f}" for name, ratio in ratios.items())


def student_to_teachers_ratios(results: dict[str, tuple[float, float]]) -> dict[str, float]:
    """
    Each student's mean return divided by the mean of the teachers' mean returns (the "percentage of
    the teacher's score" of Sun & Fazli, as a fraction).

    :param results: member name -> (mean, std), with ``"teacher..."`` and ``"student..."`` entries
    :return: student name -> ratio (``nan`` when the teachers' mean is 0)
    """
    teachers_mean = float(np.mean([mean for name, (mean, _) in results.items() if name.startswith("teacher")]))
    return {
        name: mean / teachers_mean if teachers_mean != 0 else float("nan")
        for name, (mean, _) in results.items()
        if name.startswith("student")
    }


def students_below_teachers(results: dict[str, tuple[float, float]]) -> list[str]:
    """
    The students whose mean return is below the worst teacher's.

    :param results: member name -> (mean, std), with ``"teacher..."`` and ``"student..."`` entries
    :return: the names of those students (empty without teachers)
    """
    teacher_means = [mean for name, (mean, _) in results.items() if name.startswith("teacher")]
    if not teacher_means:
        return []
    return [name for name, (mean, _) in results.items() if name.startswith("student") and mean < min(teacher_means)]


class EvalEnsembleCallback(EvalMembersCallback):
    """
    Evaluate every member of an ensemble whose members are peers (PIEKDSAC's ``member_0``, ``member_1``, ...)
    every ``eval_freq`` calls and log ``eval/<member>`` (mean return), ``eval/<member>_std``, and the best and
    the worst member's mean return, ``eval/best_member`` and ``eval/worst_member`` (what Hong et al. plot).

    The model must provide ``evaluate_members(env, n_eval_episodes)``.

    :param eval_env: The environment used for evaluation, or an env id (``gym.make(eval_env)`` wrapped in a
        ``Monitor``), so that rl-zoo3's ``callback`` hyperparameter can give it in YAML
    :param eval_freq: Evaluate every ``eval_freq`` calls of the callback (as ``EvalCallback``, one call is
        one ``env.step()`` of the training VecEnv, that is ``n_envs`` timesteps)
    :param n_eval_episodes: The number of episodes per member and evaluation
    :param verbose: Verbosity level: 0 no output, 1 a line per evaluation
    """

    def _record_derived(self, results: dict[str, tuple[float, float]]) -> str:
        """
        Log the best and the worst member's mean return.

        :param results: member name -> (mean, std)
        :return: the same figures as text, for the verbose line
        """
        means = [mean for mean, _ in results.values()]
        self.logger.record("eval/best_member", max(means))
        self.logger.record("eval/worst_member", min(means))
        return f"best={max(means):.1f}, worst={min(means):.1f}"
