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
    count_parameters,
    make_q_network,
    resolve_student_kwargs,
)
from sb3_distill.common.utils import fast_optimizer_kwargs, set_training_flag

# Keys of one student's description: DQN's `policy_kwargs` but the optimizer, which all students share
REALTIME_STUDENT_KEYS = (
    "net_arch",
    "activation_fn",
    "features_extractor_class",
    "features_extractor_kwargs",
    "normalize_images",
)


def check_students(students: list[dict[str, Any]] | None) -> None:
    """
    Raise a ``ValueError``/``TypeError`` for a list of student descriptions that cannot be built.

    :param students: one network description per student, or None for the default single student
    """
    if students is None:
        return
    if not isinstance(students, (list, tuple)) or len(students) == 0:
        raise ValueError(
            f"`students` must be a non-empty list of dicts (one network description per student), got {students!r}"
        )
    for index, student in enumerate(students):
        check_student_policy_kwargs(student, name=f"students[{index}]", accepted_keys=REALTIME_STUDENT_KEYS)


def member_names(n_students: int) -> list[str]:
    """The member names used by ``predict_member`` and ``evaluate_members``: "teacher", "student_0", ..."""
    return ["teacher"] + [f"student_{index}" for index in range(n_students)]


def group_stackable(networks: list[QNetwork]) -> list[list[int]]:
    """
    Group Q-networks into stacks, first fit in order: a network joins the first group it can be stacked with
    (same layer structure, any widths: narrower ones are zero-padded, which is exact).

    :param networks: the networks
    :return: the indices of each group's networks, in order
    """
    groups: list[list[int]] = []
    for index, network in enumerate(networks):
        for group in groups:
            try:
                StackedQNetwork.from_q_networks([networks[i] for i in group] + [network])
            except ValueError:
                continue
            group.append(index)
            break
        else:
            groups.append([index])
    return groups


class RealTimeDistillDQNPolicy(DQNPolicy):
    """
    Policy for RealTimeDistillDQN: the teacher's Q-network and target (``q_net``, ``q_net_target``, as in
    DQN) and one or more students. Students with the same layer structure (of any widths: narrower ones are
    zero-padded, which is exact) are stacked into one ``StackedQNetwork`` (``student_stacks``, with targets
    in ``student_stack_targets``) and trained as one batched computation; student i is member
    ``student_members[i]`` = (stack, index in the stack).

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The teacher's hidden layers (as DQN's ``net_arch``)
    :param activation_fn: The teacher's activation function
    :param features_extractor_class: The teacher's features extractor
    :param features_extractor_kwargs: Keyword arguments to pass to the teacher's features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use (the teacher's, and the students' shared one),
        ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizers.
        Adam and AdamW use PyTorch's fused implementation unless ``fused`` or ``foreach`` is given here.
    :param students: One description per student, with the keys ``net_arch``, ``activation_fn``,
        ``features_extractor_class`` (``FlattenExtractor``, ``NatureCNN`` or ``CompactNatureCNN``: students are
        stacked), ``features_extractor_kwargs``, ``normalize_images``. None: one default student
        (the paper's Net3 ``{16, 16, 16, 64}`` for images, ``net_arch=[16, 16]`` otherwise).
    :param predict_member: The member ``predict()`` uses: ``"teacher"`` or ``"student_<i>"``
    :param stack_teacher: Put the teacher into the first students' stack it can join (member 0; same layer
        structure, zero-padding where widths differ): teacher and students then run as one batched forward,
        backward and optimizer step, and ``q_net`` / ``q_net_target`` are views of that member (one optimizer
        covers the stack; the algorithm rescales the students' updates when their learning rate differs).
    """

    student_stacks: nn.ModuleList
    student_stack_targets: nn.ModuleList
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
        students: list[dict[str, Any]] | None = None,
        predict_member: str = "student_0",
        stack_teacher: bool = False,
    ) -> None:
        check_students(students)
        self.stack_teacher = stack_teacher
        self.students = students
        self.student_kwargs = [
            resolve_student_kwargs(student, features_extractor_class, normalize_images, optimizer_class, optimizer_kwargs)
            for student in (students or [None])  # type: ignore[list-item]
        ]
        if predict_member not in member_names(len(self.student_kwargs)):
            raise ValueError(
                f"`predict_member` must be one of {member_names(len(self.student_kwargs))}, got {predict_member!r}"
            )
        self.predict_member = predict_member
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
        Create the teacher (as DQNPolicy), the stacked students, their targets and optimizers.

        :param lr_schedule: Learning rate schedule; lr_schedule(1) is the initial learning rate
            (the algorithm sets the students' own schedule at every update)
        """
        teacher = self.make_q_net()
        self.teacher_parameter_count = count_parameters(teacher)
        # Group the students into stacks (with `stack_teacher`, the teacher is tried first, as member 0 of the first)
        students = [make_q_network(self.observation_space, self.action_space, kwargs) for kwargs in self.student_kwargs]  # type: ignore[arg-type]
        networks = [teacher, *students] if self.stack_teacher else students
        groups = group_stackable(networks)
        # A teacher that no student can join stays on its own
        self.teacher_in_stack = self.stack_teacher and len(groups[0]) > 1
        if self.stack_teacher and not self.teacher_in_stack:
            groups = [[index - 1 for index in group] for group in groups[1:]]
            networks = students
        offset = 1 if self.teacher_in_stack else 0
        self.student_members: list[tuple[int, int]] = [(0, 0)] * len(students)
        stacks, targets = [], []
        for stack_index, group in enumerate(groups):
            stacks.append(StackedQNetwork.from_q_networks([networks[i] for i in group]))
            targets.append(StackedQNetwork.from_q_networks([networks[i] for i in group]))
            for member, index in enumerate(group):
                if index >= offset:
                    self.student_members[index - offset] = (stack_index, member)
        self.student_stacks = nn.ModuleList(stacks)
        self.student_stack_targets = nn.ModuleList(targets)
        # Target networks stay in evaluation mode, as in DQNPolicy
        self.student_stack_targets.train(False)
        if self.teacher_in_stack:
            # The teacher is member 0 of stack 0; one optimizer covers teacher and students (Adam is
            # elementwise: each member still has its own Adam)
            self.q_net = stacks[0].member(0)  # type: ignore[assignment]
            self.q_net_target = targets[0].member(0)  # type: ignore[assignment]
            self.q_net_target.set_training_mode(False)
            self.optimizer = self._make_optimizer(self.student_stacks, lr_schedule)
            self.student_optimizer = self.optimizer
            return
        # The teacher, as in DQNPolicy._build (with the fused optimizer)
        self.q_net = teacher
        self.q_net_target = self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.optimizer = self._make_optimizer(self.q_net, lr_schedule)
        # One optimizer over all students: Adam is elementwise, so each student has its own Adam
        self.student_optimizer = self._make_optimizer(self.student_stacks, lr_schedule)

    def _make_optimizer(self, module: nn.Module, lr_schedule: Schedule) -> th.optim.Optimizer:
        """The policy's optimizer class over ``module``'s parameters (PyTorch's fused Adam by default)."""
        return self.optimizer_class(  # type: ignore[call-arg]
            module.parameters(),
            lr=lr_schedule(1),
            **fast_optimizer_kwargs(self.optimizer_class, self.optimizer_kwargs, self.device),
        )

    def member_learning_rate_factors(self, teacher_rate: float, student_rate: float) -> list[th.Tensor] | None:
        """
        With the teacher in the first students' stack and a students' learning rate of their own, the factors by
        which the members of each stack scale the shared optimizer's update (made at the teacher's rate):
        1 for the teacher (member 0 of stack 0), ``student_rate / teacher_rate`` for every student.

        :param teacher_rate: the teacher's current learning rate
        :param student_rate: the students' current learning rate
        :return: one tensor of shape (K_i,) per stack, or None when no rescaling is needed
        """
        if not self.teacher_in_stack or student_rate == teacher_rate:
            return None
        factors = [
            th.full((stack.n_members,), student_rate / teacher_rate, device=self.device)  # type: ignore[arg-type]
            for stack in self.student_stacks
        ]
        factors[0][0] = 1.0
        return factors

    def member_q_values(self, obs: PyTorchObs, member: str) -> th.Tensor:
        """
        Q-values of one member.

        :param obs: observations (batch, ...)
        :param member: ``"teacher"`` or ``"student_<i>"``
        :return: Q-values, shape (batch, n_actions)
        """
        if member == "teacher":
            return self.q_net(obs)
        stack, index = self.student_members[int(member.split("_")[1])]
        stacked: StackedQNetwork = self.student_stacks[stack]  # type: ignore[assignment]
        return stacked.member(index)(obs)

    def _predict(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        # Greedy action of the chosen member (a student by default: the deployed network)
        return self.member_q_values(obs, self.predict_member).argmax(dim=1).reshape(-1)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the teacher and the students in either training or evaluation mode.

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        # The targets stay in evaluation mode, as in DQNPolicy
        set_training_flag((self.q_net, self.student_stacks), mode)
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(students=self.students, predict_member=self.predict_member, stack_teacher=self.stack_teacher))
        return data


MlpPolicy = RealTimeDistillDQNPolicy


class CnnPolicy(RealTimeDistillDQNPolicy):
    """
    RealTimeDistillDQN policy for image observations: a Nature-DQN teacher ``{32, 64, 64, 512}`` and, by
    default, one student ``{16, 16, 16, 64}`` (the paper's Net3).

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The teacher's hidden layers after the CNN
    :param activation_fn: The teacher's activation function
    :param features_extractor_class: The teacher's features extractor
    :param features_extractor_kwargs: Keyword arguments to pass to the teacher's features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizers
    :param students: One description per student (see ``RealTimeDistillDQNPolicy``)
    :param predict_member: The member ``predict()`` uses: ``"teacher"`` or ``"student_<i>"``
    :param stack_teacher: Put the teacher into the students' stack (see ``RealTimeDistillDQNPolicy``)
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
        students: list[dict[str, Any]] | None = None,
        predict_member: str = "student_0",
        stack_teacher: bool = False,
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
            students,
            predict_member,
            stack_teacher,
        )
