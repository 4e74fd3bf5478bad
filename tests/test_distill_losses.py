"""The l and r^ of every update rule of Czarnecki et al. (2019), against direct computations (gradients included)."""

import pytest
import torch as th
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from sb3_distill.common.losses import (
    DISTILL_UPDATE_RULES,
    distill_loss_per_state,
    entropy_regularised_reward,
    expected_entropy_regularised_reward,
    n_distill_reward,
    policy_cross_entropy,
    teacher_value_bootstrap_targets,
    teacher_value_reward,
    value_gate,
)

BATCH, N_ACTIONS, ACTION_DIM = 6, 4, 3


def make_params(kind: str, seed: int):
    generator = th.Generator().manual_seed(seed)
    if kind == "categorical":
        return (th.randn(BATCH, N_ACTIONS, generator=generator, dtype=th.float64, requires_grad=True),)
    mean = th.randn(BATCH, ACTION_DIM, generator=generator, dtype=th.float64, requires_grad=True)
    log_std = (0.5 * th.randn(BATCH, ACTION_DIM, generator=generator, dtype=th.float64)).requires_grad_(True)
    return mean, log_std


def make_distribution(kind: str, params, independent: bool = True):
    if kind == "categorical":
        return Categorical(logits=params[0])
    normal = Normal(params[0], params[1].exp())
    return Independent(normal, 1) if independent else normal


def direct_cross_entropy(kind: str, p_params, q_params) -> th.Tensor:
    """H^x(p || q) = H(p) + KL(p || q) with torch.distributions (Categorical: the sum written out)."""
    if kind == "categorical":
        p_log_probs = th.log_softmax(p_params[0], dim=-1)
        q_log_probs = th.log_softmax(q_params[0], dim=-1)
        return th.stack([-(p_log_probs[i].exp() * q_log_probs[i]).sum() for i in range(BATCH)])
    p, q = make_distribution(kind, p_params), make_distribution(kind, q_params)
    return p.entropy() + kl_divergence(p, q)


def assert_same_value_and_grads(value: th.Tensor, expected: th.Tensor, inputs) -> None:
    assert value.shape == expected.shape == (BATCH,)
    assert th.allclose(value, expected)
    weights = th.linspace(0.5, 2.0, BATCH, dtype=th.float64)  # a generic linear functional of the per-state values
    grads = th.autograd.grad((value * weights).sum(), inputs, allow_unused=True)
    expected_grads = th.autograd.grad((expected * weights).sum(), inputs, allow_unused=True)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        if expected_grad is None:
            assert grad is None or th.all(grad == 0)
        else:
            assert th.allclose(grad, expected_grad)


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
@pytest.mark.parametrize("independent", [True, False])
def test_policy_cross_entropy(kind, independent):
    p_params, q_params = make_params(kind, 0), make_params(kind, 1)
    value = policy_cross_entropy(
        make_distribution(kind, p_params, independent), make_distribution(kind, q_params, independent)
    )
    expected = direct_cross_entropy(kind, p_params, q_params)
    assert_same_value_and_grads(value, expected, [*p_params, *q_params])


def test_policy_cross_entropy_gaussian_monte_carlo():
    """The closed form is -E_{a ~ p} log q(a) (a check independent of the entropy + KL identity)."""
    p_params, q_params = make_params("gaussian", 2), make_params("gaussian", 3)
    p, q = make_distribution("gaussian", p_params), make_distribution("gaussian", q_params)
    th.manual_seed(0)
    monte_carlo = -q.log_prob(p.sample((200_000,))).mean(dim=0)
    assert th.allclose(policy_cross_entropy(p, q), monte_carlo, rtol=0.01)


def test_policy_cross_entropy_rejects_mixed_kinds():
    with pytest.raises(TypeError, match="Categorical or two diagonal Gaussian"):
        policy_cross_entropy(
            make_distribution("categorical", make_params("categorical", 0)),
            make_distribution("gaussian", make_params("gaussian", 0)),
        )


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
@pytest.mark.parametrize("update_rule", DISTILL_UPDATE_RULES)
def test_distill_loss_per_state(kind, update_rule):
    student_params, teacher_params = make_params(kind, 0), make_params(kind, 1)
    student, teacher = make_distribution(kind, student_params), make_distribution(kind, teacher_params)
    value = distill_loss_per_state(update_rule, student, teacher)
    if update_rule in ("teacher_distill", "on_policy_distill", "n_distill"):
        expected = direct_cross_entropy(kind, teacher_params, student_params)
    elif update_rule == "expected_entropy_regularised":
        expected = direct_cross_entropy(kind, student_params, teacher_params)
    else:
        assert value is None
        return
    # The teacher never receives gradients
    assert_same_value_and_grads(value, expected, list(student_params))
    assert all(grad is None for grad in th.autograd.grad(value.sum(), list(teacher_params), allow_unused=True))


def test_distill_loss_per_state_unknown_rule():
    distribution = make_distribution("categorical", make_params("categorical", 0))
    with pytest.raises(ValueError, match="`update_rule` must be one of"):
        distill_loss_per_state("distill", distribution, distribution)


def test_rewards_match_direct_computation():
    generator = th.Generator().manual_seed(0)
    rewards, teacher_values, next_teacher_values = th.randn(3, BATCH, generator=generator, dtype=th.float64)
    next_non_terminal = th.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=th.float64)
    student_params, teacher_params = make_params("categorical", 0), make_params("categorical", 1)
    student, teacher = make_distribution("categorical", student_params), make_distribution("categorical", teacher_params)
    actions = th.tensor([0, 1, 2, 3, 0, 1])
    teacher_log_probs = th.log_softmax(teacher_params[0], dim=-1)[th.arange(BATCH), actions]

    assert th.equal(entropy_regularised_reward(teacher_log_probs), teacher_log_probs.detach())
    for i in range(BATCH):
        cross_entropy = -(th.softmax(teacher_params[0][i], -1) * th.log_softmax(student_params[0][i], -1)).sum()
        expected = -cross_entropy if next_non_terminal[i] else 0.0
        assert th.isclose(n_distill_reward(student, teacher, next_non_terminal)[i], th.as_tensor(expected, dtype=th.float64))
        expected = teacher_log_probs[i] if next_non_terminal[i] else 0.0
        assert th.isclose(
            expected_entropy_regularised_reward(teacher_log_probs, next_non_terminal)[i],
            th.as_tensor(expected, dtype=th.float64),
        )
        bootstrap = 0.9 * next_teacher_values[i] if next_non_terminal[i] else 0.0
        shaped = teacher_value_reward(rewards, teacher_values, next_teacher_values, next_non_terminal, gamma=0.9)[i]
        assert th.isclose(shaped, rewards[i] + bootstrap - teacher_values[i])
        target = teacher_value_bootstrap_targets(rewards, next_teacher_values, next_non_terminal, gamma=0.9)[i]
        assert th.isclose(target, rewards[i] + bootstrap)
    # Rewards carry no gradient into the student
    assert not n_distill_reward(student, teacher, next_non_terminal).requires_grad


def test_teacher_value_reward_telescopes():
    """Footnote 4: over an episode the shaping sums to -V_pi(s_1) (gamma = 1), whatever the policy."""
    values = th.tensor([3.0, 1.0, -2.0, 5.0])  # V_pi(s_1..s_4); s_5 is terminal
    rewards = th.tensor([1.0, 0.5, -1.0, 2.0])
    next_values = th.cat([values[1:], th.zeros(1)])
    next_non_terminal = th.tensor([1.0, 1.0, 1.0, 0.0])
    shaped = teacher_value_reward(rewards, values, next_values, next_non_terminal)
    assert th.isclose(shaped.sum(), rewards.sum() - values[0])


def test_value_gate():
    teacher_values = th.tensor([1.0, 0.0, -1.0, 2.0], requires_grad=True)
    student_values = th.tensor([0.5, 0.0, 1.0, -3.0], requires_grad=True)
    gate = value_gate(teacher_values, student_values)
    assert th.equal(gate, th.tensor([1.0, 0.0, 0.0, 1.0]))
    assert not gate.requires_grad
