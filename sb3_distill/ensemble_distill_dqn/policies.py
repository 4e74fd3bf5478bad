from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from sb3_distill.common.torch_layers import CompactNatureCNN, StackedQNetwork
from sb3_distill.common.utils import fast_optimizer_kwargs

# Keys a student description accepts: the same as DQN's `policy_kwargs`
STUDENT_KWARGS_KEYS = (
    "net_arch",
    "activation_fn",
    "features_extractor_class",
    "features_extractor_kwargs",
    "normalize_images",
    "optimizer_class",
    "optimizer_kwargs",
)


def default_student_kwargs(features_extractor_class: type[BaseFeaturesExtractor]) -> dict[str, Any]:
    """
    The student used when none is given: for image teachers (``NatureCNN`` / ``CompactNatureCNN``) the
    paper's student1 ``{16, 16, 16, 64}`` (Sun & Fazli; Rusu et al.), about 3.6 % of the Nature-DQN teacher
    on Atari; otherwise an MLP with two hidden layers of 16 units.

    :param features_extractor_class: the teachers' features extractor class
    :return: the student's network description (keys of DQN's ``policy_kwargs``)
    """
    if issubclass(features_extractor_class, (NatureCNN, CompactNatureCNN)):
        return dict(
            features_extractor_class=CompactNatureCNN,
            features_extractor_kwargs=dict(filters=(16, 16, 16), features_dim=64),
            net_arch=[],
        )
    return dict(net_arch=[16, 16])


def check_student_policy_kwargs(student_policy_kwargs: dict[str, Any] | None) -> None:
    """
    Raise a ``ValueError``/``TypeError`` for a student description that cannot be built.

    :param student_policy_kwargs: the student's network description, or None for the default
    """
    if student_policy_kwargs is None:
        return
    if not isinstance(student_policy_kwargs, dict):
        raise TypeError(f"`student_policy_kwargs` must be a dict or None, got {type(student_policy_kwargs).__name__}")
    unknown = sorted(set(student_policy_kwargs) - set(STUDENT_KWARGS_KEYS))
    if unknown:
        raise ValueError(f"`student_policy_kwargs` got unknown keys {unknown}; accepted keys: {list(STUDENT_KWARGS_KEYS)}")


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
        # The student's full description: the teachers' normalization and optimizer, the default student
        # (whose extractor kwargs only fit the default extractor), then the user's keys
        user_kwargs = student_policy_kwargs or {}
        default_kwargs = default_student_kwargs(features_extractor_class)
        if "features_extractor_class" in user_kwargs:
            default_kwargs.pop("features_extractor_kwargs", None)
        self.student_kwargs: dict[str, Any] = {
            "normalize_images": normalize_images,
            "optimizer_class": optimizer_class,
            "optimizer_kwargs": optimizer_kwargs or {},
            "activation_fn": nn.ReLU,
            "features_extractor_class": FlattenExtractor,
            "features_extractor_kwargs": {},
            **default_kwargs,
            **user_kwargs,
        }
        if self.student_kwargs.get("net_arch") is None:
            # DQNPolicy's rule: no hidden layer after a CNN, two of 64 units otherwise
            cnn = issubclass(self.student_kwargs["features_extractor_class"], (NatureCNN, CompactNatureCNN))
            self.student_kwargs["net_arch"] = [] if cnn else [64, 64]
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
        kwargs = self.student_kwargs
        features_extractor = kwargs["features_extractor_class"](self.observation_space, **kwargs["features_extractor_kwargs"])
        return QNetwork(
            self.observation_space,
            self.action_space,  # type: ignore[arg-type]
            features_extractor=features_extractor,
            features_dim=features_extractor.features_dim,
            net_arch=kwargs["net_arch"],
            activation_fn=kwargs["activation_fn"],
            normalize_images=kwargs["normalize_images"],
        ).to(self.device)

    def _predict(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        # The student is the deployed policy
        return self.student._predict(obs, deterministic=deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put the teachers and the student in either training or evaluation mode.

        :param mode: if true, set to training mode, else set to evaluation mode
        """
        # The same as `self.q_net.train(mode)` and `self.student.train(mode)` (the targets stay in evaluation
        # mode, as in DQNPolicy), without nn.Module.train()'s recursive walk through nn.Module.__setattr__,
        # which SB3 calls twice per rollout and costs more than the teachers' forward pass on small networks
        for module in (self, *self.q_net.modules(), *self.student.modules()):
            module.__dict__["training"] = mode

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
