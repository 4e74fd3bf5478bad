"""DistillPPO: every update rule on Discrete and Box actions, its rollout rewards, control, save/load, export, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

from sb3_distill import DistillPPO
from sb3_distill.common.losses import DISTILL_UPDATE_RULES
from tests.helpers import assert_optimizer_states_equal

_TEACHERS: dict[tuple[str, str], object] = {}


def tiny_teacher(algo=PPO, env_id: str = "CartPole-v1"):
    """An untrained teacher with non-uniform outputs (no orthogonal init with gain 0.01), cached per session."""
    key = (algo.__name__, env_id)
    if key not in _TEACHERS:
        if algo is PPO:
            kwargs: dict = dict(
                policy_kwargs=dict(net_arch=[16], ortho_init=False, log_std_init=-0.5), n_steps=32, batch_size=32
            )
        else:
            kwargs = dict(policy_kwargs=dict(net_arch=[16]))
        _TEACHERS[key] = algo("MlpPolicy", env_id, seed=1, **kwargs)
    return _TEACHERS[key]


def tiny_model(teacher=None, env="CartPole-v1", **kwargs):
    config = dict(n_steps=32, batch_size=32, n_epochs=1, policy_kwargs=dict(net_arch=[8]), seed=0)
    config.update(kwargs)
    return DistillPPO("MlpPolicy", env, teacher=tiny_teacher() if teacher is None else teacher, **config)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("update_rule", DISTILL_UPDATE_RULES)
def test_run(update_rule, env_id):
    model = tiny_model(tiny_teacher(PPO, env_id), env_id, update_rule=update_rule)
    model.learn(64)
    assert model.num_timesteps == 64
    logged = model.logger.name_to_value
    has_loss = update_rule in ("teacher_distill", "on_policy_distill", "n_distill", "expected_entropy_regularised")
    assert ("train/distill_loss" in logged) == has_loss
    assert logged["rollout/teacher_fraction"] == (1.0 if update_rule == "teacher_distill" else 0.0)


@pytest.mark.parametrize("teacher_class", [DQN, QRDQN])
@pytest.mark.parametrize("update_rule", ["n_distill", "teacher_v_reward"])
def test_q_value_teachers(teacher_class, update_rule):
    model = tiny_model(tiny_teacher(teacher_class), update_rule=update_rule)
    assert model.distill_temperature == 0.01
    model.learn(64)


def test_multi_env_and_determinism():
    models = []
    for _ in range(2):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
        models.append(tiny_model(update_rule="n_distill", env=env, n_steps=16).learn(64))
    assert models[0].n_envs == 2
    for (key, value), other in zip(models[0].policy.state_dict().items(), models[1].policy.state_dict().values(), strict=True):
        assert th.equal(value, other), key


def direct_rewards(model: DistillPPO, coef: float) -> np.ndarray:
    """r [env_reward] + coef * r^ of the last rollout, computed state by state with torch.distributions."""
    buffer = model.rollout_buffer
    n_steps, n_envs = buffer.rewards.shape
    rule, gamma, teacher = model.update_rule, model.gamma, model.policy.teacher
    expected = np.zeros((n_steps, n_envs))

    def policies(obs):
        obs_tensor = obs_as_tensor(obs[None], model.device)
        student = th.softmax(model.policy.get_distribution(obs_tensor).distribution.logits, -1)[0]
        teacher_probs = th.softmax(teacher.get_distribution(obs_tensor).distribution.logits, -1)[0]
        return student, teacher_probs, teacher.predict_values(obs_tensor).item()

    with th.no_grad():
        for t in range(n_steps):
            for e in range(n_envs):
                done = buffer.episode_starts[t + 1, e] if t + 1 < n_steps else model._last_episode_starts[e]
                next_obs = buffer.observations[t + 1, e] if t + 1 < n_steps else model._last_obs[e]
                _, teacher_probs, value = policies(buffer.observations[t, e])
                next_student, next_teacher, next_value = policies(next_obs)
                action = int(buffer.actions[t, e, 0])
                # CartPole's episodes here end by termination: no loss, no value at s_{t+1}
                alive = 0.0 if done else 1.0
                if rule == "entropy_regularised":
                    r_hat = np.log(teacher_probs[action].item())
                elif rule == "n_distill":
                    r_hat = alive * sum(-next_teacher[a].item() * np.log(next_student[a].item()) for a in range(2))
                    r_hat = -r_hat
                elif rule == "expected_entropy_regularised":
                    if t + 1 < n_steps and not done:
                        r_hat = np.log(next_teacher[int(buffer.actions[t + 1, e, 0])].item())
                    else:
                        r_hat = alive * sum(next_student[a].item() * np.log(next_teacher[a].item()) for a in range(2))
                elif rule == "teacher_v_reward":
                    r_hat = gamma * alive * next_value - value
                else:
                    r_hat = 0.0
                expected[t, e] = model._env_reward * 1.0 + coef * r_hat
    return expected


@pytest.mark.parametrize(
    "update_rule",
    ["on_policy_distill", "entropy_regularised", "n_distill", "expected_entropy_regularised", "teacher_v_reward"],
)
def test_rollout_rewards_match_direct_computation(update_rule):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = tiny_model(env=env, update_rule=update_rule, distill_coef=0.5, n_steps=48, batch_size=32)
    _, callback = model._setup_learn(96, None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert model.rollout_buffer.episode_starts[1:].sum() > 0  # some episodes ended inside the rollout
    np.testing.assert_allclose(model.rollout_buffer.rewards, direct_rewards(model, 0.5), rtol=1e-5, atol=1e-5)


def test_teacher_v_bootstrap_targets():
    model = tiny_model(update_rule="teacher_v_bootstrap", n_steps=48, batch_size=48)
    _, callback = model._setup_learn(48, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer, teacher = model.rollout_buffer, model.policy.teacher
    with th.no_grad():
        next_obs = np.concatenate([buffer.observations[1:], model._last_obs[None]])
        next_values = teacher.predict_values(obs_as_tensor(next_obs[:, 0], model.device)).numpy()[:, 0]
    done = np.concatenate([buffer.episode_starts[1:, 0], model._last_episode_starts])
    targets = 1.0 + model.gamma * (1 - done) * next_values
    np.testing.assert_allclose(buffer.returns[:, 0], targets, rtol=1e-5)
    np.testing.assert_allclose(buffer.advantages, buffer.returns - buffer.values, rtol=1e-6)


@pytest.mark.parametrize("control,fraction", [("teacher", 1.0), ("student", 0.0), ("uniform", 0.0), ("mixture", 0.3)])
def test_control(control, fraction):
    model = tiny_model(update_rule="on_policy_distill", control=control, teacher_prob=0.3, n_steps=256, batch_size=64)
    model.learn(256)
    assert model.logger.name_to_value["rollout/teacher_fraction"] == pytest.approx(fraction, abs=0.08)


def test_distill_coef_schedule_and_zero_policy_gradient():
    model = tiny_model(update_rule="on_policy_distill", distill_coef=lambda progress: 2.0 * progress)
    model.learn(64)
    logged = model.logger.name_to_value
    assert logged["train/distill_coef"] == pytest.approx(2.0 * model._current_progress_remaining)
    # r^ = 0 and no env reward: the policy-gradient term is off
    assert logged["train/policy_gradient_loss"] == 0.0


def test_value_gating():
    model = tiny_model(update_rule="on_policy_distill", env_reward=True, value_gating=True)
    model.learn(64)
    assert 0.0 <= model.logger.name_to_value["train/value_gate"] <= 1.0


@pytest.mark.parametrize("update_rule", ["on_policy_distill", "n_distill", "expected_entropy_regularised"])
def test_distillation_moves_student_to_teacher(update_rule):
    """A few hundred steps halve the KL to a peaked teacher on the states the student visits (a real signal)."""
    teacher = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[16], ortho_init=False), seed=2)
    with th.no_grad():
        teacher.policy.action_net.weight.mul_(20.0)
    model = tiny_model(teacher, update_rule=update_rule, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3)

    def kl():
        obs = obs_as_tensor(model.rollout_buffer.observations.reshape(-1, 4), model.device)
        with th.no_grad():
            teacher_distribution = model.policy.teacher.get_distribution(obs).distribution
            student = model.policy.get_distribution(obs).distribution
            return th.distributions.kl_divergence(teacher_distribution, student).mean().item()

    model.learn(64)
    before = kl()
    model.learn(640, reset_num_timesteps=False)
    assert kl() < before / 2


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_save_load_and_export(env_id, tmp_path):
    model = tiny_model(
        tiny_teacher(PPO, env_id),
        env_id,
        update_rule="on_policy_distill",
        env_reward=True,
        value_gating=True,
        distill_coef=0.3,
    )
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = DistillPPO.load(tmp_path / "model.zip", env=gym.make(env_id))
    for name in ["update_rule", "env_reward", "distill_coef", "value_gating", "control", "temperature", "distill_temperature"]:
        assert getattr(loaded, name) == getattr(model, name), name
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys() and any(key.startswith("teacher.") for key in state)
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    assert_optimizer_states_equal(model.policy.optimizer, loaded.policy.optimizer)
    loaded.set_parameters(model.get_parameters(), exact_match=True)
    # The teacher is the given one
    for key, value in tiny_teacher(PPO, env_id).policy.state_dict().items():
        assert th.equal(loaded_state[f"teacher.{key}"], value)
    loaded.learn(32, reset_num_timesteps=False)

    # export_student: a plain PPO that predicts what the student predicts, and reloads as PPO
    exported = model.export_student()
    assert type(exported) is PPO
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.array_equal(exported.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    exported.save(tmp_path / "student.zip")
    reloaded = PPO.load(tmp_path / "student.zip", env=gym.make(env_id))
    assert np.array_equal(reloaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    reloaded.learn(64)


def test_load_with_another_teacher(tmp_path):
    model = tiny_model(update_rule="n_distill")
    model.learn(32)
    model.save(tmp_path / "model.zip")
    other = PPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[32, 32]), seed=5)
    loaded = DistillPPO.load(tmp_path / "model.zip", env=gym.make("CartPole-v1"), teacher=other)
    state = loaded.policy.state_dict()
    for key, value in other.policy.state_dict().items():
        assert th.equal(state[f"teacher.{key}"], value)
    for key, value in model.policy.student_state_dict().items():
        assert th.equal(state[key], value)
    loaded.learn(32)


def test_policy_kwargs_not_modified():
    policy_kwargs = dict(net_arch=[8])
    model = tiny_model(policy_kwargs=policy_kwargs)
    assert policy_kwargs == dict(net_arch=[8]) and model.policy_kwargs == policy_kwargs


def test_teacher_from_zip(tmp_path):
    tiny_teacher().save(tmp_path / "teacher.zip")
    model = tiny_model(teacher=str(tmp_path / "teacher.zip"), update_rule="teacher_v_reward")
    for key, value in tiny_teacher().policy.state_dict().items():
        assert th.equal(model.policy.teacher.state_dict()[key], value)


BAD_INPUTS = [
    (dict(update_rule="distill"), ValueError, "`update_rule` must be one of"),
    (dict(update_rule="teacher_v_reward", env_reward=False), ValueError, "`env_reward=False`"),
    (dict(update_rule="teacher_v_bootstrap", env_reward=False), ValueError, "`env_reward=False`"),
    (dict(update_rule="teacher_distill", env_reward=True), ValueError, "no \\+R variant"),
    (dict(update_rule="teacher_distill", control="student"), ValueError, "driven by the teacher"),
    (dict(env_reward=1), TypeError, "`env_reward` must be a bool"),
    # The numbers (the shared specs; a schedule is checked where it is evaluated, see test_validation.py)
    (dict(distill_coef=-0.1), ValueError, "`distill_coef` must be a number >= 0 .*got -0.1"),
    (dict(distill_coef=float("nan")), ValueError, "`distill_coef` must be a number >= 0 .*not finite"),
    (dict(distill_coef=True), TypeError, "`distill_coef` must be a number"),
    (dict(teacher_prob=1.5), ValueError, "`teacher_prob` must be a number in \\[0, 1\\]"),
    (dict(control="random"), ValueError, "`control` must be one of"),
    (dict(value_gating=True, update_rule="teacher_v_reward"), ValueError, "has none"),
    (dict(value_gating=1), TypeError, "`value_gating` must be a bool"),
    (dict(temperature=0.0), ValueError, "`temperature` must be a number > 0"),
]


@pytest.mark.parametrize("kwargs,error,match", BAD_INPUTS)
def test_bad_input(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        tiny_model(**kwargs)
    # The same checks on load(**kwargs)
    tiny_model().save(tmp_path / "model.zip")
    with pytest.raises(error, match=match):
        DistillPPO.load(tmp_path / "model.zip", **kwargs)


def test_bad_teachers():
    with pytest.raises(ValueError, match="`teacher` is required"):
        DistillPPO("MlpPolicy", "CartPole-v1")
    with pytest.raises(TypeError, match="`teacher` must be an SB3 model"):
        tiny_model(teacher=3)
    with pytest.raises(ValueError, match="`use_sde=True` is not supported"):
        tiny_model(teacher=tiny_teacher(PPO, "Pendulum-v1"), env="Pendulum-v1", use_sde=True)
    with pytest.raises(ValueError, match="the student must see and act in the teacher's spaces"):
        tiny_model(teacher=tiny_teacher(PPO, "Pendulum-v1"), env="CartPole-v1")
    with pytest.raises(ValueError, match="categorical or diagonal Gaussian policy"):
        tiny_model(teacher=SAC("MlpPolicy", "Pendulum-v1", buffer_size=10), env="Pendulum-v1")


class Corridor(gym.Env):
    """States 0..4, start at 2, actions left/right; 0 and 4 end the episode (-1 and +1). The next state is known."""

    observation_space = gym.spaces.Discrete(5)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 2
        return self.state, {}

    def step(self, action):
        self.state += 1 if action == 1 else -1
        reward = 1.0 if self.state == 4 else -1.0 if self.state == 0 else 0.0
        return self.state, reward, reward != 0.0, False, {}


@pytest.mark.parametrize("update_rule", [rule for rule in DISTILL_UPDATE_RULES if rule != "teacher_distill"])
def test_rollout_rewards_with_terminations_and_truncations(update_rule):
    """
    Every reward of a rollout on a corridor with a time limit of 3 steps (terminations and truncations both
    happen), against a direct computation from the (known) next states: r^ is 0 after a termination and uses
    the terminal observation after a truncation, where SB3's bootstrap gamma V_theta(s_T) is added.
    """

    def make_env():
        return gym.wrappers.TimeLimit(Corridor(), max_episode_steps=3)

    teacher = PPO("MlpPolicy", make_env(), policy_kwargs=dict(net_arch=[], ortho_init=False), seed=3)
    env = make_vec_env(make_env, n_envs=2, seed=0)
    env_reward = None if update_rule in ("teacher_v_reward", "teacher_v_bootstrap") else True
    model = DistillPPO(
        "MlpPolicy", env, teacher=teacher, update_rule=update_rule, env_reward=env_reward, distill_coef=0.7,
        n_steps=40, batch_size=40, gamma=0.9, policy_kwargs=dict(net_arch=[]), seed=0,
    )  # fmt: skip
    _, callback = model._setup_learn(80, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    buffer = model.rollout_buffer
    obs, actions = buffer.observations[:, :, 0].astype(int), buffer.actions[:, :, 0].astype(int)
    next_states = obs + np.where(actions == 1, 1, -1)
    dones = np.concatenate([buffer.episode_starts[1:], model._last_episode_starts[None]]).astype(bool)
    terminated = (next_states == 0) | (next_states == 4)
    truncated = dones & ~terminated
    assert terminated.any() and truncated.any()

    def dists(states):
        states_t = th.as_tensor(states.reshape(-1, 1), dtype=th.float32)
        student = model.policy.get_distribution(states_t).distribution
        return student, teacher.policy.get_distribution(states_t).distribution, teacher.policy, states_t

    with th.no_grad():
        student_next, teacher_next, teacher_policy, next_t = dists(next_states)
        _, teacher_now, _, now_t = dists(obs)
        flat_actions = th.as_tensor(actions.reshape(-1))
        next_actions = th.as_tensor(np.concatenate([actions[1:], actions[-1:]]).reshape(-1))
        drawn = np.zeros_like(dones)
        drawn[:-1] = ~dones[:-1]
        cross = th.distributions.kl_divergence(teacher_next, student_next) + teacher_next.entropy()
        reverse = th.distributions.kl_divergence(student_next, teacher_next) + student_next.entropy()
        values_next = teacher_policy.predict_values(next_t).flatten()
        values_now = teacher_policy.predict_values(now_t).flatten()
        bootstrap = 0.9 * model.policy.predict_values(next_t).flatten().numpy() * truncated.reshape(-1)
    alive = (~terminated).reshape(-1)
    r_hat = {
        "on_policy_distill": np.zeros(alive.shape),
        "entropy_regularised": teacher_now.log_prob(flat_actions).numpy(),
        "n_distill": -cross.numpy() * alive,
        "expected_entropy_regularised": np.where(
            drawn.reshape(-1), teacher_next.log_prob(next_actions).numpy(), -reverse.numpy()
        )
        * alive,
        "teacher_v_reward": (0.9 * values_next.numpy() * alive - values_now.numpy()),
    }
    env_rewards = np.where(next_states == 4, 1.0, np.where(next_states == 0, -1.0, 0.0)).reshape(-1)
    if update_rule == "teacher_v_bootstrap":
        targets = env_rewards + 0.9 * values_next.numpy() * alive
        np.testing.assert_allclose(buffer.returns.reshape(-1), targets, rtol=1e-5, atol=1e-6)
        return
    expected = env_rewards + bootstrap + 0.7 * r_hat[update_rule]
    np.testing.assert_allclose(buffer.rewards.reshape(-1), expected, rtol=1e-5, atol=1e-6)
