"""Paper fidelity: Vanilla-SAC (extra) with one member, warm-up returns, softmax and uniform control policies."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_distill import PIEKDSAC, PolicyDistillation
from tests.models import BoxActionEnv, make_model, untrained_teacher


def test_one_member_extra_updates():
    # Hong et al.'s Vanilla-SAC (extra) baseline: K=1, the extra SAC updates of every sharing phase still happen
    model = make_model(
        PIEKDSAC,
        env=BoxActionEnv((2,)),
        ensemble_size=1,
        knowledge_sharing="extra_updates",
        distill_epochs=2,
        distill_gradient_steps=3,
        distill_interval=100,
    )
    model.learn(200)
    assert model.n_sharing_phases >= 1
    # One SAC update per step after `learning_starts` (50), and 2 x 3 extra ones per phase
    assert model._n_updates == 150 + 6 * model.n_sharing_phases


def test_warmup_returns_not_credited():
    # 20-step episodes, `learning_starts=50`: the episodes ending at steps 20 and 40 are random, the one ending at
    # 60 began in the warm-up; only the one ending at 80 (steps 60-79 after the reset) is a member's
    model = make_model(PIEKDSAC, env=BoxActionEnv((2,)), knowledge_sharing="none", learning_starts=50)
    model.learn(80)
    credited = [list(returns) for returns in model.recent_returns]
    assert sum(len(returns) for returns in credited) == 1
    # The member that played it is credited with its return: 20 steps of -mean((a - 0.5)^2), each in [-2.25, 0]
    assert -45.0 <= next(r for returns in credited for r in returns) <= 0.0
    # Warm-up already over when learning continues: every episode counts
    model.learn(40, reset_num_timesteps=False)
    assert sum(len(returns) for returns in model.recent_returns) == 3


def softmax_model(**kwargs) -> PolicyDistillation:
    model = make_model(PolicyDistillation, env="CartPole-v1", temperature=0.5, **kwargs)
    model._setup_learn(total_timesteps=10)
    return model


def test_q_value_student_samples_from_softmax():
    model = softmax_model()
    obs = model.observation_space.sample()
    n_samples = 4000
    model._last_obs = np.repeat(obs[None], n_samples, axis=0)
    with th.no_grad():
        q_values = model.policy.student.q_net(th.as_tensor(obs[None]))[0]
    # Make the two actions' probabilities clearly different but both likely
    with th.no_grad():
        last_layer = model.policy.student.q_net.q_net[-1]
        last_layer.bias.add_(th.tensor([0.4, 0.0]) - q_values)
        q_values = model.policy.student.q_net(th.as_tensor(obs[None]))[0]
    expected = th.softmax(q_values / 0.5, dim=0).numpy()
    actions, buffer_actions = model._sample_action(learning_starts=0, n_envs=n_samples)
    assert np.array_equal(actions, buffer_actions)
    frequencies = np.bincount(actions, minlength=2) / n_samples
    # Binomial standard deviation about 0.008 here
    np.testing.assert_allclose(frequencies, expected, atol=0.04)
    assert 0.05 < frequencies[1] < 0.95
    # Greedy with `deterministic_control=True`
    model.deterministic_control = True
    actions, _ = model._sample_action(learning_starts=0, n_envs=n_samples)
    assert np.all(actions == int(q_values.argmax()))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_uniform_control(env_id):
    env = gym.make(env_id)
    model = make_model(PolicyDistillation, env=env, control="uniform", teacher=untrained_teacher(env))
    model.learn(100)
    assert model._n_updates > 0 and model._teacher_steps == 0
    model._last_obs = np.stack([env.observation_space.sample() for _ in range(3000)])
    actions, _ = model._sample_action(learning_starts=0, n_envs=3000)
    if env_id == "CartPole-v1":
        # Uniform over the two actions, whatever the teacher and student prefer
        assert abs(np.mean(actions) - 0.5) < 0.05
    else:
        # Uniform over [-2, 2]: mean 0, variance 16 / 12
        assert actions.shape == (3000, 1)
        assert abs(actions.mean()) < 0.1 and abs(actions.var() - 16 / 12) < 0.1


def test_teacher_driven_q_values_stay_greedy():
    model = softmax_model(control="teacher")
    obs = np.stack([model.observation_space.sample() for _ in range(50)])
    model._last_obs = obs
    actions, _ = model._sample_action(learning_starts=0, n_envs=50)
    teacher_actions, _ = model.policy.teacher.predict(obs, deterministic=True)
    assert np.array_equal(actions, teacher_actions)


def test_load_with_another_teacher_uses_its_weights(tmp_path):
    model = make_model(PolicyDistillation, env="CartPole-v1", seed=0)
    model.save(tmp_path / "model.zip")
    other = untrained_teacher("CartPole-v1", seed=1)
    for teacher in (other, tmp_path / "other.zip"):
        other.save(tmp_path / "other.zip")
        loaded = PolicyDistillation.load(tmp_path / "model.zip", teacher=teacher)
        for key, value in other.policy.state_dict().items():
            assert th.equal(loaded.policy.teacher.state_dict()[key], value)
    # Without a teacher, the saved one
    loaded = PolicyDistillation.load(tmp_path / "model.zip")
    for key, value in model.policy.teacher.state_dict().items():
        assert th.equal(loaded.policy.teacher.state_dict()[key], value)
    assert any(not th.equal(value, other.policy.state_dict()[key]) for key, value in model.policy.teacher.state_dict().items())
