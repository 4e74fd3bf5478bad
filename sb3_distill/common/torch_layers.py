"""
Networks shared by the sb3_distill algorithms: a Nature-CNN with configurable sizes for compact
students, and a stacked ensemble of M Q-networks that runs as one module (batched matmul and grouped
convolution instead of a Python loop over members).
"""

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.dqn.policies import QNetwork
from torch import nn
from torch.nn import functional as F


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """
    Number of parameters (scalars) of a module.

    :param module: the network
    :param trainable_only: count only parameters with ``requires_grad=True``
    :return: the parameter count
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class CompactNatureCNN(NatureCNN):
    """
    The Nature-DQN CNN (Mnih et al. 2015) with configurable sizes, so that the networks of the
    distillation papers can be written as they are, ``{conv1, conv2, conv3 filters, fc units}``:
    teacher ``{32, 64, 64, 512}`` (the defaults, identical to SB3's ``NatureCNN``), student1
    ``{16, 16, 16, 64}`` and student2 ``{8, 8, 16, 64}`` (Sun & Fazli; Rusu et al.).

    Layers: conv 8x8 stride 4, conv 4x4 stride 2, conv 3x3 stride 1, each followed by ReLU, then a
    fully connected layer of ``features_dim`` units and ReLU.

    :param observation_space: The observation space of the environment (channel-first images)
    :param features_dim: Number of units of the fully connected layer (the last number in the papers)
    :param filters: Number of filters of the three convolutions
    :param normalized_image: Whether to assume that the image is already normalized
        or not (this disables dtype and bounds checks): when True, it only checks that
        the space is a Box and has 3 dimensions.

    It subclasses ``NatureCNN`` (same layers, sizes configurable) so that SB3's policies treat it as one: they
    pass ``normalized_image=True`` to ``NatureCNN`` and its subclasses when ``normalize_images=False``.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 512,
        filters: Sequence[int] = (32, 64, 64),
        normalized_image: bool = False,
    ) -> None:
        if not isinstance(observation_space, spaces.Box) or not is_image_space(
            observation_space, check_channels=False, normalized_image=normalized_image
        ):
            raise ValueError(
                f"`CompactNatureCNN` needs a channel-first image Box observation space, got {observation_space}; "
                "use `MlpPolicy` for vector observations, or `normalized_image=True` for normalized images"
            )
        if len(filters) != 3 or any(int(f) < 1 for f in filters):
            raise ValueError(f"`filters` must be three positive integers (conv1, conv2, conv3), got {filters!r}")
        if features_dim < 1:
            raise ValueError(f"`features_dim` must be a positive integer, got {features_dim!r}")
        # NatureCNN's own layers are not built: only the features extractor's initialisation
        BaseFeaturesExtractor.__init__(self, observation_space, features_dim)
        self.filters = tuple(int(f) for f in filters)
        n_input_channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(n_input_channels, self.filters[0], kernel_size=8, stride=4, padding=0),
            nn.ReLU(),
            nn.Conv2d(self.filters[0], self.filters[1], kernel_size=4, stride=2, padding=0),
            nn.ReLU(),
            nn.Conv2d(self.filters[1], self.filters[2], kernel_size=3, stride=1, padding=0),
            nn.ReLU(),
            nn.Flatten(),
        )
        # Compute shape by doing one forward pass
        try:
            with th.no_grad():
                n_flatten = self.cnn(th.as_tensor(observation_space.sample()[None]).float()).shape[1]
        except RuntimeError as error:
            raise ValueError(
                f"`CompactNatureCNN`'s Nature-DQN layout (8x8 stride 4, 4x4 stride 2, 3x3 convolutions) does not fit "
                f"observations of shape {observation_space.shape}: give the student another network "
                f"(`student_policy_kwargs` / `students`), e.g. an extractor built for small images ({error})"
            ) from None
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


def _stack_padded(tensors: Sequence[th.Tensor]) -> th.Tensor:
    """
    Stack tensors with the same number of dimensions into (M, *max_shape), each one in the leading corner
    of its slice and zeros elsewhere (a copy, without gradient).
    """
    shape = [max(tensor.shape[dim] for tensor in tensors) for dim in range(tensors[0].dim())]
    stacked = th.zeros(len(tensors), *shape, dtype=tensors[0].dtype, device=tensors[0].device)
    with th.no_grad():
        for member, tensor in enumerate(tensors):
            stacked[(member, *[slice(0, size) for size in tensor.shape])] = tensor  # type: ignore[index]
    return stacked


class StackedLinear(nn.Module):
    """
    M independent linear layers held as one weight of shape (M, out_features, in_features) and one
    bias of shape (M, out_features), applied with one batched matmul.

    :param n_members: number of members M
    :param in_features: input size of each member
    :param out_features: output size of each member
    :param shared_input: whether the layer is a stack's first, whose input is one tensor (batch, in) seen by
        every member; the forward pass reads which input it got from the input's shape (see :meth:`forward`)
    """

    def __init__(self, n_members: int, in_features: int, out_features: int, shared_input: bool = False) -> None:
        super().__init__()
        self.n_members = n_members
        self.in_features = in_features
        self.out_features = out_features
        self.shared_input = shared_input
        self.weight = nn.Parameter(th.empty(n_members, out_features, in_features))
        self.bias = nn.Parameter(th.empty(n_members, out_features))

    @classmethod
    def from_modules(cls, layers: Sequence[nn.Linear], shared_input: bool) -> "StackedLinear":
        """
        Stack the weights of M ``nn.Linear`` layers; narrower layers are zero-padded to the widest
        (see :meth:`StackedQNetwork.from_q_networks`).
        """
        weight, bias = _stack_padded([layer.weight for layer in layers]), _stack_padded([layer.bias for layer in layers])
        stacked = cls(len(layers), weight.shape[2], weight.shape[1], shared_input)
        with th.no_grad():
            stacked.weight.copy_(weight)
            stacked.bias.copy_(bias)
        return stacked.to(layers[0].weight.device)

    def forward(self, x: th.Tensor) -> th.Tensor:
        """
        :param x: (batch, in) seen by every member; (M, batch, in), one slice per member; or (M / G, batch, in),
            one slice per group of G consecutive members (the G critics of one SAC agent see the same actions)
        :return: (M, batch, out)
        """
        if x.dim() == 2:
            # (batch, in) -> (batch, M * out) in one matmul -> (M, batch, out)
            out = F.linear(x, self.weight.reshape(-1, self.in_features), self.bias.reshape(-1))
            return out.reshape(x.shape[0], self.n_members, self.out_features).transpose(0, 1)
        if x.shape[0] != self.n_members:
            # One input per group of G members: (M / G, batch, in) @ (M / G, in, G * out) -> (M, batch, out)
            n_groups = x.shape[0]
            grouped_weight = self.weight.reshape(n_groups, -1, self.in_features)
            out = th.baddbmm(self.bias.reshape(n_groups, 1, -1), x, grouped_weight.transpose(1, 2))
            return out.reshape(n_groups, x.shape[1], -1, self.out_features).transpose(1, 2).flatten(0, 1)
        # (M, batch, in) @ (M, in, out) + (M, 1, out) -> (M, batch, out)
        return th.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"n_members={self.n_members}, in_features={self.in_features}, out_features={self.out_features}"


class StackedConv2d(nn.Module):
    """
    M independent 2D convolutions held as one weight (M, out, in, kh, kw) and one bias (M, out),
    applied as one grouped convolution. Activations are laid out as (batch, M * channels, H, W).

    :param n_members: number of members M
    :param conv: a template convolution giving channels, kernel, stride, padding and dilation
    :param shared_input: the input (batch, C, H, W) is the same for every member (the first layer):
        a single convolution with M * out filters; otherwise (batch, M * C, H, W) with ``groups=M``
    """

    def __init__(self, n_members: int, conv: nn.Conv2d, shared_input: bool = False) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or conv.bias is None:
            raise ValueError("Only `nn.Conv2d` layers with groups=1, zero padding and a bias can be stacked")
        self.n_members = n_members
        self.shared_input = shared_input
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.weight = nn.Parameter(th.empty(n_members, *conv.weight.shape))
        self.bias = nn.Parameter(th.empty(n_members, conv.out_channels))

    @classmethod
    def from_modules(cls, layers: Sequence[nn.Conv2d], shared_input: bool) -> "StackedConv2d":
        """
        Stack the weights of M ``nn.Conv2d`` layers with the same kernel, stride, padding and dilation;
        layers with fewer channels are zero-padded to the most (see :meth:`StackedQNetwork.from_q_networks`).
        """
        first = layers[0]
        for layer in layers:
            if (layer.kernel_size, layer.stride, layer.padding, layer.dilation) != (
                first.kernel_size,
                first.stride,
                first.padding,
                first.dilation,
            ):
                raise ValueError("Convolutions with different kernels, strides, paddings or dilations cannot be stacked")
        weight = _stack_padded([layer.weight for layer in layers])
        bias = _stack_padded([layer.bias for layer in layers])  # type: ignore[misc]
        stacked = cls(len(layers), first, shared_input)
        stacked.weight = nn.Parameter(weight.to(first.weight.device))
        stacked.bias = nn.Parameter(bias.to(first.weight.device))
        return stacked

    def forward(self, x: th.Tensor) -> th.Tensor:
        # (M, out, in, kh, kw) -> (M * out, in, kh, kw): member j owns output channels [j * out, (j + 1) * out)
        weight = self.weight.flatten(0, 1)
        groups = 1 if self.shared_input else self.n_members
        return F.conv2d(x, weight, self.bias.flatten(), self.stride, self.padding, self.dilation, groups)

    def extra_repr(self) -> str:
        _, out_channels, in_channels, kh, kw = self.weight.shape
        return f"n_members={self.n_members}, {in_channels}, {out_channels}, kernel_size=({kh}, {kw}), stride={self.stride}"


class StackedFlatten(nn.Module):
    """
    Flatten stacked conv activations (batch, M * C, H, W) into per-member vectors (M, batch, C * H * W),
    in the order ``nn.Flatten`` gives each member.

    :param n_members: number of members M
    """

    def __init__(self, n_members: int) -> None:
        super().__init__()
        self.n_members = n_members

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x.reshape(x.shape[0], self.n_members, -1).transpose(0, 1)


def stack_layers(member_layers: Sequence[Sequence[nn.Module]], padded: bool = False) -> list[nn.Module]:
    """
    Stack M networks given as their leaf layers in forward order (the one builder of every stack: Q-networks,
    SAC actors and critics): each ``nn.Linear`` becomes a :class:`StackedLinear`, each ``nn.Conv2d`` a
    :class:`StackedConv2d`, the ``nn.Flatten`` after convolutions a :class:`StackedFlatten`, and parameter-free
    layers (activations) are shared. Each member keeps its own current weights.

    :param member_layers: each member's layers, in forward order, with one layer structure
    :param padded: whether the members differ in width (then every activation must map 0 to 0, see
        :meth:`StackedQNetwork.from_q_networks`)
    :return: the stacked layers, in forward order; the first one takes the input shared by every member
    """
    n_members = len(member_layers)
    stacked_layers: list[nn.Module] = []
    shared_input, conv_layout = True, False
    for group in zip(*member_layers, strict=True):
        layer = group[0]
        if any(type(other) is not type(layer) for other in group):
            raise ValueError(f"Networks with different layers ({[type(other).__name__ for other in group]}) cannot be stacked")
        if isinstance(layer, nn.Linear):
            stacked_layers.append(StackedLinear.from_modules(group, shared_input))  # type: ignore[arg-type]
            shared_input = False
        elif isinstance(layer, nn.Conv2d):
            if not (shared_input or conv_layout):
                raise ValueError("A convolution after a linear layer cannot be stacked")
            stacked_layers.append(StackedConv2d.from_modules(group, shared_input))  # type: ignore[arg-type]
            shared_input, conv_layout = False, True
        elif isinstance(layer, nn.Flatten) and conv_layout:
            stacked_layers.append(StackedFlatten(n_members))
            conv_layout = False
        elif isinstance(layer, nn.Flatten) and shared_input:
            stacked_layers.append(copy.deepcopy(layer))
        elif next(layer.parameters(), None) is None and next(layer.buffers(), None) is None:
            # Parameter-free elementwise layer (activation function): the same for every member
            if padded and not th.all(layer(th.zeros(3)) == 0):
                raise ValueError(
                    f"Networks of different widths with activation {layer} cannot be zero-padded into one stack "
                    "(the activation must map 0 to 0)"
                )
            stacked_layers.append(copy.deepcopy(layer))
        else:
            raise ValueError(f"Layer {layer} cannot be stacked")
    return stacked_layers


def stack_mlps(mlps: Sequence[Iterable[nn.Module]]) -> nn.Sequential:
    """
    Stack M MLPs of one architecture (e.g. SB3's ``create_mlp`` layers, an actor's ``latent_pi`` or a critic's
    ``qf0``) into one ``nn.Sequential`` of :class:`StackedLinear` and activation layers, whose forward pass maps
    (batch, in), (M, batch, in) or (M / G, batch, in) to (M, batch, out). Its ``state_dict`` keys are those of
    one member's ``nn.Sequential`` (``0.weight``, ``2.weight``, ...), with a leading M dimension.

    :param mlps: the members' layers
    :return: the stacked MLP
    """
    return nn.Sequential(*stack_layers([list(mlp) for mlp in mlps]))


def _member_slice(value: th.Tensor, slot: int, shape: Sequence[int]) -> th.Tensor:
    """Slot ``slot`` of a stacked tensor, cut to ``shape`` (its leading corner when the stack is zero-padded)."""
    part = value[slot]
    if part.dim() == len(shape):
        part = part[tuple(slice(0, size) for size in shape)]
    return part.reshape(tuple(shape))


def copy_member_optimizer_state(
    source: th.optim.Optimizer,
    target: th.optim.Optimizer,
    stacked: th.Tensor,
    plain: th.Tensor,
    slot: int,
) -> None:
    """
    Copy one member's slice of an elementwise optimizer's state (Adam's moments and step count) from a stacked
    parameter to a plain one. Nothing is copied while the stacked parameter has no state (no step yet).

    :param source: the stacked parameter's optimizer
    :param target: the plain parameter's optimizer
    :param stacked: the stacked parameter, shape (M, ...)
    :param plain: the plain parameter (the member's shape, or (1,) for a (M,) stacked scalar)
    :param slot: the member's index along the stacked dimension
    """
    state = source.state.get(stacked)
    if not state:
        return
    member_state: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, th.Tensor) and value.shape == stacked.shape:
            member_state[key] = _member_slice(value.detach(), slot, plain.shape).clone().to(plain.device)
        elif key == "step":
            # The plain (non-fused) Adam keeps its step count as a CPU tensor
            member_state[key] = th.tensor(float(value), dtype=th.float32)
        else:
            member_state[key] = value.clone() if isinstance(value, th.Tensor) else value
    target.state[plain] = member_state


def copy_member_parameter(
    stacked: th.Tensor,
    plain: th.Tensor,
    slot: int,
    optimizer: th.optim.Optimizer | None = None,
    plain_optimizer: th.optim.Optimizer | None = None,
) -> None:
    """
    Copy one member's slot of a stacked parameter into a plain parameter; with both optimizers, its slice of the
    optimizer state too (:func:`copy_member_optimizer_state`).

    :param stacked: the stacked parameter, shape (M, ...)
    :param plain: the plain parameter (the member's shape, or (1,) for a (M,) stacked scalar such as SAC's
        ``log_ent_coef``); overwritten
    :param slot: the member's index along the stacked dimension
    :param optimizer: the stacked parameter's optimizer, or None
    :param plain_optimizer: the plain parameter's optimizer, or None
    """
    with th.no_grad():
        plain.copy_(_member_slice(stacked, slot, plain.shape))
    if optimizer is not None and plain_optimizer is not None:
        copy_member_optimizer_state(optimizer, plain_optimizer, stacked, plain, slot)


class MemberStack(nn.Module, ABC):
    """
    The member operations shared by every stack (:class:`StackedQNetwork`, PIEKDSAC's actors and critics): M
    members, each owning ``group_size`` consecutive slots of every stacked parameter's leading dimension (G = 1,
    or the ``n_critics`` Q-networks of one SAC agent). A subclass says, in :meth:`_paired_layers`, which stacked
    layer each layer of a plain module (the member's SB3 counterpart) stacks.

    :param n_members: number of members
    :param group_size: number of stacked slots of each member (G)
    """

    def __init__(self, n_members: int, group_size: int = 1) -> None:
        super().__init__()
        self.n_members = n_members
        self.group_size = group_size

    @abstractmethod
    def _paired_layers(self, module: nn.Module) -> list[tuple[Any, Any, int]]:
        """(stacked layer, plain layer of ``module``, slot offset in [0, G)) for each layer with parameters."""

    def _check_member(self, member: int) -> None:
        if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < self.n_members:
            raise ValueError(f"`member` must be in [0, {self.n_members}), got {member!r}")

    def _member_parameter_pairs(self, member: int, module: nn.Module) -> list[tuple[th.Tensor, th.Tensor, int]]:
        """(stacked parameter, the plain module's parameter, its slot) for each parameter of one member."""
        self._check_member(member)
        pairs = []
        for stacked, plain, offset in self._paired_layers(module):
            slot = member * self.group_size + offset
            pairs += [(stacked.weight, plain.weight, slot), (stacked.bias, plain.bias, slot)]
        if any(
            any(size > stacked_size for size, stacked_size in zip(plain.shape, stacked.shape[1:], strict=True))
            for stacked, plain, _ in pairs
        ):
            raise ValueError(f"`{type(module).__name__}` does not have the architecture of the stacked members")
        return pairs

    def copy_member_from(self, member: int, module: nn.Module) -> None:
        """
        Copy the weights of a plain SB3 module (the member's counterpart: ``QNetwork``, ``Actor``,
        ``ContinuousCritic``) into one member, the inverse of :meth:`copy_member_to`; the zero padding of a
        narrower member stays zero.

        :param member: index of the member, in [0, M)
        :param module: a module with the member's architecture
        """
        with th.no_grad():
            for stacked, plain, slot in self._member_parameter_pairs(member, module):
                stacked[(slot, *[slice(0, size) for size in plain.shape])] = plain  # type: ignore[index]

    def copy_member_to(
        self,
        member: int,
        module: nn.Module,
        optimizer: th.optim.Optimizer | None = None,
        module_optimizer: th.optim.Optimizer | None = None,
    ) -> nn.Module:
        """
        Copy the weights of one member into a plain SB3 module of the same architecture, e.g. to export it as a
        plain SB3 model; with both optimizers, the member's slice of the optimizer state too.

        :param member: index of the member, in [0, M)
        :param module: a module with the member's architecture; its weights are overwritten
        :param optimizer: the stack's optimizer, or None
        :param module_optimizer: ``module``'s optimizer, whose state for ``module``'s parameters is overwritten
        :return: ``module``
        """
        for stacked, plain, slot in self._member_parameter_pairs(member, module):
            copy_member_parameter(stacked, plain, slot, optimizer, module_optimizer)
        return module

    def member_mask(self, members: th.Tensor) -> th.Tensor:
        """
        A per-member value (a weight, a mask) spread over the stacked slots.

        :param members: one value per member, shape (M,)
        :return: shape (M * G,)
        """
        return members.repeat_interleave(self.group_size)

    def copy_member_within_(self, source: int, mask: th.Tensor) -> None:
        """
        Overwrite the members selected by ``mask`` with the weights of member ``source`` (a hard copy inside the
        stack, with no optimizer state).

        :param source: index of the member copied, in [0, M)
        :param mask: which members are overwritten, shape (M,) (bool)
        """
        self._check_member(source)
        slots = self.member_mask(mask).to(self.device_of_parameters())
        with th.no_grad():
            for param in self.parameters():
                # (M * G, ...) -> (M, G, ...): every member's slots, and the source's, broadcast over members
                grouped = param.view(self.n_members, self.group_size, *param.shape[1:])
                source_slots = grouped[source].unsqueeze(0).expand_as(grouped).reshape(param.shape)
                param.copy_(th.where(slots.reshape(-1, *([1] * (param.dim() - 1))), source_slots, param))

    def device_of_parameters(self) -> th.device:
        """The device of the stacked parameters."""
        return next(self.parameters()).device


def member_polyak_update(params: Sequence[th.Tensor], target_params: Sequence[th.Tensor], member_taus: th.Tensor) -> None:
    """
    Soft update of stacked target parameters with one coefficient per stacked slot (0 leaves a member's target
    untouched): ``target_k <- (1 - tau_k) target_k + tau_k online_k``, SB3's ``polyak_update`` per member.

    :param params: the online stacked parameters, each of shape (M, ...)
    :param target_params: the target stacked parameters, in the same order
    :param member_taus: the coefficient of each stacked slot, shape (M,) (see :meth:`MemberStack.member_mask`)
    """
    with th.no_grad():
        for target, online in zip(target_params, params, strict=True):
            # (M,) -> (M, 1, ..., 1): each slot moves by its own coefficient
            target.lerp_(online, member_taus.reshape(-1, *([1] * (online.dim() - 1))))


# Features extractors whose layers run in the order (*cnn, *linear) and can therefore be stacked
_STACKABLE_CNNS = (NatureCNN, CompactNatureCNN)


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


def check_student_policy_kwargs(
    student_policy_kwargs: dict[str, Any] | None,
    name: str = "student_policy_kwargs",
    accepted_keys: Sequence[str] = STUDENT_KWARGS_KEYS,
) -> None:
    """
    Raise a ``ValueError``/``TypeError`` for a student description that cannot be built.

    :param student_policy_kwargs: the student's network description, or None for the default
    :param name: the argument name to report in the error
    :param accepted_keys: the keys the description may have
    """
    if student_policy_kwargs is None:
        return
    if not isinstance(student_policy_kwargs, dict):
        raise TypeError(f"`{name}` must be a dict or None, got {type(student_policy_kwargs).__name__}")
    unknown = sorted(set(student_policy_kwargs) - set(accepted_keys))
    if unknown:
        raise ValueError(f"`{name}` got unknown keys {unknown}; accepted keys: {list(accepted_keys)}")


def resolve_student_kwargs(
    student_policy_kwargs: dict[str, Any] | None,
    teacher_features_extractor_class: type[BaseFeaturesExtractor],
    normalize_images: bool,
    optimizer_class: type[th.optim.Optimizer],
    optimizer_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    """
    A student's full description, every key of :data:`STUDENT_KWARGS_KEYS` set: the teachers' image
    normalization and optimizer, then :func:`default_student_kwargs` (whose extractor kwargs are dropped
    when the user picks another extractor class), then the user's keys. A missing or None ``net_arch``
    follows DQNPolicy's rule: no hidden layer after a CNN, two of 64 units otherwise.

    :param student_policy_kwargs: the user's description (keys of DQN's ``policy_kwargs``), or None
    :param teacher_features_extractor_class: the teachers' features extractor class
    :param normalize_images: the teachers' ``normalize_images``
    :param optimizer_class: the teachers' optimizer class
    :param optimizer_kwargs: the teachers' optimizer kwargs
    :return: the student's description
    """
    user_kwargs = student_policy_kwargs or {}
    default_kwargs = default_student_kwargs(teacher_features_extractor_class)
    if "features_extractor_class" in user_kwargs:
        default_kwargs.pop("features_extractor_kwargs", None)
    kwargs: dict[str, Any] = {
        "normalize_images": normalize_images,
        "optimizer_class": optimizer_class,
        "optimizer_kwargs": optimizer_kwargs or {},
        "activation_fn": nn.ReLU,
        "features_extractor_class": FlattenExtractor,
        "features_extractor_kwargs": {},
        **default_kwargs,
        **user_kwargs,
    }
    if kwargs.get("net_arch") is None:
        kwargs["net_arch"] = [] if issubclass(kwargs["features_extractor_class"], _STACKABLE_CNNS) else [64, 64]
    return kwargs


def make_q_network(observation_space: spaces.Space, action_space: spaces.Discrete, kwargs: dict[str, Any]) -> QNetwork:
    """
    Build an SB3 ``QNetwork`` from a full description (see :func:`resolve_student_kwargs`).

    :param observation_space: Observation space
    :param action_space: Action space
    :param kwargs: the network's description
    :return: the network, with SB3's initialisation
    """
    features_extractor_kwargs = dict(kwargs["features_extractor_kwargs"])
    # As SB3's policies (BaseModel): pre-normalized images skip the image checks of NatureCNN (and subclasses)
    if not kwargs["normalize_images"] and issubclass(kwargs["features_extractor_class"], NatureCNN):
        features_extractor_kwargs.setdefault("normalized_image", True)
    features_extractor = kwargs["features_extractor_class"](observation_space, **features_extractor_kwargs)
    return QNetwork(
        observation_space,
        action_space,
        features_extractor=features_extractor,
        features_dim=features_extractor.features_dim,
        net_arch=kwargs["net_arch"],
        activation_fn=kwargs["activation_fn"],
        normalize_images=kwargs["normalize_images"],
    )


def _q_network_layers(q_network: QNetwork) -> list[nn.Module]:
    """The leaf layers of an SB3 ``QNetwork`` in the order its forward pass applies them."""
    features_extractor = q_network.features_extractor
    if isinstance(features_extractor, FlattenExtractor):
        layers = [features_extractor.flatten]
    elif isinstance(getattr(features_extractor, "cnn", None), nn.Sequential) and isinstance(
        getattr(features_extractor, "linear", None), nn.Sequential
    ):
        # NatureCNN's layout (CompactNatureCNN, or any extractor of the same shape): `cnn`, then `linear`
        layers = [*features_extractor.cnn, *features_extractor.linear]  # type: ignore[misc]
    else:
        raise ValueError(
            f"The teachers' `features_extractor_class` {type(features_extractor).__name__} cannot be stacked: "
            "use FlattenExtractor (MlpPolicy), NatureCNN (CnnPolicy), sb3_distill's CompactNatureCNN, or an "
            "extractor whose forward pass is `self.linear(self.cnn(obs))` with two nn.Sequential of Conv2d, Linear, "
            "Flatten and activation layers"
        )
    return layers + list(q_network.q_net)


class StackedQNetwork(MemberStack):
    """
    An ensemble of M Q-networks with one architecture, run as a single module: every layer holds the
    members' parameters stacked along a leading dimension of size M. A forward pass on a batch of
    observations returns the Q-values of every member at once, shape (M, batch, n_actions).

    Because the parameters are ordinary stacked tensors, ``state_dict``, ``.to(device)``,
    ``polyak_update`` and an optimizer over ``parameters()`` work unchanged; Adam (elementwise) over
    the stack is exactly M independent Adams.

    Build it with :meth:`from_q_networks` from M SB3 ``QNetwork`` objects, which also gives each
    member SB3's own initialisation.

    :param observation_space: Observation space
    :param layers: the stacked layers, in forward order
    :param n_members: number of members M
    :param n_actions: number of discrete actions
    :param normalize_images: Whether to divide image observations by 255
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        layers: Sequence[nn.Module],
        n_members: int,
        n_actions: int,
        normalize_images: bool = True,
    ) -> None:
        super().__init__(n_members)
        self.observation_space = observation_space
        self.layers = nn.Sequential(*layers)
        self.n_actions = n_actions
        self.normalize_images = normalize_images
        self.member_parameter_counts: list[int] = []

    @classmethod
    def from_q_networks(cls, q_networks: Sequence[QNetwork]) -> "StackedQNetwork":
        """
        Stack M SB3 ``QNetwork`` objects with the same layer structure.

        Members may differ in width (hidden units, conv channels): narrower layers are zero-padded to the
        widest. This is exact when every activation maps 0 to 0 (ReLU, tanh, ELU, ...; checked): the padded
        units output 0, their incoming and outgoing weights get zero gradients, and Adam, SGD or RMSprop
        leave zero parameters with zero gradients at zero, so each member computes what it would alone.

        :param q_networks: the members; their current weights become the stacked weights
        :return: the stacked ensemble
        """
        n_members = len(q_networks)
        if len({q_network.normalize_images for q_network in q_networks}) > 1:
            raise ValueError("Networks with different `normalize_images` cannot be stacked")
        member_layers = [_q_network_layers(q_network) for q_network in q_networks]
        if len({len(layers) for layers in member_layers}) > 1:
            raise ValueError("Networks with different numbers of layers cannot be stacked")
        padded = len({tuple(tuple(p.shape) for p in q_network.parameters()) for q_network in q_networks}) > 1
        stacked_layers = stack_layers(member_layers, padded)
        first = q_networks[0]
        stacked = cls(first.observation_space, stacked_layers, n_members, int(first.action_space.n), first.normalize_images)
        # The parameter count of each member on its own (the stack holds padding as well)
        stacked.member_parameter_counts = [count_parameters(q_network) for q_network in q_networks]
        return stacked

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """
        Q-values of every member.

        :param obs: observations, shape (batch, *obs_shape)
        :return: Q-values, shape (M, batch, n_actions)
        """
        features = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        return self.layers(features.float())  # type: ignore[union-attr]

    def set_training_mode(self, mode: bool) -> None:
        """Put the ensemble in training or evaluation mode (as ``BasePolicy.set_training_mode``)."""
        self.train(mode)

    def member(self, member: int) -> "MemberView":
        """
        One member seen as an ordinary Q-network (see :class:`MemberView`).

        :param member: index of the member, in [0, M)
        :return: the view
        """
        self._check_member(member)
        return MemberView(self, member)

    def _paired_layers(self, module: nn.Module) -> list[tuple[Any, Any, int]]:
        """The stacked layers with parameters, each paired with the plain layer of a ``QNetwork`` it stacks."""
        stacked_layers = [layer for layer in self.layers if isinstance(layer, (StackedLinear, StackedConv2d))]
        plain_layers = [layer for layer in _q_network_layers(module) if isinstance(layer, (nn.Linear, nn.Conv2d))]  # type: ignore[arg-type]
        if len(stacked_layers) != len(plain_layers):
            raise ValueError(f"`{type(module).__name__}` does not have the architecture of the stacked members")
        return [(stacked, plain, 0) for stacked, plain in zip(stacked_layers, plain_layers, strict=True)]


class MemberView(nn.Module):
    """
    One member of a :class:`StackedQNetwork` seen as an ordinary Q-network: ``forward(obs)`` gives its
    Q-values, shape (batch, n_actions), so that it can act, be evaluated (``evaluate_q_functions``) or stand
    where SB3 expects a ``q_net``. It holds no parameters of its own: the stack belongs to (and is saved,
    moved and optimized by) the module that registers the stack, so its ``state_dict()`` is empty. To get
    the member's weights as a plain SB3 ``QNetwork`` use :meth:`StackedQNetwork.copy_member_to` (what
    ``export_student`` does), and :meth:`StackedQNetwork.copy_member_from` for the way back.

    :param stack: the stacked networks
    :param member: index of the member, in [0, M)
    """

    stack: StackedQNetwork

    def __init__(self, stack: StackedQNetwork, member: int) -> None:
        super().__init__()
        # Not registered as a submodule: the stack's parameters are not this module's
        self.__dict__["stack"] = stack
        self.member = member

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        return self.stack(obs)[self.member]

    def set_training_mode(self, mode: bool) -> None:
        """Put the view in training or evaluation mode (the stack's mode is its owner's to set)."""
        self.train(mode)

    def extra_repr(self) -> str:
        return f"member={self.member} of {self.stack.n_members}"
