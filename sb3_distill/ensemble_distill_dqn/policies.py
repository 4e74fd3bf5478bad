from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from sb3_distill.common.torch_layers import (
    StackedQNetwork,
    check_student_policy_kwargs,
    make_q_network,
    resolve_student_kwargs,
)
from sb3_distill.common.utils import fast_optimizer_kwargs, set_training_flag


class EnsembleDistillDQNPolicy(DQNPolicy):
    """
    Policy for EnsembleDistillDQN: M teacher Q-networks stacked into one module (``q_net``), their
    stacked target networks (``q_net_target``) and a compact student Q-network (``student``).
    ``predict()`` uses the student, the network a user deploys.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The teachers' hidden layers (as DQN's ``net_arch``)
    :param activation_fn: The teachers' activation function
    :param features_extractor_class: The teachers' features extractor; it must be stackable:
        ``FlattenExtractor``, ``NatureCNN`` or ``CompactNatureCNN``
    :param features_extractor_kwargs: Keyword arguments to pass to the teachers' features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer.
        Adam and AdamW use PyTorch's fused implementation unless ``fused`` or ``foreach`` is given here.
    :param n_teachers: Number of teachers (M in Sun & Fazli)
    :param student_policy_kwargs: The student's network, with the keys of DQN's ``policy_kwargs``
        (``net_arch``, ``activation_fn``, ``features_extractor_class``, ``features_extractor_kwargs``,
        ``normalize_images``, ``optimizer_class``, ``optimizer_kwargs``); missing keys take the defaults of
        :func:`default_student_kwargs`, then the teachers' values for normalization and optimizer.
    """

    q_net: StackedQNetwork  # type: ignore[assignment]
    q_net_target: StackedQNetwork  # type: ignore[assignment]
    student: QNetwork
    student_optimizer: th.optim.Optimizer

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_teachers: int = 3,
        student_policy_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(n_teachers, bool) or not isinstance(n_teachers, int) or n_teachers < 1:
            raise ValueError(f"`n_teachers` must be an integer >= 1 (M, the number of teachers), got {n_teachers!r}")
        check_student_policy_kwargs(student_policy_kwargs)
        self.n_teachers = n_teachers
        self.student_policy_kwargs = student_policy_kwargs
        # The student's full description: the teachers' normalization and optimizer, the default student, the user's keys
        self.student_kwargs = resolve_student_kwargs(
            student_policy_kwargs, features_extractor_class, normalize_images, optimizer_class, optimizer_kwargs
        )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        """
        Create the stacked teachers, their stacked targets, the student and the two optimizers.

        :param lr_schedule: Learning rate schedule; lr_schedule(1) is the initial learning rate
            (the algorithm sets the student's own schedule at every update)
        """
        # M SB3 Q-networks, each with SB3's initialisation, stacked into one module
        teachers = [self.make_q_net() for _ in range(self.n_teachers)]
        self.q_net = StackedQNetwork.from_q_networks(teachers)
        self.q_net_target = StackedQNetwork.from_q_networks(teachers)
        self.q_net_target.set_training_mode(False)
        # One optimizer over the stack: Adam is elementwise, so this is M independent Adams
        # (PyTorch's fused Adam by default: one kernel for all stacked tensors)
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.q_net.parameters(),
            lr=lr_schedule(1),
            **fast_optimizer_kwargs(self.optimizer_class, self.optimizer_kwargs, self.device),
        )
        self.student = self.make_student()
        student_optimizer_class = self.student_kwargs["optimizer_class"]
        self.student_optimizer = student_optimizer_class(
            self.student.parameters(),
            lr=lr_schedule(1),
            **fast_optimizer_kwargs(student_optimizer_class, self.student_kwargs["optimizer_kwargs"], self.device),
        )

    def make_student(self) -> QNetwork:
        """Build the student, a plain SB3 ``QNetwork`` (what :meth:`EnsembleDistillDQN.export_student` exports)."""
        return make_q_network(self.observation_space, self.action_space, self.student_kwargs).to(self.device)  # type: ignore[arg-type]

    def teacher_q_values(self, obs: PyTorchObs, member: int) -> th.Tensor:
        """
        Q-values of one teacher (one stacked forward pass, the member's slice).

        :param obs: observations, shape (batch, ...)
        :param member: the teacher's index j in [0, M)
        :return: Q-values, shape (batch, n_actions)
        """
        return self.q_net.member(member)(obs)

    def _predict(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        # The student is the deployed policy
        return self.student._predict(obs, deterministic=deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the teachers and the student in either training or evaluation mode.

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        # The targets stay in evaluation mode, as in DQNPolicy
        set_training_flag((self.q_net, self.student), mode)
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(n_teachers=self.n_teachers, student_policy_kwargs=self.student_policy_kwargs))
        return data


MlpPolicy = EnsembleDistillDQNPolicy


class CnnPolicy(EnsembleDistillDQNPolicy):
    """
    EnsembleDistillDQN policy for image observations: Nature-DQN teachers ``{32, 64, 64, 512}``
    and, by default, the student1 ``{16, 16, 16, 64}`` of Sun & Fazli.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The teachers' hidden layers after the CNN
    :param activation_fn: The teachers' activation function
    :param features_extractor_class: The teachers' features extractor
    :param features_extractor_kwargs: Keyword arguments to pass to the teachers' features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
    :param n_teachers: Number of teachers (M in Sun & Fazli)
    :param student_policy_kwargs: The student's network, with the keys of DQN's ``policy_kwargs``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_teachers: int = 3,
        student_policy_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
            n_teachers,
            student_policy_kwargs,
        )
