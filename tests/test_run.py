import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_distill import EnsembleDistillDQN
from sb3_distill.common.callbacks import EvalMembersCallback, student_to_teachers_ratios
from sb3_distill.common.torch_layers import CompactNatureCNN
from sb3_distill.ensemble_distill_dqn import EnsembleDistillDQNPolicy

MODEL_LIST = [EnsembleDistillDQN]
TINY = dict(policy_kwargs=dict(net_arch=[16]), student_policy_kwargs=dict(net_arch=[8]))


def tiny_model(model_class, env="CartPole-v1", **kwargs):
    config = dict(learning_starts=50, batch_size=16, buffer_size=500, target_update_interval=50, train_freq=2, **TINY)
    config.update(kwargs)
    return model_class("MlpPolicy", env, **config)


@pytest.mark.parametrize("model_class", MODEL_LIST)
@pytest.mark.parametrize("n_teachers", [1, 3])
@pytest.mark.parametrize("distill_loss", ["reverse_kl", "forward_kl", "nll", "mse"])
@pytest.mark.parametrize("ensemble_reduction", ["mean_loss", "mean_probs"])
def test_run(model_class, n_teachers, distill_loss, ensemble_reduction):
    model = tiny_model(model_class, n_teachers=n_teachers, distill_loss=distill_loss, ensemble_reduction=ensemble_reduction)
    model.learn(200)
    assert model._n_updates > 0
    assert model.q_net.n_members == n_teachers


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_training_changes_every_member(model_class):
    model = tiny_model(model_class, seed=1)
    teacher_before = [p.detach().clone() for p in model.q_net.parameters()]
    student_before = [p.detach().clone() for p in model.student.parameters()]
    target_before = [p.detach().clone() for p in model.q_net_target.parameters()]
    model.learn(120)
    for before, after in zip(teacher_before, model.q_net.parameters(), strict=True):
        # every teacher moved
        assert (before - after.detach()).flatten(1).abs().sum(dim=1).min() > 0
    assert any(not th.equal(before, after) for before, after in zip(student_before, model.student.parameters(), strict=True))
    # target networks were copied from the teachers (target_update_interval=50)
    assert any(
        not th.equal(before, after) for before, after in zip(target_before, model.q_net_target.parameters(), strict=True)
    )
    model.learn(1)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_multi_env(model_class):
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    model = tiny_model(model_class, env=env, n_teachers=3)
    model.learn(300)
    assert model.num_timesteps >= 300


@pytest.mark.parametrize("n_envs", [1, 2, 4])
def test_teachers_act_in_turn(n_envs):
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * n_envs)
    model = tiny_model(
        EnsembleDistillDQN, env=env, n_teachers=3, learning_starts=0, exploration_initial_eps=0.0, exploration_final_eps=0.0
    )
    model._setup_learn(total_timesteps=100)
    obs = model._last_obs
    for step in range(4):
        model.num_timesteps = step * n_envs
        expected_teachers = (step + np.arange(n_envs)) % 3
        assert np.array_equal(model.acting_teachers(), expected_teachers)
        actions, buffer_actions = model._sample_action(learning_starts=0, n_envs=n_envs)
        with th.no_grad():
            q_values = model.q_net(th.as_tensor(obs))
        greedy = [int(q_values[j, i].argmax()) for i, j in enumerate(expected_teachers)]
        assert actions.tolist() == greedy
        assert np.array_equal(actions, buffer_actions)


def test_exploration_is_per_env():
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 8)
    model = tiny_model(EnsembleDistillDQN, env=env, learning_starts=0)
    model._setup_learn(total_timesteps=100)
    model.exploration_rate = 1.0
    np.random.seed(0)
    model.action_space.seed(0)
    actions = np.stack([model._sample_action(learning_starts=0, n_envs=8)[0] for _ in range(20)])
    # with epsilon = 1 the actions are uniform, not those of the greedy teachers
    assert 0.3 < actions.mean() < 0.7


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_cnn_policy(model_class):
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    model = model_class(
        "CnnPolicy",
        env,
        learning_starts=20,
        batch_size=8,
        buffer_size=200,
        n_teachers=2,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)),
        student_policy_kwargs=dict(features_extractor_kwargs=dict(filters=(4, 4, 4), features_dim=8)),
    )
    assert isinstance(model.student.features_extractor, CompactNatureCNN)
    assert model.compression_ratio < 0.2
    model.learn(60)
    obs = env.reset()[0]
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


def test_default_cnn_student_is_student1():
    env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=4, discrete=True)
    model = EnsembleDistillDQN("CnnPolicy", env, buffer_size=10)
    assert model.student.features_extractor.filters == (16, 16, 16)
    assert model.student.features_extractor.features_dim == 64
    assert 0.036 < model.compression_ratio < 0.037


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_deterministic_with_seed(model_class):
    params = []
    for _ in range(2):
        model = tiny_model(model_class, seed=3)
        model.learn(150)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    for first, second in zip(*params, strict=True):
        assert th.equal(first, second)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_predict_shapes(model_class):
    model = tiny_model(model_class)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert action.shape == () and state is None
    actions, _ = model.predict(np.stack([obs] * 5), deterministic=True)
    assert actions.shape == (5,)
    # predict uses the student
    with th.no_grad():
        expected = model.student(th.as_tensor(np.stack([obs] * 5))).argmax(dim=1).numpy()
    assert np.array_equal(actions, expected)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_student_learning_rate(model_class):
    model = tiny_model(model_class, learning_rate=1e-3, student_learning_rate=lambda progress: 5e-3 * (1 + progress))
    model.learn(100)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    # the schedule went from 1e-2 down to 5e-3 at the end of training
    assert 5e-3 <= model.policy.student_optimizer.param_groups[0]["lr"] < 6e-3


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_logger_and_eval_callback(model_class, tmp_path):
    model = tiny_model(model_class, n_teachers=2)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = EvalMembersCallback(Monitor(gym.make("CartPole-v1")), eval_freq=100, n_eval_episodes=2)
    model.learn(200, callback=callback, log_interval=1)
    assert set(callback.last_results) == {"teacher_0", "teacher_1", "student"}
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in [
        "eval/teacher_0",
        "eval/teacher_1",
        "eval/student",
        "eval/student_to_teachers",
        "train/distill_loss",
        "train/loss",
        "train/loss_teacher_1",
        "train/student_learning_rate",
    ]:
        assert key in header


def test_evaluate_members():
    model = tiny_model(EnsembleDistillDQN, n_teachers=2)
    results = model.evaluate_members(Monitor(gym.make("CartPole-v1")), n_eval_episodes=3)
    assert set(results) == {"teacher_0", "teacher_1", "student"}
    assert all(mean >= 8 and std >= 0 for mean, std in results.values())
    with pytest.raises(ValueError, match="n_eval_episodes"):
        model.evaluate_members(gym.make("CartPole-v1"), n_eval_episodes=0)


def test_compression_ratio():
    model = tiny_model(EnsembleDistillDQN, policy_kwargs=dict(net_arch=[64, 64]), student_policy_kwargs=dict(net_arch=[8]))
    # teacher 4*64+64 + 64*64+64 + 64*2+2 = 4610, student 4*8+8 + 8*2+2 = 58
    assert model.compression_ratio == pytest.approx(58 / 4610)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_teachers=0), ValueError, "n_teachers"),
        (dict(n_teachers=2.5), ValueError, "n_teachers"),
        (dict(temperature=0), ValueError, "temperature"),
        (dict(temperature=-0.1), ValueError, "temperature"),
        (dict(distill_loss="kl"), ValueError, "distill_loss"),
        (dict(ensemble_reduction="vote"), ValueError, "ensemble_reduction"),
        (dict(student_policy_kwargs=dict(n_layers=2)), ValueError, "student_policy_kwargs"),
        (dict(student_policy_kwargs=[16]), TypeError, "student_policy_kwargs"),
        (dict(torch_compile="yes"), ValueError, "torch_compile"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_model(EnsembleDistillDQN, **kwargs)


def test_continuous_actions_rejected():
    with pytest.raises(ValueError, match="Discrete"):
        EnsembleDistillDQN("MlpPolicy", "Pendulum-v1")


class LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space):
        super().__init__(observation_space, features_dim=8)
        self.linear = th.nn.Linear(observation_space.shape[0], 8)

    def forward(self, observations):
        return self.linear(observations)


def test_unstackable_teacher_extractor_rejected():
    with pytest.raises(ValueError, match="features_extractor_class"):
        EnsembleDistillDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(features_extractor_class=LinearExtractor))
    # the student, which is not stacked, may use any extractor
    model = tiny_model(EnsembleDistillDQN, student_policy_kwargs=dict(features_extractor_class=LinearExtractor, net_arch=[]))
    model.learn(60)


def test_torch_compile_survives_save_load(tmp_path):
    # The compiled step is not saved; the loaded model compiles again at its first step (its updates:
    # tests/test_gradient_step.py)
    model = tiny_model(EnsembleDistillDQN, torch_compile=True, seed=0)
    model.save(tmp_path / "model.zip")
    loaded = EnsembleDistillDQN.load(tmp_path / "model.zip")
    assert loaded.torch_compile is True and loaded._compile_active and loaded._compiled_gradient_step is None
    assert EnsembleDistillDQN.load(tmp_path / "model.zip", torch_compile="auto").torch_compile == "auto"
    with pytest.raises(ValueError, match=r"`torch_compile` must be one of \(True, False, 'auto'\), got 'yes'"):
        EnsembleDistillDQN.load(tmp_path / "model.zip", torch_compile="yes")


def test_cnn_student_with_other_extractor():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    # The default student's CompactNatureCNN kwargs must not leak into another extractor class
    model = EnsembleDistillDQN(
        "CnnPolicy", env, buffer_size=10, student_policy_kwargs=dict(features_extractor_class=NatureCNN)
    )
    assert type(model.student.features_extractor) is NatureCNN
    assert model.student.net_arch == []
    model = EnsembleDistillDQN(
        "CnnPolicy",
        env,
        buffer_size=10,
        student_policy_kwargs=dict(features_extractor_class=NatureCNN, features_extractor_kwargs=dict(features_dim=32)),
    )
    assert model.student.features_dim == 32


def test_policy_save_load(tmp_path):
    model = tiny_model(EnsembleDistillDQN, n_teachers=2)
    model.learn(100)
    model.policy.save(tmp_path / "policy.pth")
    policy = EnsembleDistillDQNPolicy.load(tmp_path / "policy.pth")
    assert policy.n_teachers == 2 and policy.q_net.n_members == 2
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.array_equal(model.policy.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0])


def test_fused_adam_by_default():
    model = tiny_model(EnsembleDistillDQN)
    assert model.policy.optimizer.defaults["fused"] and model.policy.student_optimizer.defaults["fused"]
    # A choice of implementation by the user is kept
    model = tiny_model(
        EnsembleDistillDQN,
        policy_kwargs=dict(net_arch=[16], optimizer_kwargs=dict(foreach=True)),
        student_policy_kwargs=dict(net_arch=[8], optimizer_class=th.optim.RMSprop),
    )
    assert not model.policy.optimizer.defaults["fused"] and model.policy.optimizer.defaults["foreach"]
    assert isinstance(model.policy.student_optimizer, th.optim.RMSprop)
    model.learn(60)


def test_eval_members_callback_errors():
    with pytest.raises(ValueError, match="eval_freq"):
        EvalMembersCallback(gym.make("CartPole-v1"), eval_freq=0)
    with pytest.raises(ValueError, match="n_eval_episodes"):
        EvalMembersCallback(gym.make("CartPole-v1"), n_eval_episodes=0)
    # A model without members cannot be evaluated member by member
    model = DQN("MlpPolicy", "CartPole-v1", learning_starts=10)
    with pytest.raises(TypeError, match="evaluate_members"):
        model.learn(20, callback=EvalMembersCallback(gym.make("CartPole-v1"), eval_freq=5))


def test_student_to_teachers_ratio():
    results = {"teacher_0": (100.0, 1.0), "teacher_1": (300.0, 1.0), "student": (150.0, 0.0)}
    assert student_to_teachers_ratios(results) == {"student": pytest.approx(0.75)}
    results = {"teacher": (200.0, 1.0), "student_0": (150.0, 0.0), "student_1": (250.0, 0.0)}
    assert student_to_teachers_ratios(results) == {"student_0": pytest.approx(0.75), "student_1": pytest.approx(1.25)}
    assert np.isnan(student_to_teachers_ratios({"teacher_0": (0.0, 0.0), "student": (1.0, 0.0)})["student"])


def test_set_training_mode_switches_every_network_but_the_targets():
    model = tiny_model(EnsembleDistillDQN)
    for mode in (False, True):
        model.policy.set_training_mode(mode)
        assert model.policy.training is mode
        assert all(m.training is mode for m in [*model.q_net.modules(), *model.student.modules()])
        assert not any(m.training for m in model.q_net_target.modules())
