import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.envs import FakeImageEnv

from sb3_distill import EnsembleDistillDQN
from tests.helpers import assert_optimizer_states_equal

MODEL_LIST = [EnsembleDistillDQN]


def tiny_model(model_class, policy="MlpPolicy", env="CartPole-v1", **kwargs):
    config = dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        target_update_interval=50,
        train_freq=2,
        n_teachers=3,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
        seed=0,
    )
    config.update(kwargs)
    return model_class(policy, env, **config)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_save_load(model_class, tmp_path):
    model = tiny_model(
        model_class, temperature=0.3, distill_loss="forward_kl", ensemble_reduction="mean_probs", student_learning_rate=3e-4
    )
    model.learn(200)
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip", env=gym.make("CartPole-v1"))

    # Hyperparameters
    for name in ["n_teachers", "temperature", "distill_loss", "ensemble_reduction", "student_learning_rate"]:
        assert getattr(loaded, name) == getattr(model, name)
    # Every member's weights: teachers, target networks, student (the state dict holds them all)
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert any(key.startswith("q_net_target.") for key in state) and any(key.startswith("student.") for key in state)
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    # The aliases point into the loaded policy
    assert loaded.student is loaded.policy.student and loaded.q_net is loaded.policy.q_net
    # Optimizers: teachers' and student's
    assert_optimizer_states_equal(model.policy.optimizer, loaded.policy.optimizer)
    assert_optimizer_states_equal(model.policy.student_optimizer, loaded.policy.student_optimizer)
    # Same predictions
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # set_parameters with exact_match=True accepts what get_parameters gives
    loaded.set_parameters(model.get_parameters(), exact_match=True)
    # Training continues
    loaded.learn(100, reset_num_timesteps=False)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_save_load_cnn(model_class, tmp_path):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    model = tiny_model(
        model_class,
        "CnnPolicy",
        env,
        learning_starts=10,
        batch_size=4,
        n_teachers=2,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=8)),
        student_policy_kwargs=dict(features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4)),
    )
    model.learn(30)
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip")
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, loaded.policy.state_dict()[key])
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_save_load_replay_buffer(model_class, tmp_path):
    model = tiny_model(model_class)
    model.learn(150)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    old_buffer = model.replay_buffer
    model.load_replay_buffer(tmp_path / "buffer.pkl")
    assert model.replay_buffer.pos == old_buffer.pos and model.replay_buffer.full == old_buffer.full
    for name in ["observations", "actions", "rewards", "dones", "next_observations"]:
        assert np.array_equal(getattr(model.replay_buffer, name), getattr(old_buffer, name))
    model.learn(50, reset_num_timesteps=False)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_load_with_overridden_hyperparameters_is_validated(model_class, tmp_path):
    model = tiny_model(model_class)
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip", temperature=2.0)
    assert loaded.temperature == 2.0
    # load() bypasses __init__: validation happens in _setup_model
    with pytest.raises(ValueError, match="temperature"):
        model_class.load(tmp_path / "model.zip", temperature=-1.0)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_export_student(model_class, tmp_path):
    model = tiny_model(model_class, student_learning_rate=5e-4)
    model.learn(200)
    exported = model.export_student()
    assert type(exported) is DQN
    assert exported.learning_rate == 5e-4
    for key, value in model.student.state_dict().items():
        assert th.equal(value, exported.q_net.state_dict()[key])
        assert th.equal(value, exported.q_net_target.state_dict()[key])
    exported.save(tmp_path / "student.zip")
    reloaded = DQN.load(tmp_path / "student.zip")
    assert sum(p.numel() for p in reloaded.policy.parameters()) == 2 * sum(p.numel() for p in model.student.parameters())
    obs = np.stack([model.observation_space.sample() * 0.5 for _ in range(100)]).astype(np.float32)
    student_actions = model.predict(obs, deterministic=True)[0]
    assert np.array_equal(student_actions, exported.predict(obs, deterministic=True)[0])
    assert np.array_equal(student_actions, reloaded.predict(obs, deterministic=True)[0])
    assert_optimizer_states_equal(model.policy.student_optimizer, reloaded.policy.optimizer)
    # The exported model can be fine-tuned as any DQN
    reloaded.set_env(gym.make("CartPole-v1"))
    reloaded.learn(150)


def test_export_cnn_student(tmp_path):
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    model = tiny_model(
        EnsembleDistillDQN,
        "CnnPolicy",
        env,
        n_teachers=2,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=8)),
        student_policy_kwargs=dict(features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4)),
    )
    exported = model.export_student()
    exported.save(tmp_path / "student.zip")
    reloaded = DQN.load(tmp_path / "student.zip")
    obs = np.stack([env.observation_space.sample() for _ in range(8)])
    assert np.array_equal(model.predict(obs, deterministic=True)[0], reloaded.predict(obs, deterministic=True)[0])
