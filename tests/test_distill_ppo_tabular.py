"""
Exact checks of the update rules of Czarnecki et al. 2019 ("Distilling Policy Distillation", arXiv:1902.02186)
on small tabular MDPs: one-hot states, a linear softmax student (a tabular policy), and expectations over every
trajectory computed exactly. The per-trajectory estimator is Eq. (1) built from the same l and r^ functions that
DistillPPO uses (:mod:`sb3_distill.common.losses`).
"""

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch as th
from torch.distributions import Categorical

from sb3_distill.common.losses import (
    distill_loss_per_state,
    entropy_regularised_reward,
    expected_entropy_regularised_reward,
    n_distill_reward,
)

TERMINAL = -1


@pytest.fixture(autouse=True)
def _no_distribution_validation():
    """Thousands of tiny distributions: skip torch's argument validation here only (a global setting that the
    other test modules, which expect torch to reject NaN parameters, must not inherit)."""
    previous = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    yield
    th.distributions.Distribution.set_default_validate_args(previous)


@dataclass
class TabularMDP:
    """An episodic MDP whose trajectories can be enumerated, and a teacher on it."""

    #: initial state distribution, (n_states,)
    initial: np.ndarray
    #: transitions[s][a] = list of (probability, next state or TERMINAL, reward)
    transitions: dict
    #: the teacher's logits per state, (n_states, n_actions)
    teacher_logits: th.Tensor
    #: the student's parameter row of each state (states sharing a row cannot be told apart)
    parameter_row: list

    def trajectories(self):
        """Every trajectory as (env probability, states, actions, rewards)."""
        n_actions = self.teacher_logits.shape[1]

        def expand(prob, states, actions, rewards):
            state = states[-1]
            for action in range(n_actions):
                for p, next_state, reward in self.transitions[state][action]:
                    step = (prob * p, states, [*actions, action], [*rewards, reward])
                    if next_state == TERMINAL:
                        yield step
                    else:
                        yield from expand(step[0], [*states, next_state], step[2], step[3])

        for state, p0 in enumerate(self.initial):
            if p0 > 0:
                yield from expand(p0, [state], [], [])


def surrogate(theta, mdp, trajectory, update_rule, coef=1.0, env_reward=False, correction=True):
    """
    The per-trajectory Eq. (1) surrogate ``sum_t -log pi_theta(a_t|s_t) R^_t + coef * l(s_t)`` (R^ without gradient):
    its gradient is Eq. (1)'s update direction (a descent direction). ``correction=False`` drops r^.
    """
    _, states, actions, rewards = trajectory
    rows = th.as_tensor([mdp.parameter_row[s] for s in states])
    states_t, actions_t = th.as_tensor(states), th.as_tensor(actions)
    student = Categorical(logits=theta[rows])
    teacher = Categorical(logits=mdp.teacher_logits[states_t])
    # s_{t+1} and a_{t+1} inside the trajectory; the last step ends in a terminal state (no loss, no reward)
    next_states = th.as_tensor([*states[1:], states[-1]])
    next_actions = th.as_tensor([*actions[1:], 0])
    next_non_terminal = th.ones(len(states), dtype=th.float64)
    next_non_terminal[-1] = 0.0
    next_student = Categorical(logits=theta.detach()[th.as_tensor([mdp.parameter_row[s] for s in next_states.tolist()])])
    next_teacher = Categorical(logits=mdp.teacher_logits[next_states])
    if update_rule == "n_distill":
        r_hat = n_distill_reward(next_student, next_teacher, next_non_terminal)
    elif update_rule == "expected_entropy_regularised":
        r_hat = expected_entropy_regularised_reward(next_teacher.log_prob(next_actions), next_non_terminal)
    elif update_rule == "entropy_regularised":
        r_hat = entropy_regularised_reward(teacher.log_prob(actions_t))
    else:
        r_hat = th.zeros(len(states), dtype=th.float64)
    step_rewards = coef * r_hat * float(correction) + float(env_reward) * th.as_tensor(rewards, dtype=th.float64)
    # R^_t = sum_{i >= t} r^_i
    returns = th.flip(th.cumsum(th.flip(step_rewards, [0]), 0), [0])
    loss = distill_loss_per_state(update_rule, student, teacher)
    loss_term = coef * loss.sum() if loss is not None else 0.0
    return -(student.log_prob(actions_t) * returns.detach()).sum() + loss_term


def trajectory_probability(theta, mdp, trajectory):
    env_prob, states, actions, _ = trajectory
    rows = th.as_tensor([mdp.parameter_row[s] for s in states])
    return env_prob * Categorical(logits=theta[rows]).log_prob(th.as_tensor(actions)).sum().exp()


def expected_update(theta, mdp, update_rule, **kwargs):
    """E_{pi_theta}[grad surrogate], exact: the gradient of sum_tau P_theta(tau) surrogate(tau) with P held fixed."""
    total = sum(
        trajectory_probability(theta, mdp, trajectory).detach() * surrogate(theta, mdp, trajectory, update_rule, **kwargs)
        for trajectory in mdp.trajectories()
    )
    (update,) = th.autograd.grad(total, theta)
    return update


def exact_loss(theta, mdp, per_step):
    """E_{pi_theta}[sum_t per_step(states, actions)], differentiable in theta."""
    total = th.zeros((), dtype=th.float64)
    for trajectory in mdp.trajectories():
        _, states, actions, _ = trajectory
        total = total + trajectory_probability(theta, mdp, trajectory) * per_step(theta, states, actions)
    return total


def random_mdp(seed: int, n_actions: int = 3) -> TabularMDP:
    """Three layers of states (1, 2, 2), stochastic transitions forward, some actions end the episode early."""
    rng = np.random.default_rng(seed)
    layers = [[0], [1, 2], [3, 4]]
    transitions: dict = {}
    for depth, layer in enumerate(layers):
        for state in layer:
            transitions[state] = {}
            for action in range(n_actions):
                if depth == len(layers) - 1 or (depth == 1 and action == 0):
                    transitions[state][action] = [(1.0, TERMINAL, float(rng.normal()))]
                else:
                    p = rng.uniform(0.2, 0.8)
                    following = layers[depth + 1]
                    transitions[state][action] = [(p, following[0], float(rng.normal())), (1 - p, following[1], 0.0)]
    teacher_logits = th.as_tensor(rng.normal(size=(5, n_actions)) * 1.5)
    return TabularMDP(np.array([1.0, 0, 0, 0, 0]), transitions, teacher_logits, parameter_row=list(range(5)))


def random_theta(seed: int, n_rows: int = 5, n_actions: int = 3) -> th.Tensor:
    generator = th.Generator().manual_seed(seed)
    return th.randn(n_rows, n_actions, generator=generator, dtype=th.float64).requires_grad_(True)


def teacher_cross_entropy(mdp):
    def per_step(theta, states, _):
        rows = th.as_tensor([mdp.parameter_row[s] for s in states])
        teacher = Categorical(logits=mdp.teacher_logits[th.as_tensor(states)])
        return -(teacher.probs * th.log_softmax(theta[rows], -1)).sum()

    return per_step


def trajectory_log_likelihood(mdp):
    def per_step(_, states, actions):
        return -Categorical(logits=mdp.teacher_logits[th.as_tensor(states)]).log_prob(th.as_tensor(actions)).sum()

    return per_step


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "update_rule,objective",
    [
        # N-distill: the gradient of E_{pi_theta}[sum_t H^x(pi(s_t) || pi_theta(s_t))] (Theorem 2)
        ("n_distill", teacher_cross_entropy),
        # Expected entropy regularised and entropy regularised: both of E_{pi_theta}[sum_t -log pi(a_t|s_t)] (Table 1)
        ("expected_entropy_regularised", trajectory_log_likelihood),
        ("entropy_regularised", trajectory_log_likelihood),
    ],
)
def test_expected_update_is_gradient_of_table_1_loss(update_rule, objective, seed):
    mdp, theta = random_mdp(seed), random_theta(seed)
    update = expected_update(theta, mdp, update_rule)
    (gradient,) = th.autograd.grad(exact_loss(theta, mdp, objective(mdp)), theta)
    assert gradient.abs().max() > 1e-2
    assert th.allclose(update, gradient, atol=1e-10)


def jacobian_asymmetry(mdp, theta, update_rule, epsilon=1e-5):
    """
    ``||J - J^T|| / ||J||`` of the expected update field ``theta -> g(theta)`` (0 for a gradient field, whose Jacobian
    is a Hessian). J by central differences: g depends on theta also through r^, which DistillPPO computes without
    gradient at rollout time.
    """
    flat = theta.detach().flatten()
    columns = []
    for j in range(len(flat)):
        shift = th.zeros_like(flat)
        shift[j] = epsilon
        plus = expected_update((flat + shift).reshape(theta.shape).requires_grad_(True), mdp, update_rule)
        minus = expected_update((flat - shift).reshape(theta.shape).requires_grad_(True), mdp, update_rule)
        columns.append(((plus - minus) / (2 * epsilon)).flatten())
    jacobian = th.stack(columns, dim=1)
    return ((jacobian - jacobian.T).norm() / jacobian.norm()).item()


@pytest.mark.parametrize("seed", [0])
def test_on_policy_distill_is_not_a_gradient_field(seed):
    """Theorem 1: the on-policy update's Jacobian is not symmetric; N-distill's (a Hessian) is."""
    mdp, theta = random_mdp(seed, n_actions=2), random_theta(seed, n_actions=2)
    assert jacobian_asymmetry(mdp, theta, "on_policy_distill") > 1e-2
    assert jacobian_asymmetry(mdp, theta, "n_distill") < 1e-6
    assert jacobian_asymmetry(mdp, theta, "expected_entropy_regularised") < 1e-6
    # ... and it is not the gradient of the loss it is named after
    update = expected_update(theta, mdp, "on_policy_distill")
    (gradient,) = th.autograd.grad(exact_loss(theta, mdp, teacher_cross_entropy(mdp)), theta)
    assert (update - gradient).abs().max() > 1e-2


def figure_2_mdp() -> TabularMDP:
    """
    Our instance of Fig. 2 of the paper (the figure's reward values and Appendix C are not reproduced here: these
    rewards are chosen to fit its description): from s_0, L leads to s_L and R to s_R; s_L and s_R share the
    student's parameters (the student cannot tell them apart, the teacher can); from s_L, L gives +1 and R gives 0;
    from s_R, L gives +2 and R gives -1. The teacher is uniform (no signal) except in s_R, where it prefers R with
    a logit gap of 4, so that ``H^x(pi_theta(s_R) || pi(s_R)) = -4 pi_theta(R | s_R) + const``: the paper's
    ``l(theta | s_R) = -4 pi_theta(R|s_R)``.
    """
    left, right = 0, 1
    s_0, s_left, s_right = 0, 1, 2
    transitions = {
        s_0: {left: [(1.0, s_left, 0.0)], right: [(1.0, s_right, 0.0)]},
        s_left: {left: [(1.0, TERMINAL, 1.0)], right: [(1.0, TERMINAL, 0.0)]},
        s_right: {left: [(1.0, TERMINAL, 2.0)], right: [(1.0, TERMINAL, -1.0)]},
    }
    teacher_logits = th.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 4.0]], dtype=th.float64)
    return TabularMDP(np.array([1.0, 0.0, 0.0]), transitions, teacher_logits, parameter_row=[0, 1, 1])


def run_figure_2(correction: bool, n_updates: int, learning_rate: float = 1.0):
    """Exact expected updates with the environment reward; returns pi_theta(R | s_0) and pi_theta(R | s_R) over time."""
    mdp = figure_2_mdp()
    theta = th.tensor([[0.0, 0.5], [0.0, -0.5]], dtype=th.float64, requires_grad=True)
    history = []
    for _ in range(n_updates):
        update = expected_update(theta, mdp, "expected_entropy_regularised", env_reward=True, correction=correction)
        with th.no_grad():
            theta -= learning_rate * update
            history.append(th.softmax(theta, -1)[:, 1].tolist())
    return np.array(history)


def test_figure_2_on_policy_oscillates_n_distill_converges():
    """
    Fig. 2: with rewards, the one-step on-policy update (l only) cycles around p = q = 1/2 and never converges;
    adding the correction reward of Theorem 2 (N-distill + R: r^_i = -l(s_{i+1}), here in the sampled form
    log pi(a_{i+1}|s_{i+1}) of expected entropy regularised) makes it a gradient field, which converges.
    """
    on_policy = run_figure_2(correction=False, n_updates=200)
    # Moving in a wide cycle: both probabilities swing across 1/2 again and again, still in the last 100 updates
    late = on_policy[-100:]
    assert (late.max(axis=0) - late.min(axis=0)).min() > 0.5
    crossings = np.count_nonzero(np.diff(np.sign(on_policy - 0.5), axis=0), axis=0)
    assert crossings.min() >= 4
    n_distill = run_figure_2(correction=True, n_updates=100)
    # Converged and no longer moving, to the maximiser of F = E[return] - E[sum_t l]: left everywhere
    # (F = 1 - 2 log 2 = -0.39 there; through s_R, F <= -1 - log 2 - (log(1 + e^4) - 4) = -1.71)
    assert np.abs(n_distill[-1] - n_distill[-20]).max() < 1e-2
    assert n_distill[-1].max() < 0.02
    crossings = np.count_nonzero(np.diff(np.sign(n_distill - 0.5), axis=0), axis=0)
    assert crossings.max() <= 1


def test_enumeration_is_a_distribution():
    mdp, theta = random_mdp(0), random_theta(0)
    total = sum(trajectory_probability(theta, mdp, trajectory) for trajectory in mdp.trajectories())
    assert th.isclose(total, th.tensor(1.0, dtype=th.float64))
    assert len(list(itertools.islice(mdp.trajectories(), 100))) > 10
