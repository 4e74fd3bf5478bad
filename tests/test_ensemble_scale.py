"""Ensemble students at any reward scale: spread-scaled temperature, return-weighted teachers, diagnostics."""

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from torch.distributions import Categorical, kl_divergence

import sb3_distill.common.distill_dqn as distill_dqn_module
from sb3_distill import EnsembleDistillDQN, RealTimeDistillDQN
from sb3_distill.common.callbacks import EvalMembersCallback, students_below_teachers
from sb3_distill.common.diagnostics import (
    agreement_rate,
    one_hot_dominance,
    one_hot_rate,
    record_ensemble_diagnostics,
    softmax_entropy,
)
from sb3_distill.common.losses import (
    DISTILLATION_LOSSES,
    check_choice,
    check_positive_number,
    distillation_loss,
    per_teacher_distillation_losses,
    q_value_spread,
    return_weights,
    spread_scaled_q_values,
    update_running_spread_,
    weighted_distillation_loss,
)

N_TEACHERS, BATCH, N_ACTIONS = 3, 7, 5


@pytest.fixture
def q_values():
    generator = th.Generator().manual_seed(0)
    student_q = th.randn(BATCH, N_ACTIONS, generator=generator, dtype=th.float64, requires_grad=True)
    # Teachers at very different scales, as a diverged teacher's
    scales = th.tensor([1.0, 10.0, 100.0], dtype=th.float64).reshape(-1, 1, 1)
    teacher_q = th.randn(N_TEACHERS, BATCH, N_ACTIONS, generator=generator, dtype=th.float64) * scales
    return student_q, teacher_q.requires_grad_(True)


def direct_loss(loss, student_q, teacher_q, temperature):
    """One teacher's loss, (batch, n_actions), written out (torch.distributions' KL overflows at large logits)."""
    log_p_student = student_q / temperature - th.logsumexp(student_q / temperature, dim=1, keepdim=True)
    log_p_teacher = (teacher_q.detach() / temperature).log_softmax(dim=1)
    if loss == "forward_kl":
        return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1).mean()
    if loss == "reverse_kl":
        return (log_p_student.exp() * (log_p_student - log_p_teacher)).sum(dim=1).mean()
    if loss == "nll":
        return -Categorical(logits=student_q / temperature).log_prob(teacher_q.argmax(dim=1)).mean()
    return ((teacher_q.detach() - student_q) ** 2).sum(dim=1).mean()


def assert_same_value_and_grad(value, expected, wrt):
    assert th.allclose(value, expected)
    (grad,) = th.autograd.grad(value, wrt, retain_graph=True)
    (expected_grad,) = th.autograd.grad(expected, wrt)
    assert th.allclose(grad, expected_grad)


def test_q_value_spread(q_values):
    teacher_q = q_values[1].detach()
    expected = [
        np.mean([float(teacher_q[j, i].max() - teacher_q[j, i].min()) for i in range(BATCH)]) for j in range(N_TEACHERS)
    ]
    spread = q_value_spread(teacher_q)
    assert spread.shape == (N_TEACHERS,) and not spread.requires_grad
    assert np.allclose(spread.numpy(), expected)


def test_running_spread_is_a_bias_corrected_moving_average(q_values):
    _, teacher_q = q_values
    ema, weight = th.zeros(N_TEACHERS, dtype=th.float64), th.zeros((), dtype=th.float64)
    # First update: the estimate is the batch's spread (no bias towards the initial 0)
    first = update_running_spread_(ema, weight, teacher_q, decay=0.9)
    assert th.allclose(first, q_value_spread(teacher_q))
    second = update_running_spread_(ema, weight, 2 * teacher_q, decay=0.9)
    # (0.9 * 0.1 s + 0.1 * 2 s) / (1 - 0.9^2)
    expected = (0.9 * 0.1 + 0.1 * 2) / (1 - 0.9**2) * q_value_spread(teacher_q)
    assert th.allclose(second, expected)
    assert th.allclose(weight, th.tensor(1 - 0.9**2, dtype=th.float64))


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_spread_scaling_makes_teachers_equally_confident(q_values, temperature):
    _, teacher_q = q_values
    spread = q_value_spread(teacher_q)
    scaled = spread_scaled_q_values(teacher_q, spread)
    assert not scaled.requires_grad
    # softmax(q~ / tau) = softmax(q / (sigma tau)), and every teacher's scaled spread is 1
    for j in range(N_TEACHERS):
        assert th.allclose(th.softmax(scaled[j] / temperature, -1), th.softmax(teacher_q[j] / (spread[j] * temperature), -1))
    assert th.allclose(q_value_spread(scaled), th.ones(N_TEACHERS, dtype=th.float64))
    # The raw entropies differ by teacher scale, the scaled ones much less
    raw_entropy, scaled_entropy = softmax_entropy(teacher_q, temperature), softmax_entropy(scaled, temperature)
    assert raw_entropy[0] > raw_entropy[2]
    assert (scaled_entropy.max() - scaled_entropy.min()) < (raw_entropy.max() - raw_entropy.min())
    # A flat teacher is not blown up
    assert th.isfinite(spread_scaled_q_values(th.zeros(1, 2, 3), th.zeros(1))).all()


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_per_teacher_losses_match_direct_computation(q_values, loss):
    student_q, teacher_q = q_values
    losses = per_teacher_distillation_losses(student_q, teacher_q, loss=loss, temperature=0.5)
    assert losses.shape == (N_TEACHERS,)
    for j in range(N_TEACHERS):
        assert_same_value_and_grad(losses[j], direct_loss(loss, student_q, teacher_q[j], 0.5), student_q)


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_weighted_mean_loss(q_values, loss):
    student_q, teacher_q = q_values
    weights = th.tensor([0.7, 0.2, 0.1], dtype=th.float64)
    value = weighted_distillation_loss(student_q, teacher_q, weights, loss=loss, temperature=0.5)
    expected = sum(weights[j] * direct_loss(loss, student_q, teacher_q[j], 0.5) for j in range(N_TEACHERS))
    assert_same_value_and_grad(value, expected, student_q)
    # Uniform weights and None are the paper's Eq. 4
    uniform = th.full((N_TEACHERS,), 1 / N_TEACHERS, dtype=th.float64)
    paper = distillation_loss(student_q, teacher_q, loss=loss, temperature=0.5)
    assert th.allclose(weighted_distillation_loss(student_q, teacher_q, uniform, loss=loss, temperature=0.5), paper)
    assert th.equal(weighted_distillation_loss(student_q, teacher_q, None, loss=loss, temperature=0.5), paper)
    assert teacher_q.grad is None


@pytest.mark.parametrize("loss", DISTILLATION_LOSSES)
def test_weighted_mean_probs(q_values, loss):
    student_q, teacher_q = q_values
    weights = th.tensor([0.5, 0.5, 0.0], dtype=th.float64)
    value = weighted_distillation_loss(student_q, teacher_q, weights, loss=loss, temperature=2.0, reduction="mean_probs")
    # A zero weight removes the teacher: the same as the two others' unweighted mean_probs
    expected = distillation_loss(student_q, teacher_q[:2], loss=loss, temperature=2.0, reduction="mean_probs")
    assert_same_value_and_grad(value, expected, student_q)
    if loss in ("forward_kl", "reverse_kl"):
        mixture = Categorical(probs=(weights.reshape(-1, 1, 1) * th.softmax(teacher_q.detach() / 2.0, -1)).sum(0))
        student = Categorical(logits=student_q / 2.0)
        pair = (mixture, student) if loss == "forward_kl" else (student, mixture)
        assert th.allclose(value, kl_divergence(*pair).mean())


def test_return_weights():
    means, stds = th.tensor([87.8, 177.0, -416.6]), th.tensor([30.0, 40.0, 100.0])
    weights = return_weights(means, stds, temperature=0.25)
    pooled = math.sqrt(float((stds**2).mean()) + float(means.var(unbiased=False)))
    expected = th.softmax((means - means.mean()) / pooled / 0.25, dim=0)
    assert th.allclose(weights, expected)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-6)
    # The diverged teacher loses its vote; the best teacher weighs the most
    assert weights[2] < 1e-3 and weights.argmax() == 1
    # Teachers that differ by less than their episode noise weigh about the same
    close = return_weights(th.tensor([230.0, 240.0, 250.0]), th.tensor([60.0, 60.0, 60.0]), temperature=0.25)
    assert close.max() / close.min() < 4
    # Equal returns, or none yet, give uniform weights; a teacher without returns is given the mean
    assert th.allclose(return_weights(th.ones(3), th.zeros(3)), th.full((3,), 1 / 3))
    assert th.allclose(return_weights(th.full((3,), float("nan")), th.zeros(3)), th.full((3,), 1 / 3))
    partial = return_weights(th.tensor([0.0, float("nan"), 10.0]), th.ones(3))
    assert partial[0] < partial[1] < partial[2]


def test_checks():
    check_choice(None, "x", (None, "spread"))
    check_choice("spread", "x", (None, "spread"))
    with pytest.raises(ValueError, match=r"`x` must be one of \(None, 'spread'\), got 'Spread'"):
        check_choice("Spread", "x", (None, "spread"))
    check_positive_number(np.float32(0.5), "beta", "b")
    check_positive_number(2, "beta", "b")
    for bad in (True, 0, -1.0, float("inf"), float("nan"), "1", None):
        with pytest.raises(ValueError, match="`beta` must be a finite number > 0"):
            check_positive_number(bad, "beta", "b")


def test_diagnostics_match_direct_computation(q_values):
    student_q, teacher_q = q_values
    agreement = agreement_rate(teacher_q, student_q)
    for j in range(N_TEACHERS):
        same = [int(teacher_q[j, i].argmax() == student_q[i].argmax()) for i in range(BATCH)]
        assert math.isclose(float(agreement[j]), np.mean(same), rel_tol=1e-6)
    assert th.allclose(softmax_entropy(teacher_q, 0.3), Categorical(logits=teacher_q / 0.3).entropy().mean(dim=1))
    probs = th.softmax(teacher_q / 0.3, -1)
    assert th.allclose(one_hot_rate(teacher_q, 0.3), (probs.max(-1).values > 0.99).double().mean(-1).float())
    assert one_hot_dominance(np.array([0.1, 0.9, 0.2])) == 1
    assert one_hot_dominance(np.array([0.9, 0.9, 0.2])) is None
    assert one_hot_dominance(np.array([0.1, 0.2, 0.3])) is None
    assert one_hot_dominance(np.array([0.9])) is None


def test_record_ensemble_diagnostics_warns_on_a_dominant_teacher(q_values):
    student_q, teacher_q = q_values
    logger = configure(None, [])
    # Teacher 2's Q-values are 1000 times larger than the others': one-hot at tau = 0.1, the others are not
    teacher_q = teacher_q.detach().clone()
    teacher_q[:2] = teacher_q[:2] * th.tensor([0.01, 0.001], dtype=th.float64).reshape(2, 1, 1)
    with pytest.warns(UserWarning, match="Teacher 2's distribution at temperature 0.1 is near one-hot"):
        rates = record_ensemble_diagnostics(logger, teacher_q, student_q.detach(), 0.1, th.ones(3), th.ones(3) / 3)
    assert rates[2] > 0.5 and rates[0] < 0.5
    for name in ("agreement", "entropy", "one_hot_rate", "q_spread", "weight"):
        assert f"train/{name}_teacher_2" in logger.name_to_value
    assert "train/entropy_student" in logger.name_to_value
    # Scaled by their spread, no teacher dominates
    scaled = spread_scaled_q_values(teacher_q, q_value_spread(teacher_q))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        record_ensemble_diagnostics(logger, scaled, student_q.detach(), 1.0)


def test_students_below_teachers():
    results = {"teacher_0": (10.0, 0.0), "teacher_1": (-5.0, 0.0), "student": (-6.0, 0.0)}
    assert students_below_teachers(results) == ["student"]
    assert students_below_teachers({**results, "student": (-5.0, 0.0)}) == []
    assert students_below_teachers({"teacher": (1.0, 0.0), "student_0": (0.0, 0.0), "student_1": (2.0, 0.0)}) == ["student_0"]
    assert students_below_teachers({"member_0": (1.0, 0.0)}) == []


def tiny_ensemble(**kwargs):
    config = dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        train_freq=4,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
        seed=0,
    )
    return EnsembleDistillDQN("MlpPolicy", "CartPole-v1", **{**config, **kwargs})


@pytest.mark.parametrize("diagnostics", [True, False])
def test_ensemble_logs_diagnostics(diagnostics):
    model = tiny_ensemble(distill_diagnostics=diagnostics)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.learn(120)
    keys = model.logger.name_to_value
    for name in ("agreement", "entropy", "one_hot_rate", "q_spread"):
        assert (f"train/{name}_teacher_{N_TEACHERS - 1}" in keys) == diagnostics
    assert "train/weight_teacher_0" not in keys
    if diagnostics:
        assert 0 <= keys["train/agreement_teacher_0"] <= 1
        assert 0 <= keys["train/entropy_teacher_0"] <= math.log(2) + 1e-6


def batch_of(model, n=16):
    data = model.replay_buffer.sample(n)
    return (data.observations, data.actions, data.next_observations, data.rewards, data.dones, model.gamma)


@pytest.mark.parametrize("temperature_scaling", [None, "spread"])
def test_ensemble_distillation_loss(temperature_scaling):
    model = tiny_ensemble(temperature_scaling=temperature_scaling)
    model.learn(100)
    batch = batch_of(model)
    teacher_q, student_q = model.q_net(batch[0]).detach(), model.student(batch[0]).detach()
    ema, weight = model.q_spread_ema.clone(), model.q_spread_ema_weight.clone()
    _, value = model._losses(*batch)
    spread = (0.99 * ema + 0.01 * q_value_spread(teacher_q)) / (0.99 * weight + 0.01)
    assert th.allclose(model.q_spread_ema / model.q_spread_ema_weight, spread)
    expected_q = teacher_q / spread.reshape(-1, 1, 1) if temperature_scaling == "spread" else teacher_q
    # The paper's loss (Eq. 4, reverse KL at tau = 0.1) on the raw or scaled Q-values
    expected = sum(direct_loss("reverse_kl", student_q, expected_q[j], 0.1) for j in range(N_TEACHERS)) / N_TEACHERS
    assert th.allclose(value, expected.float(), atol=1e-5)


def test_ensemble_return_weighting(tmp_path, monkeypatch):
    model = tiny_ensemble(teacher_weighting="returns", teacher_weighting_temperature=0.5)
    model.learn(100)
    assert model._teacher_weights is None  # uniform until the first evaluation
    evaluations = [[[10.0, 20.0, -50.0], [1.0, 2.0, 3.0]], [[12.0, 22.0, -40.0], [1.0, 1.0, 1.0]]]
    results = [{f"teacher_{j}": (m[j], s[j]) for j in range(3)} | {"student": (0.0, 0.0)} for m, s in evaluations]
    iterator = iter(results)
    # The members' evaluation returns these results (the evaluation itself is tested elsewhere)
    monkeypatch.setattr(distill_dqn_module, "evaluate_q_functions", lambda *args, **kwargs: next(iterator))
    for _ in evaluations:
        model.evaluate_members(gym.make("CartPole-v1"))
    means, stds = np.array([e[0] for e in evaluations]), np.array([e[1] for e in evaluations])
    expected = return_weights(
        th.tensor(means.mean(0), dtype=th.float32),
        th.tensor(np.sqrt((stds**2).mean(0) + means.var(0)), dtype=th.float32),
        0.5,
    )
    assert th.allclose(model._teacher_weights, expected)
    assert model._teacher_weights[2] < 0.01
    # The loss uses the weights
    batch = batch_of(model)
    teacher_q, student_q = model.q_net(batch[0]).detach(), model.student(batch[0]).detach()
    spread_ema_before = model.q_spread_ema.clone()
    _, value = model._losses(*batch)
    direct = sum(float(expected[j]) * direct_loss("reverse_kl", student_q, teacher_q[j], 0.1) for j in range(3))
    assert th.allclose(value, direct, atol=1e-5)
    assert not th.equal(spread_ema_before, model.q_spread_ema)
    # Saved and loaded: the evaluations, the weights and the running spreads
    model.save(tmp_path / "model")
    loaded = EnsembleDistillDQN.load(tmp_path / "model")
    assert loaded.teacher_evaluations == model.teacher_evaluations
    assert th.equal(loaded._teacher_weights, model._teacher_weights)
    assert th.equal(loaded.q_spread_ema, model.q_spread_ema)
    assert th.equal(loaded.q_spread_ema_weight, model.q_spread_ema_weight)
    assert loaded.teacher_weighting == "returns" and loaded.teacher_weighting_temperature == 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature_scaling="std"), r"`temperature_scaling` must be one of \(None, 'spread'\), got 'std'"),
        (dict(teacher_weighting=True), r"`teacher_weighting` must be one of \(None, 'returns'\), got True"),
        (dict(teacher_weighting_temperature=0), "`teacher_weighting_temperature` must be a finite number > 0"),
        (dict(teacher_weighting_temperature=float("inf")), "`teacher_weighting_temperature` must be a finite number"),
        (dict(distill_diagnostics=1), r"`distill_diagnostics` must be a bool \(True or False\), got 1"),
    ],
)
def test_ensemble_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        tiny_ensemble(**kwargs)
    # Also on load(**kwargs)
    tiny_ensemble().save(tmp_path / "model")
    with pytest.raises(ValueError, match=match):
        EnsembleDistillDQN.load(tmp_path / "model", **kwargs)


def test_eval_callback_warns_when_student_below_worst_teacher():
    model = tiny_ensemble()
    model.set_logger(configure(None, []))
    callback = EvalMembersCallback(gym.make("CartPole-v1"), eval_freq=1)
    callback.init_callback(model)
    results = {"teacher_0": (50.0, 1.0), "teacher_1": (20.0, 1.0), "teacher_2": (30.0, 1.0), "student": (10.0, 1.0)}
    model.evaluate_members = lambda env, n_eval_episodes: results  # type: ignore[method-assign]
    with pytest.warns(UserWarning, match=r"the student's evaluation \(10\) is below every teacher's \(50, 20, 30\)"):
        callback.on_step()
    assert callback.evaluations == [(0, results)]
    results = {**results, "student": (25.0, 1.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.on_step()
    assert model.logger.name_to_value["eval/teacher_2"] == 30.0
    assert len(callback.evaluations) == 2


@pytest.mark.parametrize("stack_teacher", [True, False])
@pytest.mark.parametrize("diagnostics", [True, False])
def test_realtime_logs_diagnostics(stack_teacher, diagnostics):
    model = RealTimeDistillDQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        policy_kwargs=dict(net_arch=[16]),
        students=[dict(net_arch=[8]), dict(net_arch=[4]), dict(net_arch=[8, 8])],
        stack_teacher=stack_teacher,
        distill_diagnostics=diagnostics,
        seed=0,
    )
    model.learn(100)
    keys = model.logger.name_to_value
    for name in (
        "train/agreement_student_2",
        "train/entropy_student_2",
        "train/entropy_teacher",
        "train/one_hot_rate_teacher",
    ):
        assert (name in keys) == diagnostics
    assert "train/agreement_student_3" not in keys
    if diagnostics:
        assert 0 <= keys["train/agreement_student_0"] <= 1
    with pytest.raises(ValueError, match="`distill_diagnostics` must be a bool"):
        RealTimeDistillDQN("MlpPolicy", "CartPole-v1", distill_diagnostics="yes")


def distilled_action(teacher_q, weights=None, temperature=0.1, steps=60):
    """The greedy action of a free student (its own logits) trained on the ensemble's reverse KL (Eq. 4)."""
    student_q = th.zeros(1, teacher_q.shape[-1], requires_grad=True)
    optimizer = th.optim.Adam([student_q], lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        weighted_distillation_loss(student_q, teacher_q, weights, loss="reverse_kl", temperature=temperature).backward()
        optimizer.step()
    return int(student_q.argmax())


def test_one_hot_bad_teacher_is_outvoted_only_when_scaled():
    # Issue 17's situation: two good teachers prefer action 0 with Q-values spread over 0.2, a diverged
    # teacher prefers action 1 with Q-values spread over 44
    teacher_q = th.tensor([[[0.2, 0.0, 0.1, 0.1]], [[0.2, 0.0, 0.1, 0.1]], [[0.0, 44.0, 0.0, 0.0]]])
    # The paper's raw temperature: the one-hot teacher wins the vote
    assert distilled_action(teacher_q) == 1
    # Scaled by each teacher's spread, the majority wins
    assert distilled_action(spread_scaled_q_values(teacher_q, q_value_spread(teacher_q))) == 0
    # Weighted by returns (those of issue 17, seed 0), the diverged teacher loses its vote
    weights = return_weights(th.tensor([87.8, 177.0, -416.6]), th.tensor([30.0, 30.0, 30.0]))
    assert distilled_action(teacher_q, weights) == 0


def test_eval_callback_takes_an_env_id():
    """An env id (what rl-zoo3's YAML ``callback`` hyperparameter can give) becomes a Monitor-wrapped env."""
    from stable_baselines3.common.monitor import Monitor

    callback = EvalMembersCallback("CartPole-v1", eval_freq=1, n_eval_episodes=1)
    assert isinstance(callback.eval_env, Monitor) and callback.eval_env.spec.id == "CartPole-v1"
    model = EnsembleDistillDQN("MlpPolicy", "CartPole-v1", n_teachers=2, teacher_weighting="returns", learning_starts=0)
    model.learn(2, callback=callback)
    assert model._teacher_weights is not None and len(callback.evaluations) == model.num_timesteps
