"""
Policies of PolicyDistillation: a frozen teacher policy and a trainable student policy of the natural SB3
kind, held in one module so that both are saved with the model.
"""

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_distill.common.teachers import ObservationNormalizer, Teacher, TeacherPreprocessing


class DistillationPolicy(BasePolicy):
    """
    A frozen teacher policy and a trainable student policy, both plain SB3 policies, in one module.
    ``predict()`` and ``forward()`` use the student; the teacher is always in evaluation mode.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (passed to both SB3 policies, which need one to be built;
        the student is trained by this policy's ``optimizer``)
    :param teacher_policy_class: the teacher's SB3 policy class
    :param teacher_policy_kwargs: the teacher policy's constructor parameters (``_get_constructor_parameters()``
        without the spaces and schedule)
    :param student_policy_class: the student's SB3 policy class
    :param student_policy_kwargs: keyword arguments of the student policy (its network)
    :param distill_value: whether the student's value function (V or Q heads) is trained too, so that the
        optimizer covers it
    :param optimizer_class: The optimizer of the student
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
    :param teacher_preprocessing: the observation preprocessing the teacher was trained with (frozen
        ``VecNormalize`` statistics), applied to the observations before both policies see them: in
        ``predict()`` and on the replay buffer's batches (which hold raw observations)
    """

    #: The SB3 alias of the student's policy class (resolved against the student algorithm's aliases)
    student_policy_alias: ClassVar[str] = "MlpPolicy"
    teacher: BasePolicy
    student: BasePolicy

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        teacher_policy_class: type[BasePolicy],
        teacher_policy_kwargs: dict[str, Any],
        student_policy_class: type[BasePolicy],
        student_policy_kwargs: dict[str, Any],
        distill_value: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        teacher_preprocessing: TeacherPreprocessing | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.teacher_policy_class = teacher_policy_class
        self.teacher_policy_kwargs = teacher_policy_kwargs
        self.student_policy_class = student_policy_class
        self.student_policy_kwargs = student_policy_kwargs
        self.distill_value = distill_value
        self.teacher_preprocessing = teacher_preprocessing
        self.teacher = teacher_policy_class(observation_space, action_space, lr_schedule, **teacher_policy_kwargs)
        self.teacher.set_training_mode(False)
        self.teacher.requires_grad_(False)
        self.student = student_policy_class(observation_space, action_space, lr_schedule, **student_policy_kwargs)
        # The frozen normalisation both policies see observations through (identity without statistics)
        self.obs_normalizer = ObservationNormalizer(teacher_preprocessing)
        self.optimizer = self.optimizer_class(
            self.student_trainable_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs  # type: ignore[call-arg]
        )

    @property
    def teacher_adapter(self) -> Teacher:
        """The teacher seen through its :class:`~sb3_distill.common.teachers.Teacher` adapter."""
        return Teacher.for_policy(self.teacher)

    @property
    def student_adapter(self) -> Teacher:
        """The student seen through the same kind of adapter (it is a plain SB3 policy too)."""
        return Teacher.for_policy(self.student)

    def student_trainable_parameters(self) -> list[nn.Parameter]:
        """
        The student parameters that distillation trains: the Q-network of a DQN student; the actor (and the
        critic with ``distill_value``) of a SAC/TD3 student; the whole policy of an actor-critic student
        (its value head only changes with ``distill_value``).

        :return: the parameters
        """
        return self.student_adapter.trainable_parameters(self.distill_value)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            teacher_policy_class=self.teacher_policy_class,
            teacher_policy_kwargs=self.teacher_policy_kwargs,
            student_policy_class=self.student_policy_class,
            student_policy_kwargs=self.student_policy_kwargs,
            distill_value=self.distill_value,
            teacher_preprocessing=self.teacher_preprocessing,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )

    @staticmethod
    def _dummy_schedule(_: float) -> float:
        return 0.0

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the student in training or evaluation mode; the teacher stays in evaluation mode.

        :param mode: True for training mode
        """
        self.student.set_training_mode(mode)
        self.training = mode

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.student._predict(observation, deterministic=deterministic)

    def normalize_obs(self, observation: np.ndarray | dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        """The raw observation(s) as the teacher was trained to see them (frozen ``VecNormalize`` statistics)."""
        if self.teacher_preprocessing is None or isinstance(observation, dict):
            return observation
        return self.teacher_preprocessing.normalize(observation)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        The student's action(s) from an observation, as the student's own SB3 policy gives them.

        :param observation: the input observation
        :param state: The last hidden states (unused)
        :param episode_start: The last masks (unused)
        :param deterministic: Whether or not to return deterministic actions.
        :return: the student's action and the state
        """
        # Evaluation mode, as SB3's BasePolicy.predict (the student's predict switches only the student)
        self.set_training_mode(False)
        return self.student.predict(self.normalize_obs(observation), state, episode_start, deterministic)


class MlpPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``MlpPolicy``."""

    student_policy_alias = "MlpPolicy"


class CnnPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``CnnPolicy``."""

    student_policy_alias = "CnnPolicy"


class MultiInputPolicy(DistillationPolicy):
    """A DistillationPolicy whose student uses the student algorithm's ``MultiInputPolicy``."""

    student_policy_alias = "MultiInputPolicy"
