import copy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.dqn.policies import QNetwork
from torch import nn

from sb3_distill.common.torch_layers import (
    CompactNatureCNN,
    MemberStack,
    StackedLinear,
    StackedQNetwork,
    count_parameters,
    member_polyak_update,
    resolve_student_kwargs,
    stack_mlps,
)
from sb3_distill.common.torch_layers import make_q_network as make_described_q_network
from sb3_distill.common.utils import clip_grad_norm_per_member_

N_MEMBERS = 3
ATARI_SPACE = spaces.Box(0, 255, shape=(4, 84, 84), dtype=np.uint8)


def make_q_network(observation_space, features_extractor_class, features_extractor_kwargs=None, net_arch=None, n_actions=4):
    features_extractor = features_extractor_class(observation_space, **(features_extractor_kwargs or {}))
    return QNetwork(
        observation_space,
        spaces.Discrete(n_actions),
        features_extractor=features_extractor,
        features_dim=features_extractor.features_dim,
        net_arch=net_arch,
    )


MEMBER_CONFIGS = [
    (spaces.Box(-1, 1, shape=(6,)), FlattenExtractor, None, [32, 16]),
    (spaces.Box(-1, 1, shape=(6,)), FlattenExtractor, None, []),
    (spaces.Box(0, 255, shape=(3, 40, 40), dtype=np.uint8), NatureCNN, dict(features_dim=32), []),
    (spaces.Box(0, 255, shape=(2, 36, 36), dtype=np.uint8), CompactNatureCNN, dict(filters=(4, 8, 8), features_dim=16), [8]),
]


@pytest.mark.parametrize("observation_space, extractor_class, extractor_kwargs, net_arch", MEMBER_CONFIGS)
def test_stacked_forward_and_gradients_match_members(observation_space, extractor_class, extractor_kwargs, net_arch):
    th.manual_seed(0)
    members = [make_q_network(observation_space, extractor_class, extractor_kwargs, net_arch) for _ in range(N_MEMBERS)]
    stacked = StackedQNetwork.from_q_networks(members)
    assert count_parameters(stacked) == N_MEMBERS * count_parameters(members[0])
    obs = th.as_tensor(np.stack([observation_space.sample() for _ in range(5)]))

    stacked_q = stacked(obs)
    assert stacked_q.shape == (N_MEMBERS, 5, 4)
    member_q = th.stack([member(obs) for member in members])
    assert th.allclose(stacked_q, member_q, atol=1e-5)

    # The same loss on both gives each member its own gradient
    weights = th.randn(N_MEMBERS, 5, 4)
    (stacked_q * weights).sum().backward()
    (member_q * weights).sum().backward()
    for stacked_param, member_params in zip(
        stacked.parameters(), zip(*[m.parameters() for m in members], strict=True), strict=True
    ):
        expected = th.stack([p.grad for p in member_params])
        assert th.allclose(stacked_param.grad, expected, atol=1e-5)


def test_stacked_members_are_independent():
    members = [make_q_network(spaces.Box(-1, 1, shape=(3,)), FlattenExtractor) for _ in range(N_MEMBERS)]
    stacked = StackedQNetwork.from_q_networks(members)
    q_values = stacked(th.randn(8, 3))
    # Members start from different random weights (SB3's initialisation, member by member)
    assert not th.allclose(q_values[0], q_values[1])
    q_values[1].sum().backward()
    assert all(p.grad[[0, 2]].abs().sum() == 0 and p.grad[1].abs().sum() > 0 for p in stacked.parameters())


def test_unstackable_extractor():
    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, shape=(3,))})
    members = [make_q_network(observation_space, CombinedExtractor) for _ in range(2)]
    with pytest.raises(ValueError, match="features_extractor_class"):
        StackedQNetwork.from_q_networks(members)


def test_compact_nature_cnn_defaults_are_nature_cnn():
    nature = make_q_network(ATARI_SPACE, NatureCNN, net_arch=[], n_actions=6)
    compact = make_q_network(ATARI_SPACE, CompactNatureCNN, net_arch=[], n_actions=6)
    assert [p.shape for p in nature.parameters()] == [p.shape for p in compact.parameters()]


@pytest.mark.parametrize(
    "filters, features_dim, expected_count",
    [
        # Counted by hand on 84x84x4 inputs (conv 8/4, 4/2, 3/1 -> 20x20, 9x9, 7x7) with 6 actions:
        # conv1 4*c1*64+c1, conv2 c1*c2*16+c2, conv3 c2*c3*9+c3, fc c3*49*f+f, head f*6+6
        ((32, 64, 64), 512, 1_687_206),  # teacher {32, 64, 64, 512}
        ((16, 16, 16), 64, 61_174),  # student1 {16, 16, 16, 64}: 3.63 % of the teacher
        ((8, 8, 16), 64, 54_886),  # student2 {8, 8, 16, 64} as written: 3.25 %, not the paper's 1.7 %
        ((8, 16, 8), 64, 30_822),  # {8, 16, 8, 64}: 1.83 %, the closest to the paper's "1.7 %"
    ],
)
def test_atari_parameter_counts(filters, features_dim, expected_count):
    network = make_q_network(ATARI_SPACE, CompactNatureCNN, dict(filters=filters, features_dim=features_dim), [], 6)
    assert count_parameters(network) == expected_count


def test_atari_compression_ratios():
    teacher = 1_687_206
    assert 0.036 < 61_174 / teacher < 0.037
    assert 0.032 < 54_886 / teacher < 0.033
    assert 0.018 < 30_822 / teacher < 0.019


def test_compact_nature_cnn_bad_arguments():
    with pytest.raises(ValueError, match="filters"):
        CompactNatureCNN(ATARI_SPACE, filters=(16, 16))
    with pytest.raises(ValueError, match="image"):
        CompactNatureCNN(spaces.Box(-1, 1, shape=(4,)))


def test_per_member_clipping_matches_separate_clipping():
    th.manual_seed(0)
    members = [make_q_network(spaces.Box(-1, 1, shape=(5,)), FlattenExtractor) for _ in range(N_MEMBERS)]
    stacked = StackedQNetwork.from_q_networks(members)
    obs = th.randn(16, 5)
    # Member 1 gets a large gradient (clipped), the others small ones (left unchanged)
    scale = th.tensor([0.01, 100.0, 0.1]).reshape(N_MEMBERS, 1, 1)
    (stacked(obs) * scale).sum().backward()
    (th.stack([m(obs) for m in members]) * scale).sum().backward()
    norms = clip_grad_norm_per_member_(stacked.parameters(), 1.0, N_MEMBERS)
    expected_norms = th.stack([nn.utils.clip_grad_norm_(m.parameters(), 1.0) for m in members])
    assert th.allclose(norms, expected_norms, rtol=1e-5)
    assert norms[1] > 1.0 > norms[0]
    for stacked_param, member_params in zip(
        stacked.parameters(), zip(*[m.parameters() for m in members], strict=True), strict=True
    ):
        assert th.allclose(stacked_param.grad, th.stack([p.grad for p in member_params]), atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_adam_over_stack_is_separate_adams(fused):
    th.manual_seed(0)
    members = [make_q_network(spaces.Box(-1, 1, shape=(5,)), FlattenExtractor) for _ in range(N_MEMBERS)]
    stacked = StackedQNetwork.from_q_networks(members)
    members = [copy.deepcopy(m) for m in members]
    # The fused kernel (sb3_distill's default for the stack) and the per-tensor loop give the same update
    stacked_optimizer = th.optim.Adam(stacked.parameters(), lr=1e-2, fused=fused)
    member_optimizers = [th.optim.Adam(m.parameters(), lr=1e-2) for m in members]
    for _ in range(5):
        obs = th.randn(16, 5)
        stacked_optimizer.zero_grad()
        stacked(obs).pow(2).sum().backward()
        stacked_optimizer.step()
        for member, optimizer in zip(members, member_optimizers, strict=True):
            optimizer.zero_grad()
            member(obs).pow(2).sum().backward()
            optimizer.step()
    for stacked_param, member_params in zip(
        stacked.parameters(), zip(*[m.parameters() for m in members], strict=True), strict=True
    ):
        assert th.allclose(stacked_param, th.stack(member_params), atol=1e-5)


@pytest.mark.parametrize("observation_space, extractor_class, extractor_kwargs, net_arch", MEMBER_CONFIGS)
def test_copy_member_to_round_trip(observation_space, extractor_class, extractor_kwargs, net_arch):
    members = [make_q_network(observation_space, extractor_class, extractor_kwargs, net_arch) for _ in range(N_MEMBERS)]
    stacked = StackedQNetwork.from_q_networks(members)
    obs = th.as_tensor(np.stack([observation_space.sample() for _ in range(4)]))
    for member in range(N_MEMBERS):
        copy = stacked.copy_member_to(member, make_q_network(observation_space, extractor_class, extractor_kwargs, net_arch))
        for key, value in members[member].state_dict().items():
            assert th.equal(value, copy.state_dict()[key])
        assert th.allclose(copy(obs), stacked(obs)[member], atol=1e-5)
    with pytest.raises(ValueError, match="member"):
        stacked.copy_member_to(N_MEMBERS, members[0])
    other = make_q_network(observation_space, extractor_class, extractor_kwargs, [*net_arch, 4])
    with pytest.raises(ValueError, match="architecture"):
        stacked.copy_member_to(0, other)
    # A member view acts as the member; a plain network copied into member 1 replaces it, the others unchanged
    assert th.equal(stacked.member(2)(obs), stacked(obs)[2])
    new = make_q_network(observation_space, extractor_class, extractor_kwargs, net_arch)
    before = stacked(obs).detach().clone()
    stacked.copy_member_from(1, new)
    assert th.allclose(stacked.member(1)(obs), new(obs), atol=1e-5)
    assert th.equal(stacked(obs)[0], before[0]) and th.equal(stacked(obs)[2], before[2])
    with pytest.raises(ValueError, match="architecture"):
        stacked.copy_member_from(0, other)
    with pytest.raises(ValueError, match="member"):
        stacked.member(N_MEMBERS)


@pytest.mark.parametrize(
    "observation_space, extractor_class, configs",
    [
        (spaces.Box(-1, 1, shape=(6,)), FlattenExtractor, [(None, [32, 16]), (None, [8, 4]), (None, [16, 16])]),
        (
            spaces.Box(0, 255, shape=(2, 36, 36), dtype=np.uint8),
            CompactNatureCNN,
            [(dict(filters=(4, 8, 8), features_dim=16), [8]), (dict(filters=(2, 4, 8), features_dim=8), [4])],
        ),
    ],
)
def test_zero_padded_members_train_exactly_as_alone(observation_space, extractor_class, configs):
    th.manual_seed(0)
    members = [make_q_network(observation_space, extractor_class, kwargs, net_arch) for kwargs, net_arch in configs]
    stacked = StackedQNetwork.from_q_networks(members)
    assert stacked.member_parameter_counts == [count_parameters(member) for member in members]
    members = [copy.deepcopy(member) for member in members]
    # SGD with momentum: an update linear in the gradient, so float rounding cannot be amplified the way
    # Adam amplifies it on near-zero gradients (Adam over a stack is tested in test_adam_over_stack_...)
    stacked_optimizer = th.optim.SGD(stacked.parameters(), lr=1e-3, momentum=0.9)
    member_optimizers = [th.optim.SGD(member.parameters(), lr=1e-3, momentum=0.9) for member in members]
    observation_space.seed(0)
    for _ in range(5):
        obs = th.as_tensor(np.stack([observation_space.sample() for _ in range(8)]))
        stacked_q = stacked(obs)
        assert th.allclose(stacked_q, th.stack([member(obs) for member in members]), atol=1e-4)
        stacked_optimizer.zero_grad()
        stacked_q.pow(2).sum().backward()
        clip_grad_norm_per_member_(stacked.parameters(), 1.0, len(members))
        stacked_optimizer.step()
        for member, optimizer in zip(members, member_optimizers, strict=True):
            optimizer.zero_grad()
            member(obs).pow(2).sum().backward()
            nn.utils.clip_grad_norm_(member.parameters(), 1.0)
            optimizer.step()
    for index, member in enumerate(members):
        copy_ = stacked.copy_member_to(
            index, make_q_network(observation_space, extractor_class, configs[index][0], configs[index][1])
        )
        for key, value in member.state_dict().items():
            assert th.allclose(value, copy_.state_dict()[key], atol=1e-5), key


def test_unpaddable_members():
    observation_space = spaces.Box(-1, 1, shape=(3,))
    features_extractor = FlattenExtractor(observation_space)
    sigmoid = [
        QNetwork(observation_space, spaces.Discrete(2), FlattenExtractor(observation_space), 3, [units], nn.Sigmoid)
        for units in (4, 8)
    ]
    with pytest.raises(ValueError, match="map 0 to 0"):
        StackedQNetwork.from_q_networks(sigmoid)
    # the same widths need no padding: any activation
    StackedQNetwork.from_q_networks([sigmoid[0], copy.deepcopy(sigmoid[0])])
    with pytest.raises(ValueError, match="numbers of layers"):
        StackedQNetwork.from_q_networks(
            [
                make_q_network(observation_space, FlattenExtractor, None, [4]),
                make_q_network(observation_space, FlattenExtractor, None, [4, 4]),
            ]
        )
    other = QNetwork(observation_space, spaces.Discrete(2), features_extractor, 3, [4], normalize_images=False)
    with pytest.raises(ValueError, match="normalize_images"):
        StackedQNetwork.from_q_networks([make_q_network(observation_space, FlattenExtractor, None, [4], 2), other])


class SmallImageCNN(BaseFeaturesExtractor):
    """A user's extractor with NatureCNN's layout (`cnn`, then `linear`) for 10x10 frames."""

    def __init__(self, observation_space: spaces.Box, features_dim: int = 8, filters: int = 4) -> None:
        super().__init__(observation_space, features_dim)
        n_channels, height, width = observation_space.shape
        self.cnn = th.nn.Sequential(th.nn.Conv2d(n_channels, filters, 3), th.nn.ReLU(), th.nn.Flatten())
        self.linear = th.nn.Sequential(th.nn.Linear(filters * (height - 2) * (width - 2), features_dim), th.nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


def test_any_extractor_of_nature_cnn_layout_stacks_and_small_images_get_a_clear_error():
    space = spaces.Box(0, 255, (3, 10, 10), np.uint8)
    networks = [
        make_described_q_network(space, spaces.Discrete(3), resolve_student_kwargs(
            dict(features_extractor_class=SmallImageCNN, features_extractor_kwargs=dict(filters=filters), net_arch=[]),
            CompactNatureCNN, True, th.optim.Adam, {},
        ))
        for filters in (4, 2)
    ]  # fmt: skip
    stacked = StackedQNetwork.from_q_networks(networks)
    obs = th.as_tensor(np.stack([space.sample() for _ in range(5)]))
    for member, network in enumerate(networks):
        assert th.allclose(stacked(obs)[member], network(obs), atol=1e-5)
    # The default Nature-DQN-shaped student does not fit 10x10 frames: a ValueError that says what to do
    with pytest.raises(ValueError, match="does not fit observations of shape"):
        CompactNatureCNN(space)


def test_stacked_linear_inputs_shared_per_member_and_per_group():
    """A StackedLinear of M = 6 layers on a shared input, one input per member, or one per group of G = 2."""
    layers = [nn.Linear(4, 3) for _ in range(6)]
    stacked = StackedLinear.from_modules(layers, shared_input=True)
    shared, per_member, per_group = th.randn(5, 4), th.randn(6, 5, 4), th.randn(3, 5, 4)
    for inputs, member_input in (
        (shared, lambda k: shared),
        (per_member, lambda k: per_member[k]),
        (per_group, lambda k: per_group[k // 2]),
    ):
        out = stacked(inputs)
        assert out.shape == (6, 5, 3)
        for k, layer in enumerate(layers):
            th.testing.assert_close(out[k], layer(member_input(k)))


def test_stack_mlps_member_operations():
    """stack_mlps builds the stack; copy within, per-member soft update and the optimizer state copy act per member."""
    mlps = [nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)) for _ in range(4)]
    stack = Critics(stack_mlps(mlps), n_members=2, group_size=2)
    assert [type(layer) for layer in stack.q_net] == [StackedLinear, nn.ReLU, StackedLinear]
    assert list(stack.state_dict()) == [f"q_net.{key}" for key in mlps[0].state_dict()]
    obs = th.randn(5, 3)
    for k, mlp in enumerate(mlps):
        th.testing.assert_close(stack.q_net(obs)[k], mlp(obs))
    # Adam state of every slot, then member 1's (slots 2 and 3) copied out with its moments
    optimizer = th.optim.Adam(stack.parameters())
    stack.q_net(obs).pow(2).sum().backward()
    optimizer.step()
    plain = [nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)) for _ in range(2)]
    plain_optimizer = th.optim.Adam([p for mlp in plain for p in mlp.parameters()])
    stack.copy_member_to(1, nn.ModuleList(plain), optimizer, plain_optimizer)
    first = stack.q_net[0].weight
    for j, mlp in enumerate(plain):
        th.testing.assert_close(mlp(obs), stack.q_net(obs)[2 + j])
        assert th.equal(plain_optimizer.state[mlp[0].weight]["exp_avg"], optimizer.state[first]["exp_avg"][2 + j])
    # Soft update of member 0's slots only
    target = copy.deepcopy(stack)
    with th.no_grad():
        for param in stack.parameters():
            param.add_(1.0)
    member_polyak_update(list(stack.parameters()), list(target.parameters()), stack.member_mask(th.tensor([0.5, 0.0])))
    th.testing.assert_close(target.q_net[0].bias[:2], stack.q_net[0].bias[:2] - 0.5)
    th.testing.assert_close(target.q_net[0].bias[2:], stack.q_net[0].bias[2:] - 1.0)
    # Hard copy of member 1 into member 0
    stack.copy_member_within_(1, th.tensor([True, False]))
    for param in stack.parameters():
        assert th.equal(param[:2], param[2:])
    with pytest.raises(ValueError, match="`member` must be in"):
        stack.copy_member_within_(2, th.tensor([True, False]))


class Critics(MemberStack):
    """A minimal stack of M members of G MLPs each, to test MemberStack on its own."""

    def __init__(self, q_net: nn.Sequential, n_members: int, group_size: int) -> None:
        super().__init__(n_members, group_size)
        self.q_net = q_net

    def _paired_layers(self, module):
        stacked = [layer for layer in self.q_net if isinstance(layer, StackedLinear)]
        return [
            (stacked_layer, plain_layer, j)
            for j, mlp in enumerate(module)
            for stacked_layer, plain_layer in zip(
                stacked, [layer for layer in mlp if isinstance(layer, nn.Linear)], strict=True
            )
        ]
