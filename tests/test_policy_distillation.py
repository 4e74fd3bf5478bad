"""PolicyDistillation: every supported teacher kind, control policies, losses, export, save/load, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import QRDQN, RecurrentPPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from sb3_distill import EnsembleDistillDQN, PolicyDistillation
from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.common.teachers import Teacher
from sb3_distill.common.torch_layers import CompactNatureCNN
from sb3_distill.policy_distillation import load_teacher
from tests.helpers import assert_optimizer_states_equal

# (teacher algorithm, env, the exported student's class)
TEACHERS = [
    (DQN, "CartPole-v1", DQN),
    (QRDQN, "CartPole-v1", DQN),
    (PPO, "CartPole-v1", PPO),
    (A2C, "CartPole-v1", A2C),
    (PPO, "Pendulum-v1", PPO),
    (A2C, "Pendulum-v1", A2C),
    (SAC, "Pendulum-v1", SAC),
    (TD3, "Pendulum-v1", TD3),
    (DDPG, "Pendulum-v1", DDPG),
]
TEACHER_IDS = [f"{algo.__name__}-{env.split('-')[0]}" for algo, env, _ in TEACHERS]

_TEACHER_CACHE: dict[tuple[str, str], object] = {}


def tiny_teacher(algo, env: str):
    """A teacher trained for 100 steps (enough to have non-trivial weights), cached per test session."""
    key = (algo.__name__, env)
    if key not in _TEACHER_CACHE:
        kwargs: dict = dict(policy_kwargs=dict(net_arch=[64, 64]), seed=0)
        if algo in (PPO, A2C):
            kwargs.update(n_steps=32)
            if algo is PPO:
                kwargs.update(batch_size=32, n_epochs=1)
        else:
            kwargs.update(learning_starts=20, buffer_size=1000, batch_size=16)
        _TEACHER_CACHE[key] = algo("MlpPolicy", env, **kwargs).learn(100)
    return _TEACHER_CACHE[key]


def tiny_distillation(teacher, env, **kwargs):
    config = dict(learning_starts=32, batch_size=16, buffer_size=1000, student_policy_kwargs=dict(net_arch=[8]), seed=0)
    config.update(kwargs)
    return PolicyDistillation("MlpPolicy", env, teacher=teacher, **config)


@pytest.mark.parametrize("algo,env_id,student_class", TEACHERS, ids=TEACHER_IDS)
def test_every_teacher_kind_distills_and_exports(algo, env_id, student_class, tmp_path):
    teacher = tiny_teacher(algo, env_id)
    teacher_params = {k: v.clone() for k, v in teacher.policy.state_dict().items()}
    model = tiny_distillation(teacher, env_id, control="mixture")
    student_before = [p.clone() for p in model.policy.student_trainable_parameters()]
    model.learn(150)
    assert model._n_updates > 0
    # The student learned, the teacher did not move (neither the original model nor the copy)
    assert any(not th.equal(a, b) for a, b in zip(student_before, model.policy.student_trainable_parameters(), strict=True))
    for key, value in model.policy.teacher.state_dict().items():
        assert th.equal(value, teacher_params[key]), key
    for key, value in teacher.policy.state_dict().items():
        assert th.equal(value, teacher_params[key]), key
    assert 0 < model.compression_ratio < 0.5

    # The exported student is a plain SB3 model that reloads with its own class and acts like the student
    exported = model.export_student()
    assert type(exported) is student_class
    exported.save(tmp_path / "student.zip")
    reloaded = student_class.load(tmp_path / "student.zip")
    obs = np.stack([model.observation_space.sample() for _ in range(20)])
    actions = model.predict(obs, deterministic=True)[0]
    assert np.allclose(exported.predict(obs, deterministic=True)[0], actions)
    assert np.allclose(reloaded.predict(obs, deterministic=True)[0], actions)
    # Its target networks are copies of the trained networks
    for online, target in (("q_net", "q_net_target"), ("actor", "actor_target")):
        if hasattr(reloaded.policy, target):
            for p, q in zip(
                getattr(reloaded.policy, online).parameters(), getattr(reloaded.policy, target).parameters(), strict=True
            ):
                assert th.equal(p, q)


@pytest.mark.parametrize("algo,env_id,student_class", TEACHERS, ids=TEACHER_IDS)
def test_teacher_from_path(algo, env_id, student_class, tmp_path):
    teacher = tiny_teacher(algo, env_id)
    teacher.save(tmp_path / "teacher.zip")
    assert type(load_teacher(tmp_path / "teacher.zip", device="cpu").model) is algo
    model = tiny_distillation(str(tmp_path / "teacher.zip"), env_id)
    assert model.teacher_algorithm is algo
    for key, value in teacher.policy.state_dict().items():
        assert th.equal(model.policy.teacher.state_dict()[key], value)


def test_loss_matches_direct_computation_discrete():
    teacher = tiny_teacher(DQN, "CartPole-v1")
    model = tiny_distillation(teacher, "CartPole-v1", temperature=0.5)
    model.learn(64)
    obs = model.replay_buffer.sample(32).observations
    loss, value_loss = model._losses(obs, th.zeros(32, 1))
    assert value_loss is None
    # forward KL(teacher || student) of the softmaxes at temperature 0.5, by torch.distributions
    teacher_dist = Categorical(logits=teacher.q_net(obs).detach() / 0.5)
    student_dist = Categorical(logits=model.policy.student.q_net(obs) / 0.5)
    expected = kl_divergence(teacher_dist, student_dist).mean()
    assert th.allclose(loss, expected, atol=1e-6)
    # Only the student receives gradients
    loss.backward()
    assert all(p.grad is None for p in model.policy.teacher.parameters())
    assert all(p.grad is not None for p in model.policy.student.q_net.parameters())


def test_loss_matches_direct_computation_sac():
    teacher = tiny_teacher(SAC, "Pendulum-v1")
    model = tiny_distillation(teacher, "Pendulum-v1", loss="reverse_kl")
    model.learn(64)
    obs = model.replay_buffer.sample(32).observations
    loss, _ = model._losses(obs, th.zeros(32, 1))
    teacher_mean, teacher_log_std, _ = teacher.actor.get_action_dist_params(obs)
    student_mean, student_log_std, _ = model.policy.student.actor.get_action_dist_params(obs)
    teacher_dist = Independent(Normal(teacher_mean.detach(), teacher_log_std.detach().exp()), 1)
    student_dist = Independent(Normal(student_mean, student_log_std.exp()), 1)
    assert th.allclose(loss, kl_divergence(student_dist, teacher_dist).mean(), atol=1e-5)


@pytest.mark.parametrize("algo,env_id", [(PPO, "CartPole-v1"), (SAC, "Pendulum-v1"), (TD3, "Pendulum-v1")])
def test_value_distillation(algo, env_id):
    teacher = tiny_teacher(algo, env_id)
    # value_coef=0: the value head (PPO) / the critic (SAC, TD3) is not trained
    model = tiny_distillation(teacher, env_id, value_coef=0.0)
    value_module = model.policy.student.value_net if algo is PPO else model.policy.student.critic
    before = [p.clone() for p in value_module.parameters()]
    model.learn(100)
    assert all(th.equal(a, b) for a, b in zip(before, value_module.parameters(), strict=True))
    # value_coef > 0: it is, and its loss goes down
    model = tiny_distillation(teacher, env_id, value_coef=1.0, learning_rate=3e-3)
    model.learn(64)
    data = model.replay_buffer.sample(64)
    first = model._losses(data.observations, data.actions)[1].item()
    model.learn(300, reset_num_timesteps=False)
    assert model._losses(data.observations, data.actions)[1].item() < 0.5 * first


@pytest.mark.parametrize("control,expected_fraction", [("teacher", 1.0), ("student", 0.0), ("mixture", 0.3)])
def test_control_policy(control, expected_fraction, tmp_path):
    model = tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1", control=control, teacher_prob=0.3)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(600, log_interval=1)
    fraction = model._teacher_steps / model._control_steps
    assert fraction == pytest.approx(expected_fraction, abs=0.06)
    assert "rollout/teacher_fraction" in (tmp_path / "progress.csv").read_text().splitlines()[0]


def test_control_actions_are_the_acting_members():
    teacher = tiny_teacher(DQN, "CartPole-v1")
    for control, member in (("teacher", "teacher"), ("student", "student")):
        model = tiny_distillation(teacher, "CartPole-v1", control=control)
        model._setup_learn(10)
        actions, buffer_actions = model._sample_action(0, n_envs=1)
        expected, _ = getattr(model.policy, member).predict(model._last_obs, deterministic=True)
        assert np.array_equal(actions, expected) and np.array_equal(buffer_actions, expected)


def test_teacher_prob_schedule():
    # beta decays from 1 (teacher only) to 0 (student only), DAgger-style
    model = tiny_distillation(
        tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1", control="mixture", teacher_prob=LinearSchedule(1.0, 0.0, 1.0)
    )
    model.learn(1000)
    assert model._teacher_steps / model._control_steps == pytest.approx(0.5, abs=0.08)
    model._current_progress_remaining = 1.0
    assert model._control_mask(100).all()
    model._current_progress_remaining = 0.0
    assert not model._control_mask(100).any()


def test_multi_env_and_predict_shapes():
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("Pendulum-v1", n_envs=3, seed=0)
    model = tiny_distillation(tiny_teacher(SAC, "Pendulum-v1"), env, control="mixture")
    model.learn(150)
    assert model.num_timesteps >= 150
    obs = env.reset()
    actions, _ = model.predict(obs)
    assert actions.shape == (3, 1)
    single, _ = model.predict(obs[0], deterministic=True)
    assert single.shape == (1,)
    assert np.all(np.abs(actions) <= 2.0)


def test_deterministic_with_seed():
    teacher = tiny_teacher(PPO, "CartPole-v1")
    params = []
    for _ in range(2):
        model = tiny_distillation(teacher, "CartPole-v1", control="student", seed=3)
        model.learn(200)
        params.append(th.cat([p.flatten() for p in model.policy.student.parameters()]))
    assert th.equal(params[0], params[1])


def test_cnn_teacher_gets_compact_student():
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=True)
    teacher = DQN("CnnPolicy", env, learning_starts=10, buffer_size=200, batch_size=4, seed=0).learn(20)
    model = PolicyDistillation("CnnPolicy", env, teacher=teacher, learning_starts=10, batch_size=4, buffer_size=200, seed=0)
    # The default student is the papers' student1 {16, 16, 16, 64}
    assert isinstance(model.policy.student.q_net.features_extractor, CompactNatureCNN)
    assert model.policy.student.q_net.features_extractor.filters == (16, 16, 16)
    model.learn(30)
    assert model.compression_ratio < 0.5
    obs = np.stack([model.observation_space.sample() for _ in range(3)])
    assert np.array_equal(
        model.export_student().predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_eval_callback_and_evaluate_members(tmp_path):
    model = tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1")
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = EvalMembersCallback(Monitor(gym.make("CartPole-v1")), eval_freq=100, n_eval_episodes=2)
    model.learn(200, callback=callback, log_interval=1)
    assert set(callback.last_results) == {"teacher", "student"}
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ["eval/teacher", "eval/student", "eval/student_to_teachers", "train/distill_loss"]:
        assert key in header, key
    with pytest.raises(ValueError, match="n_eval_episodes"):
        model.evaluate_members(Monitor(gym.make("CartPole-v1")), n_eval_episodes=0)


@pytest.mark.parametrize("algo,env_id", [(DQN, "CartPole-v1"), (PPO, "CartPole-v1"), (SAC, "Pendulum-v1")])
def test_save_load(algo, env_id, tmp_path):
    model = tiny_distillation(tiny_teacher(algo, env_id), env_id, control="mixture", teacher_prob=0.7, value_coef=0.0)
    model.learn(100)
    model.save(tmp_path / "distill.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    # No teacher needed at load time: its weights are in the file
    loaded = PolicyDistillation.load(tmp_path / "distill.zip", env=gym.make(env_id))
    assert loaded.teacher is None and loaded.teacher_algorithm is algo
    for name in ["control", "teacher_prob", "distill_loss", "distill_temperature", "student_algorithm"]:
        assert getattr(loaded, name) == getattr(model, name)
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert any(key.startswith("teacher.") for key in state) and any(key.startswith("student.") for key in state)
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    assert_optimizer_states_equal(model.policy.optimizer, loaded.policy.optimizer)
    loaded.set_parameters(model.get_parameters(), exact_match=True)
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    # The replay buffer round-trips, and training goes on
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.replay_buffer.pos == model.replay_buffer.pos
    assert np.array_equal(loaded.replay_buffer.observations, model.replay_buffer.observations)
    loaded.learn(50, reset_num_timesteps=False)
    assert loaded.export_student() is not None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(loss="kl"), "`loss` must be one of"),
        (dict(temperature=0.0), "`temperature` must be a number > 0"),
        (dict(temperature=-1.0), "`temperature` must be a number > 0"),
        (dict(control="expert"), "`control` must be one of"),
        (dict(control="mixture", teacher_prob=1.5), "`teacher_prob` must be a number in"),
        (dict(teacher_prob=-0.1), "`teacher_prob` must be a number in"),
        (dict(teacher_prob=LinearSchedule(2.0, 0.0, 1.0)), "`teacher_prob` must be a float in"),
        (dict(value_coef=-1.0), "`value_coef` must be a number >= 0"),
        (dict(max_grad_norm=0.0), "`max_grad_norm` must be"),
        (dict(student_policy_kwargs=dict(net_arhc=[8])), "unknown keys"),
        (dict(student_policy_kwargs=[8]), "must be a dict"),
        (dict(policy_kwargs=dict(net_arch=[8])), "student_policy_kwargs"),
    ],
)
def test_bad_arguments(kwargs, match):
    error = TypeError if match == "must be a dict" else ValueError
    with pytest.raises(error, match=match):
        tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1", **kwargs)


def test_bad_teachers(tmp_path):
    with pytest.raises(ValueError, match="`teacher` is required"):
        PolicyDistillation("MlpPolicy", "CartPole-v1")
    with pytest.raises(TypeError, match="`teacher` must be an SB3 model"):
        PolicyDistillation("MlpPolicy", "CartPole-v1", teacher=42)
    with pytest.raises(ValueError, match="does not exist"):
        PolicyDistillation("MlpPolicy", "CartPole-v1", teacher=str(tmp_path / "missing.zip"))
    # Mismatched spaces: a CartPole teacher in Acrobot
    with pytest.raises(ValueError, match="observation_space"):
        tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "Acrobot-v1")
    # Continuous teachers: no nll; deterministic teachers: mse only
    with pytest.raises(ValueError, match="`loss` must be one of"):
        tiny_distillation(tiny_teacher(SAC, "Pendulum-v1"), "Pendulum-v1", loss="nll")
    with pytest.raises(ValueError, match=r"`loss` must be one of \('mse',\)"):
        tiny_distillation(tiny_teacher(TD3, "Pendulum-v1"), "Pendulum-v1", loss="forward_kl")
    # Head-to-head value distillation needs as many critics
    with pytest.raises(ValueError, match="n_critics"):
        tiny_distillation(
            tiny_teacher(SAC, "Pendulum-v1"), "Pendulum-v1", value_coef=1.0, student_policy_kwargs=dict(n_critics=1)
        )
    # Unsupported: recurrent policies, sb3_distill ensembles (export their student first)
    recurrent = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=16)
    with pytest.raises(ValueError, match=r"RecurrentActorCriticPolicy is not supported\. Supported teachers: DQNTeacher"):
        tiny_distillation(recurrent, "CartPole-v1")
    with pytest.raises(ValueError, match=r"RecurrentActorCriticPolicy is not supported\. Supported teachers: DQNTeacher"):
        Teacher.for_policy(recurrent.policy)
    sde_sac = SAC("MlpPolicy", "Pendulum-v1", use_sde=True)
    with pytest.raises(ValueError, match="SACPolicy is not supported"):
        tiny_distillation(sde_sac, "Pendulum-v1")
    with pytest.raises(ValueError, match="export_student"):
        tiny_distillation(EnsembleDistillDQN("MlpPolicy", "CartPole-v1", n_teachers=2), "CartPole-v1")


def test_warnings_for_unused_arguments():
    with pytest.warns(UserWarning, match="`temperature` is not used"):
        tiny_distillation(tiny_teacher(SAC, "Pendulum-v1"), "Pendulum-v1", temperature=0.5)
    with pytest.warns(UserWarning, match="`value_coef` is not used"):
        model = tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1", value_coef=1.0)
    assert model.value_coef == 0.0


def test_default_temperatures():
    assert tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1").distill_temperature == 0.01
    assert tiny_distillation(tiny_teacher(PPO, "CartPole-v1"), "CartPole-v1").distill_temperature == 1.0
    assert tiny_distillation(tiny_teacher(TD3, "Pendulum-v1"), "Pendulum-v1").distill_loss == "mse"


@pytest.mark.parametrize("algo", [DQN, PPO])
def test_dict_observations(algo):
    from stable_baselines3.common.envs import SimpleMultiObsEnv

    env = SimpleMultiObsEnv(random_start=False)
    kwargs = dict(learning_starts=10, buffer_size=200, batch_size=8) if algo is DQN else dict(n_steps=16, batch_size=16)
    teacher = algo("MultiInputPolicy", env, seed=0, **kwargs).learn(32)
    model = PolicyDistillation("MultiInputPolicy", env, teacher=teacher, learning_starts=10, batch_size=8, buffer_size=200)
    model.learn(60)
    assert model._n_updates > 0
    obs = env.reset()[0]
    assert model.export_student().predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]


def test_default_control_is_student_driven():
    model = tiny_distillation(tiny_teacher(DQN, "CartPole-v1"), "CartPole-v1")
    assert model.control == "student"
    assert not model._control_mask(4).any()
