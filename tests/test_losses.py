import pytest
import torch as th
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from sb3_distill.common.losses import (
    DISTILLATION_LOSSES,
    diagonal_gaussian_kl,
    distillation_loss,
    dqn_td_targets,
    forward_kl_loss,
    gaussian_distillation_loss,
    mse_loss,
    nll_loss,
    piekd_critic_loss,
    piekd_policy_loss,
    reverse_kl_loss,
    sac_actor_loss,
    sac_critic_loss,
    sac_critic_targets,
    sac_ent_coef_loss,
    stacked_huber_loss,
)

N_TEACHERS, BATCH, N_ACTIONS = 3, 7, 5


@pytest.fixture
def q_values():
    generator = th.Generator().manual_seed(0)
    student_q = th.randn(BATCH, N_ACTIONS, generator=generator, dtype=th.float64, requires_grad=True)
    teacher_q = th.randn(N_TEACHERS, BATCH, N_ACTIONS, generator=generator, dtype=th.float64, requires_grad=True)
    return student_q, teacher_q


def direct_loss(loss: str, student_q: th.Tensor, teacher_q: th.Tensor, temperature: float) -> th.Tensor:
    """The losses written out with torch.distributions and explicit loops, for one teacher (batch, n_actions)."""
    student = Categorical(logits=student_q / temperature)
    teacher = Categorical(logits=teacher_q.detach() / temperature)
    if loss == "forward_kl":
        return kl_divergence(teacher, student).mean()
    if loss == "reverse_kl":
        return kl_divergence(student, teacher).mean()
    if loss == "nll":
        return -student.log_prob(teacher_q.argmax(dim=1)).mean()
    return sum(((teacher_q[i].detach() - student_q[i]) ** 2).sum() for i in range(student_q.shape[0])) / student_q.shape[0]


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
@pytest.mark.parametrize("temperature", [0.1, 1.0, 3.0])
def test_single_teacher_matches_direct_computation(q_values, loss, temperature):
    student_q, teacher_q = q_values
    value = distillation_loss(student_q, teacher_q[0], loss=loss, temperature=temperature)
    expected = direct_loss(loss, student_q, teacher_q[0], temperature)
    assert value.shape == ()
    assert th.allclose(value, expected)
    (grad,) = th.autograd.grad(value, student_q)
    (expected_grad,) = th.autograd.grad(expected, student_q)
    assert th.allclose(grad, expected_grad)


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_mean_loss_is_average_of_teacher_losses(q_values, loss):
    student_q, teacher_q = q_values
    value = distillation_loss(student_q, teacher_q, loss=loss, temperature=0.5, reduction="mean_loss")
    expected = sum(direct_loss(loss, student_q, teacher_q[j], 0.5) for j in range(N_TEACHERS)) / N_TEACHERS
    assert th.allclose(value, expected)
    (grad,) = th.autograd.grad(value, student_q)
    (expected_grad,) = th.autograd.grad(expected, student_q)
    assert th.allclose(grad, expected_grad)


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_mean_probs_distills_from_averaged_distribution(q_values, loss):
    student_q, teacher_q = q_values
    temperature = 0.5
    value = distillation_loss(student_q, teacher_q, loss=loss, temperature=temperature, reduction="mean_probs")
    mean_probs = th.softmax(teacher_q.detach() / temperature, dim=-1).mean(dim=0)
    student = Categorical(logits=student_q / temperature)
    teacher = Categorical(probs=mean_probs)
    if loss == "forward_kl":
        expected = kl_divergence(teacher, student).mean()
    elif loss == "reverse_kl":
        expected = kl_divergence(student, teacher).mean()
    elif loss == "nll":
        expected = -student.log_prob(mean_probs.argmax(dim=1)).mean()
    else:
        expected = ((teacher_q.detach().mean(dim=0) - student_q) ** 2).sum(dim=1).mean()
    assert th.allclose(value, expected)
    (grad,) = th.autograd.grad(value, student_q)
    (expected_grad,) = th.autograd.grad(expected, student_q)
    assert th.allclose(grad, expected_grad)


def test_reverse_kl_closed_form():
    # Two actions: KL(p_S || p_T) written out by hand
    student_q = th.tensor([[1.0, 0.0]])
    teacher_q = th.tensor([[0.0, 2.0]])
    p_s = th.softmax(student_q, dim=1)[0]
    p_t = th.softmax(teacher_q, dim=1)[0]
    expected = (p_s * (p_s.log() - p_t.log())).sum()
    assert th.allclose(reverse_kl_loss(student_q, teacher_q, temperature=1.0), expected)
    # ... and it is not symmetric
    assert not th.allclose(forward_kl_loss(student_q, teacher_q, temperature=1.0), expected)


def test_named_functions_agree_with_dispatcher(q_values):
    student_q, teacher_q = q_values
    for name, function in [
        ("forward_kl", forward_kl_loss),
        ("reverse_kl", reverse_kl_loss),
        ("nll", nll_loss),
        ("mse", mse_loss),
    ]:
        assert th.allclose(function(student_q, teacher_q, temperature=0.3), distillation_loss(student_q, teacher_q, name, 0.3))


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
@pytest.mark.parametrize("reduction", ["mean_loss", "mean_probs"])
def test_teacher_receives_no_gradient(q_values, loss, reduction):
    student_q, teacher_q = q_values
    distillation_loss(student_q, teacher_q, loss=loss, temperature=0.1, reduction=reduction).backward()
    assert teacher_q.grad is None
    assert student_q.grad is not None and th.isfinite(student_q.grad).all()


def test_zero_when_student_equals_teacher(q_values):
    _, teacher_q = q_values
    for loss in ["forward_kl", "reverse_kl", "mse"]:
        assert distillation_loss(teacher_q[0].detach(), teacher_q[0], loss=loss).abs() < 1e-12


def test_low_temperature_is_stable():
    student_q = th.tensor([[1000.0, -1000.0, 0.0]], requires_grad=True)
    teacher_q = th.tensor([[-1000.0, 1000.0, 0.0]])
    for loss in DISTILLATION_LOSSES:
        value = distillation_loss(student_q, teacher_q, loss=loss, temperature=0.01)
        assert th.isfinite(value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(loss="kl"), "loss"),
        (dict(reduction="max"), "reduction"),
    ],
)
def test_bad_arguments(q_values, kwargs, match):
    student_q, teacher_q = q_values
    with pytest.raises(ValueError, match=match):
        distillation_loss(student_q, teacher_q, **kwargs)


def test_mismatched_shapes(q_values):
    student_q, teacher_q = q_values
    with pytest.raises(ValueError, match="teacher_q"):
        distillation_loss(student_q, teacher_q[:, :, :3])
    with pytest.raises(ValueError, match="teacher_q"):
        distillation_loss(student_q, teacher_q[:, :3])
    with pytest.raises(ValueError, match="student_q"):
        distillation_loss(student_q[0], teacher_q)


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_stacked_students_average_their_losses(q_values, loss):
    _, teacher_q = q_values
    students_q = th.randn(4, BATCH, N_ACTIONS, dtype=th.float64, requires_grad=True)
    value = distillation_loss(students_q, teacher_q[0], loss=loss, temperature=0.7)
    expected = sum(direct_loss(loss, students_q[k], teacher_q[0], 0.7) for k in range(4)) / 4
    assert th.allclose(value, expected)
    (grad,) = th.autograd.grad(value, students_q)
    (expected_grad,) = th.autograd.grad(expected, students_q)
    assert th.allclose(grad, expected_grad)


def test_stacked_students_need_one_teacher(q_values):
    _, teacher_q = q_values
    with pytest.raises(ValueError, match="teacher_q"):
        distillation_loss(th.randn(2, BATCH, N_ACTIONS), teacher_q)


def test_dqn_td_targets_imitation_and_own():
    rewards = th.tensor([[1.0], [0.5]])
    dones = th.tensor([[0.0], [1.0]])
    # Two students, two samples, three actions
    student_next_q = th.tensor([[[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]], [[4.0, 0.0, 9.0], [1.0, 2.0, 3.0]]])
    # The teacher prefers action 0 on sample 0 and action 2 on sample 1
    teacher_next_q = th.tensor([[10.0, 1.0, 2.0], [0.0, 1.0, 7.0]])
    # Eq. 5: the teacher picks the action (0), the student values it; sample 1 is terminal
    targets = dqn_td_targets(rewards, dones, 0.9, student_next_q, teacher_next_q)
    assert th.allclose(targets, th.tensor([[1.0 + 0.9 * 1.0, 0.5], [1.0 + 0.9 * 4.0, 0.5]]))
    # Eq. 4: the student's own max
    targets = dqn_td_targets(rewards, dones, 0.9, student_next_q)
    assert th.allclose(targets, th.tensor([[1.0 + 0.9 * 5.0, 0.5], [1.0 + 0.9 * 9.0, 0.5]]))
    # Per-sample discounts (n-step returns), shape (batch, 1)
    targets = dqn_td_targets(rewards, th.zeros(2, 1), th.tensor([[0.5], [0.25]]), student_next_q, teacher_next_q)
    assert th.allclose(targets, th.tensor([[1.0 + 0.5 * 1.0, 0.5 + 0.25 * 1.0], [1.0 + 0.5 * 4.0, 0.5 + 0.25 * 3.0]]))


def test_stacked_huber_loss_is_each_networks_dqn_loss():
    """K stacked networks' losses equal SB3's DQN loss of each network on its own, gradients included."""
    q_values = th.randn(3, BATCH, N_ACTIONS, requires_grad=True)
    actions = th.randint(N_ACTIONS, (BATCH, 1))
    targets = th.randn(3, BATCH) * 3  # some beyond the Huber loss's quadratic region
    losses = stacked_huber_loss(q_values, actions, targets)
    assert losses.shape == (3,)
    (stacked_grad,) = th.autograd.grad(losses.sum(), q_values)
    for k in range(3):
        member_q = q_values[k].detach().requires_grad_(True)
        # SB3's DQN.train: gather the actions taken, Huber loss against (batch, 1) targets
        direct = th.nn.functional.smooth_l1_loss(th.gather(member_q, 1, actions), targets[k].reshape(-1, 1))
        assert th.allclose(losses[k], direct)
        (grad,) = th.autograd.grad(direct, member_q)
        assert th.allclose(stacked_grad[k], grad)


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl"])
def test_gaussian_kl_matches_torch_distributions(loss):
    generator = th.Generator().manual_seed(1)
    shape = (BATCH, 3)
    student_mean = th.randn(shape, generator=generator, dtype=th.float64, requires_grad=True)
    student_log_std = (0.5 * th.randn(shape, generator=generator, dtype=th.float64)).requires_grad_()
    teacher_mean = th.randn(shape, generator=generator, dtype=th.float64, requires_grad=True)
    teacher_log_std = (0.5 * th.randn(shape, generator=generator, dtype=th.float64)).requires_grad_()
    value = gaussian_distillation_loss(student_mean, student_log_std, teacher_mean, teacher_log_std, loss=loss)
    student = Independent(Normal(student_mean, student_log_std.exp()), 1)
    teacher = Independent(Normal(teacher_mean.detach(), teacher_log_std.detach().exp()), 1)
    expected = (kl_divergence(teacher, student) if loss == "forward_kl" else kl_divergence(student, teacher)).mean()
    assert value.shape == ()
    assert th.allclose(value, expected)
    grads = th.autograd.grad(value, [student_mean, student_log_std], retain_graph=True)
    expected_grads = th.autograd.grad(expected, [student_mean, student_log_std])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert th.allclose(grad, expected_grad)
    # The teacher never receives a gradient
    assert th.autograd.grad(value, [teacher_mean, teacher_log_std], allow_unused=True) == (None, None)


def test_gaussian_kl_broadcasts_state_independent_std_and_members():
    generator = th.Generator().manual_seed(2)
    # K=2 stacked students (2, batch, 3) against one teacher (batch, 3), log std shared over the batch
    student_mean = th.randn(2, BATCH, 3, generator=generator, dtype=th.float64)
    student_log_std = th.randn(2, 1, 3, generator=generator, dtype=th.float64)
    teacher_mean = th.randn(BATCH, 3, generator=generator, dtype=th.float64)
    teacher_log_std = th.randn(3, generator=generator, dtype=th.float64)
    per_sample = diagonal_gaussian_kl(teacher_mean, teacher_log_std, student_mean, student_log_std)
    assert per_sample.shape == (2, BATCH)
    teacher = Independent(Normal(teacher_mean, teacher_log_std.exp()), 1)
    for k in range(2):
        student = Independent(Normal(student_mean[k], student_log_std[k].exp().expand(BATCH, 3)), 1)
        assert th.allclose(per_sample[k], kl_divergence(teacher, student))
    same = diagonal_gaussian_kl(teacher_mean, teacher_log_std, teacher_mean, teacher_log_std)
    assert th.allclose(same, th.zeros(BATCH, dtype=th.float64))


def test_gaussian_mse_and_bad_input():
    student_mean = th.zeros(BATCH, 2, requires_grad=True)
    teacher_mean = th.ones(BATCH, 2)
    assert th.isclose(gaussian_distillation_loss(student_mean, None, teacher_mean, None, loss="mse"), th.tensor(2.0))
    with pytest.raises(ValueError, match="`loss` must be one of"):
        gaussian_distillation_loss(student_mean, None, teacher_mean, None, loss="nll")
    with pytest.raises(ValueError, match="log standard deviations"):
        gaussian_distillation_loss(student_mean, None, teacher_mean, None, loss="forward_kl")


def sac_batch(n_members=3, n_critics=2, batch=BATCH, seed=3):
    """Random stacked SAC quantities, float64, with gradients where SAC's losses take them."""
    generator = th.Generator().manual_seed(seed)

    def randn(*shape):
        return th.randn(*shape, generator=generator, dtype=th.float64)

    return dict(
        rewards=randn(batch, 1),
        dones=(th.rand(batch, 1, generator=generator) < 0.3).double(),
        next_q=randn(n_members, n_critics, batch),
        next_log_prob=randn(n_members, batch),
        q_values=randn(n_members, n_critics, batch).requires_grad_(),
        log_prob=randn(n_members, batch).requires_grad_(),
        log_ent_coef=randn(n_members).requires_grad_(),
    )


@pytest.mark.parametrize("discounts", [0.9, "per_sample"])
def test_sac_losses_are_each_members_sb3_losses(discounts):
    """Every stacked SAC loss equals SB3's SAC.train loss of each member written out on its own, gradients included."""
    data = sac_batch()
    if discounts == "per_sample":
        discounts = th.rand(BATCH, 1, dtype=th.float64)
    ent_coef = data["log_ent_coef"].detach().exp()
    targets = sac_critic_targets(data["rewards"], data["dones"], discounts, data["next_q"], data["next_log_prob"], ent_coef)
    critic_losses = sac_critic_loss(data["q_values"], targets)
    actor_losses = sac_actor_loss(data["q_values"], data["log_prob"], ent_coef)
    ent_coef_losses = sac_ent_coef_loss(data["log_ent_coef"], data["log_prob"], -1.0)
    assert targets.shape == (3, BATCH) and not targets.requires_grad
    assert critic_losses.shape == actor_losses.shape == ent_coef_losses.shape == (3,)
    grads = th.autograd.grad(
        critic_losses.sum() + actor_losses.sum() + ent_coef_losses.sum(),
        [data["q_values"], data["log_prob"], data["log_ent_coef"]],
    )
    for k in range(3):
        q_values = data["q_values"][k].detach().requires_grad_()
        log_prob = data["log_prob"][k].detach().requires_grad_()
        log_ent_coef = data["log_ent_coef"][k : k + 1].detach().requires_grad_()
        # SB3's SAC.train for one agent: (batch, 1) columns
        next_q = data["next_q"][k].T.min(dim=1, keepdim=True).values - ent_coef[k] * data["next_log_prob"][k].reshape(-1, 1)
        target = data["rewards"] + (1 - data["dones"]) * discounts * next_q
        critic = 0.5 * sum(th.nn.functional.mse_loss(q.reshape(-1, 1), target) for q in q_values)
        actor = (ent_coef[k] * log_prob.reshape(-1, 1) - q_values.T.min(dim=1, keepdim=True).values).mean()
        ent = -(log_ent_coef * (log_prob - 1.0).detach()).mean()
        th.testing.assert_close(targets[k], target.squeeze(1))
        th.testing.assert_close(critic_losses[k], critic)
        th.testing.assert_close(actor_losses[k], actor)
        th.testing.assert_close(ent_coef_losses[k], ent)
        expected = th.autograd.grad(critic + actor + ent, [q_values, log_prob, log_ent_coef])
        th.testing.assert_close(grads[0][k], expected[0])
        th.testing.assert_close(grads[1][k], expected[1])
        th.testing.assert_close(grads[2][k], expected[2][0])


@pytest.mark.parametrize("teacher", [0, 2])
def test_piekd_losses_match_per_student_computation(teacher):
    """Eq. 1 and Eq. 2 of PIEKD (Hong et al.) written out per student with torch.distributions, gradients included."""
    generator = th.Generator().manual_seed(4)
    mean = th.randn(3, BATCH, 2, generator=generator, dtype=th.float64, requires_grad=True)
    log_std = (0.5 * th.randn(3, BATCH, 2, generator=generator, dtype=th.float64)).requires_grad_()
    q_values = th.randn(3, 2, BATCH, generator=generator, dtype=th.float64, requires_grad=True)
    policy_loss, critic_loss = piekd_policy_loss(mean, log_std, teacher), piekd_critic_loss(q_values, teacher)
    teacher_policy = Independent(Normal(mean[teacher].detach(), log_std[teacher].detach().exp()), 1)
    students = [k for k in range(3) if k != teacher]
    expected_policy = sum(
        kl_divergence(teacher_policy, Independent(Normal(mean[k], log_std[k].exp()), 1)).mean() for k in students
    )
    expected_critic = sum(((q_values[teacher].detach()[j] - q_values[k][j]) ** 2).mean() for k in students for j in range(2))
    th.testing.assert_close(policy_loss, expected_policy)
    th.testing.assert_close(critic_loss, expected_critic)
    grads = th.autograd.grad(policy_loss + critic_loss, [mean, log_std, q_values])
    expected_grads = th.autograd.grad(expected_policy + expected_critic, [mean, log_std, q_values])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        th.testing.assert_close(grad, expected_grad)
        # The teacher receives no gradient, exactly
        assert th.all(grad[teacher] == 0)
