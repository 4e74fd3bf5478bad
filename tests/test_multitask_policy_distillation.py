"""
MultiTaskPolicyDistillation: tasks of different observation lengths and action counts, Q-value and logit
teachers, balanced sampling, the losses, export of each task's student, save/load, bad input.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.distributions import Categorical, kl_divergence

from sb3_distill import MultiTaskPolicyDistillation
from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.common.multitask import MultiTaskVecEnv, pad_observations, padded_indices, unpad_observations
from tests.helpers import assert_optimizer_states_equal
from tests.models import TinyCNN, tiny_image_env

_TEACHERS: dict = {}


def teacher(algo, env_id: str):
    """An untrained teacher (random weights are enough to distil), cached per test session."""
    key = (algo.__name__, env_id)
    if key not in _TEACHERS:
        kwargs: dict = dict(policy_kwargs=dict(net_arch=[16]), seed=0)
        if algo is PPO:
            kwargs.update(n_steps=32, batch_size=32)
        _TEACHERS[key] = algo("MlpPolicy", env_id, **kwargs)
    return _TEACHERS[key]


def two_tasks() -> dict:
    # 4 and 6 observation values, 2 and 3 actions; a Q-value and a logit teacher
    return {"CartPole-v1": teacher(DQN, "CartPole-v1"), "Acrobot-v1": teacher(PPO, "Acrobot-v1")}


def tiny(teachers=None, **kwargs) -> MultiTaskPolicyDistillation:
    config = dict(learning_starts=16, batch_size=8, buffer_size=600, student_policy_kwargs=dict(net_arch=[8]), seed=0)
    config.update(kwargs)
    return MultiTaskPolicyDistillation(teachers=two_tasks() if teachers is None else teachers, **config)


def random_obs(model, task: str, n: int = 20) -> np.ndarray:
    space = model.task_observation_spaces[model.tasks.index(task)]
    return np.random.default_rng(0).normal(size=(n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("control", ["student", "teacher", "mixture"])
def test_run_and_export(control, tmp_path):
    model = tiny(control=control, teacher_prob=0.5)
    teachers_before = {k: v.clone() for k, v in model.policy.teachers.state_dict().items()}
    student_before = [p.clone() for p in model.policy.student.parameters()]
    model.learn(120)
    assert model._n_updates > 0
    assert any(not th.equal(a, b) for a, b in zip(student_before, model.policy.student.parameters(), strict=True))
    for key, value in model.policy.teachers.state_dict().items():
        assert th.equal(value, teachers_before[key]), key
    fraction = {"student": 0.0, "teacher": 1.0, "mixture": 0.5}[control]
    assert model._teacher_steps / model._control_steps == pytest.approx(fraction, abs=0.15)
    for task, n_actions in (("CartPole-v1", 2), ("Acrobot-v1", 3)):
        obs = random_obs(model, task)
        actions, _ = model.predict(obs, task=task)
        assert actions.shape == (20,) and actions.max() < n_actions
        assert model.predict(obs[0], task=task)[0] == actions[0]
        # Trunk + that head as a plain DQN on the task's own (unpadded) spaces, exactly the student's policy
        exported = model.export_student(task, path=tmp_path / f"{task}.zip")
        assert type(exported) is DQN and exported.observation_space.shape == obs.shape[1:]
        reloaded = DQN.load(tmp_path / f"{task}.zip")
        assert np.array_equal(reloaded.predict(obs, deterministic=True)[0], actions)
        q_values = reloaded.q_net(th.as_tensor(obs))
        padded = th.as_tensor(pad_observations(obs, (6,)))
        index = model.tasks.index(task)
        expected = model.policy.student.heads[index](model.policy.student.features(padded))
        assert th.allclose(q_values, expected, atol=1e-6)
        for p, q in zip(reloaded.q_net.parameters(), reloaded.q_net_target.parameters(), strict=True):
            assert th.equal(p, q)


def test_multitask_env_pads_and_routes():
    env = MultiTaskVecEnv({"a": make_vec_env("CartPole-v1", n_envs=2), "b": make_vec_env("Acrobot-v1", n_envs=2)})
    assert env.num_envs == 4 and env.action_space == gym.spaces.Discrete(3)
    obs = env.reset()
    assert obs["obs"].shape == (4, 6) and list(obs["task"]) == [0, 0, 1, 1]
    # CartPole's observations are padded with zeros
    assert np.all(obs["obs"][:2, 4:] == 0) and np.all(obs["obs"][2:, 4:] != 0)
    for _ in range(30):
        obs, _, dones, infos = env.step(np.array([0, 1, 2, 2]))
        assert [info["task"] for info in infos] == ["a", "a", "b", "b"]
        for info, done in zip(infos, dones, strict=True):
            if done:
                assert info["terminal_observation"]["obs"].shape == (6,)
    with pytest.raises(ValueError, match="outside task 'a'"):
        env.step(np.array([2, 0, 0, 0]))
    assert env.get_attr("spec", [1, 2])[1].id == "Acrobot-v1"
    assert len(env.seed(3)) == 4
    # Padding helpers: the task's columns of a flattened padded observation
    assert list(padded_indices((2, 3), (1, 2))) == [0, 1]
    assert np.array_equal(unpad_observations(pad_observations(np.ones((5, 1, 2)), (2, 3)), (1, 2)), np.ones((5, 1, 2)))


def test_balanced_sampling_and_loss_matches_direct_computation(tmp_path):
    model = tiny(temperature=0.5, batch_size=16)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(100, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ["train/distill_loss", "train/distill_loss/CartPole-v1", "train/distill_loss/Acrobot-v1"]:
        assert key in header, key
    # Each task's states come from its own envs: CartPole's are padded with zeros, Acrobot's are not
    cartpole, acrobot = (model._sample_task_observations(task, 64) for task in (0, 1))
    assert th.all(cartpole[:, 4:] == 0) and th.all(acrobot[:, 4:] != 0)
    losses = model._losses([cartpole, acrobot])
    assert losses.shape == (2,)
    # forward KL(teacher || student) of the softmaxes at temperature 0.5, per task, by torch.distributions
    student = model.policy.student
    dqn_teacher, ppo_teacher = two_tasks().values()
    teacher_scores = [
        dqn_teacher.q_net(cartpole[:, :4]).detach(),
        ppo_teacher.policy.get_distribution(acrobot).distribution.logits.detach(),
    ]
    for task, (obs, scores) in enumerate(zip((cartpole, acrobot), teacher_scores, strict=True)):
        student_scores = student.heads[task](student.features(obs))
        expected = kl_divergence(Categorical(logits=scores / 0.5), Categorical(logits=student_scores / 0.5)).mean()
        assert th.allclose(losses[task], expected, atol=1e-5)
    losses.mean().backward()
    assert all(p.grad is None for p in model.policy.teachers.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_qrdqn_teacher_envs_mapping_and_n_envs(tmp_path):
    # Task names that are not env ids, env objects, two envs per task
    teachers = {"cart": teacher(QRDQN, "CartPole-v1"), "acro": teacher(DQN, "Acrobot-v1")}
    model = tiny(teachers, envs={"cart": "CartPole-v1", "acro": "Acrobot-v1"}, n_envs_per_task=2)
    assert model.env.num_envs == 4
    model.learn(80)
    assert model.num_timesteps >= 80
    # Default temperatures: Rusu's 0.01 for Q-value teachers, 1 for logits
    assert model.distill_temperatures == [0.01, 0.01] and tiny().distill_temperatures == [0.01, 1.0]
    results = model.evaluate_members({"cart": Monitor(gym.make("CartPole-v1")), "acro": Monitor(gym.make("Acrobot-v1"))}, 1)
    assert set(results) == {"cart/teacher", "cart/student", "acro/teacher", "acro/student"}
    with pytest.raises(ValueError, match="no env id"):
        tiny(teachers, envs={"cart": gym.make("CartPole-v1"), "acro": "Acrobot-v1"}).evaluate_members()


def test_evaluate_members_and_callback(tmp_path):
    model = tiny()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(60, callback=EvalMembersCallback(None, eval_freq=25, n_eval_episodes=1), log_interval=1)  # type: ignore[arg-type]
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    assert "eval/Acrobot-v1/student" in header and "eval/CartPole-v1/teacher" in header
    assert 0 < model.compression_ratio < 1
    ratios = model.compression_ratios()
    # CartPole's exported student: (4 * 8 + 8) + (8 * 2 + 2) parameters, against a 4-16-2 DQN's 114
    assert ratios["CartPole-v1"] == pytest.approx(58 / 114)
    with pytest.raises(ValueError, match="n_eval_episodes"):
        model.evaluate_members(n_eval_episodes=0)


def test_save_load(tmp_path):
    model = tiny(control="mixture", teacher_prob=0.3)
    model.learn(100)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = MultiTaskPolicyDistillation.load(tmp_path / "model.zip")
    for name in ["tasks", "task_env_ids", "control", "teacher_prob", "loss", "distill_temperatures"]:
        assert getattr(loaded, name) == getattr(model, name), name
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    assert any(key.startswith("teachers.1.") for key in state) and any(key.startswith("student.heads.1") for key in state)
    for key in state:
        assert th.equal(state[key], loaded_state[key]), key
    assert_optimizer_states_equal(model.policy.optimizer, loaded.policy.optimizer)
    loaded.set_parameters(model.get_parameters(), exact_match=True)
    for task in model.tasks:
        obs = random_obs(model, task)
        assert np.array_equal(model.predict(obs, task=task)[0], loaded.predict(obs, task=task)[0])
    # The multi-task env is rebuilt from the task env ids; replay buffer and training go on
    loaded.set_env(loaded.make_env())
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert np.array_equal(loaded.replay_buffer.observations["obs"], model.replay_buffer.observations["obs"])
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded._n_updates > model._n_updates
    # Arguments given to load() are checked too
    with pytest.raises(ValueError, match="`loss` must be one of"):
        MultiTaskPolicyDistillation.load(tmp_path / "model.zip", loss="kl")
    with pytest.raises(ValueError, match="`control` must be one of"):
        MultiTaskPolicyDistillation.load(tmp_path / "model.zip", control="expert")


def test_deterministic_with_seed():
    params = []
    for _ in range(2):
        model = tiny(seed=3, control="mixture")
        model.learn(80)
        params.append(th.cat([p.flatten() for p in model.policy.student.parameters()]))
    assert th.equal(params[0], params[1])


def test_vec_normalize_teacher():
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Acrobot-v1")]))
    normalized = PPO("MlpPolicy", env, n_steps=32, batch_size=32, policy_kwargs=dict(net_arch=[8]), seed=0).learn(64)
    model = tiny({"CartPole-v1": teacher(DQN, "CartPole-v1"), "Acrobot-v1": normalized})
    assert model.teacher_preprocessings[1].normalizes
    raw = random_obs(model, "Acrobot-v1") * 5
    # The student and the exported student both see the teacher's frozen normalisation
    exported = model.export_student("Acrobot-v1")
    expected = exported.predict(model.teacher_preprocessings[1].normalize(raw), deterministic=True)[0]
    assert np.array_equal(model.predict(raw, task="Acrobot-v1")[0], expected)
    assert np.abs(model.env.reset()["obs"]).max() <= 10.0


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(teachers={}), ValueError, "`teachers` is empty"),
        (dict(teachers=[1]), TypeError, "`teachers` must be a dict"),
        (dict(teachers={"no-such-task": "CartPole"}), ValueError, "does not exist"),
        (dict(envs={"Pong": "CartPole-v1"}), ValueError, "no teacher"),
        (dict(loss="kl"), ValueError, "`loss` must be one of"),
        (dict(temperature=0.0), ValueError, "`temperature` must be a number > 0"),
        (dict(control="expert"), ValueError, "`control` must be one of"),
        (dict(teacher_prob=1.5), ValueError, r"`teacher_prob` must be a number in \[0, 1\]"),
        (dict(max_grad_norm=0.0), ValueError, "`max_grad_norm` must be"),
        (dict(n_envs_per_task=0), ValueError, "`n_envs_per_task` must be an integer >= 1"),
        (dict(student_policy_kwargs=dict(net_arhc=[8])), ValueError, "unknown keys"),
        (dict(student_policy_kwargs=dict(net_arch=[0])), ValueError, r"`student_policy_kwargs\['net_arch'\]`"),
        (dict(student_policy_kwargs=[8]), TypeError, "must be a dict"),
        (dict(policy_kwargs=dict(net_arch=[8])), ValueError, "student_policy_kwargs"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny(**kwargs)


def test_bad_tasks():
    with pytest.raises(ValueError, match="`teachers` is required"):
        MultiTaskPolicyDistillation()
    # A task whose name is not an env id and has no entry in `envs`
    with pytest.raises(ValueError, match=r"Task 'cart' has no env: .*envs=\{'cart'"):
        tiny({"cart": teacher(DQN, "CartPole-v1")})
    # A teacher in another task's env
    with pytest.raises(ValueError, match="The teacher of task 'acro' has observation_space"):
        tiny({"acro": teacher(DQN, "CartPole-v1")}, envs={"acro": "Acrobot-v1"})
    # Box actions are not supported
    with pytest.raises(ValueError, match="Discrete actions only"):
        tiny({"Pendulum-v1": SAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8]))})
    # Unequal numbers of envs
    envs = {"CartPole-v1": make_vec_env("CartPole-v1", n_envs=2), "Acrobot-v1": make_vec_env("Acrobot-v1", n_envs=1)}
    with pytest.raises(ValueError, match="same number of envs"):
        tiny(envs=envs)
    with pytest.raises(ValueError, match="`env` of MultiTaskPolicyDistillation is the MultiTaskVecEnv"):
        MultiTaskPolicyDistillation(env=make_vec_env("CartPole-v1"), teachers=two_tasks())  # type: ignore[arg-type]
    # A given multi-task env with other tasks
    env = MultiTaskVecEnv({"Acrobot-v1": make_vec_env("Acrobot-v1"), "CartPole-v1": make_vec_env("CartPole-v1")})
    with pytest.raises(ValueError, match="are not the teachers' tasks"):
        MultiTaskPolicyDistillation(env=env, teachers=two_tasks())
    model = tiny()
    with pytest.raises(ValueError, match="`task` must be one of"):
        model.predict(np.zeros(4), task="Pong")
    with pytest.raises(ValueError, match=r"takes observations of shape \(6,\)"):
        model.predict(np.zeros(4), task="Acrobot-v1")


def image_teachers(channels=(2, 3), actions=(3, 4)) -> tuple[dict, dict]:
    """Untrained DQN teachers with a TinyCNN on tiny image tasks of different channel and action counts, and their envs."""
    envs = {f"game{c}": tiny_image_env(c, n) for c, n in zip(channels, actions, strict=True)}
    network = dict(features_extractor_class=TinyCNN, features_extractor_kwargs=dict(filters=4, features_dim=16), net_arch=[])
    teachers = {task: DQN("CnnPolicy", env, policy_kwargs=network, buffer_size=50, seed=0) for task, env in envs.items()}
    return teachers, envs


def image_obs(model, task: str, n: int = 10) -> np.ndarray:
    space = model.task_observation_spaces[model.tasks.index(task)]
    return np.stack([space.sample() for _ in range(n)])


@pytest.mark.parametrize("control", ["student", "teacher"])
def test_cnn_student_on_images_with_padded_channels(control, tmp_path):
    teachers, envs = image_teachers()
    model = tiny(teachers, envs=envs, student_policy_kwargs=None, control=control)
    # Channels padded to the largest count; the images stay uint8 (the student divides by 255, as CnnPolicy)
    padded = model.observation_space["obs"]
    assert padded.shape == (3, 6, 6) and padded.dtype == np.uint8
    # The default student is one teacher's network: the first teacher's TinyCNN and its sizes, on 3 channels
    extractor = model.policy.student.features_extractor
    assert isinstance(extractor, TinyCNN) and extractor.cnn[0].in_channels == 3 and extractor.cnn[0].out_channels == 4
    assert model.policy.features_extractor_class is TinyCNN and model.policy.net_arch == []
    before = [p.clone() for p in model.policy.student.parameters()]
    model.learn(60)
    assert model._n_updates > 0
    assert all(not th.equal(a, b) for a, b in zip(before, model.policy.student.parameters(), strict=True))
    model.save(tmp_path / "model.zip")
    loaded = MultiTaskPolicyDistillation.load(tmp_path / "model.zip")
    assert isinstance(loaded.policy.student.features_extractor, TinyCNN)
    for index, task in enumerate(model.tasks):
        obs = image_obs(model, task)
        actions, _ = model.predict(obs, task=task)
        assert actions.max() < model.task_action_spaces[index].n
        np.testing.assert_array_equal(loaded.predict(obs, task=task)[0], actions)
        # The exported DQN keeps the task's own input channels of the first convolution: the same Q-values
        exported = model.export_student(task)
        assert exported.q_net.features_extractor.cnn[0].in_channels == obs.shape[1]
        q_values = exported.q_net(th.as_tensor(obs))
        student = model.policy.student
        expected = student.heads[index](student.features(th.as_tensor(pad_observations(obs, (3, 6, 6), np.uint8))))
        assert th.allclose(q_values, expected, atol=1e-5)
        np.testing.assert_array_equal(exported.predict(obs, deterministic=True)[0], actions)


def test_cnn_student_sizes_and_compression_ratios():
    teachers, envs = image_teachers()
    # A smaller CNN trunk, set as for the other algorithms (the keys of DQN's policy_kwargs)
    small = dict(features_extractor_class=TinyCNN, features_extractor_kwargs=dict(filters=2, features_dim=4), net_arch=[])
    model = tiny(teachers, envs=envs, student_policy_kwargs=small)
    student = model.policy.student
    assert student.features_extractor.cnn[0].out_channels == 2 and student.features_extractor.features_dim == 4
    teacher_counts = [sum(p.numel() for p in teacher.q_net.parameters()) for teacher in teachers.values()]
    student_count = sum(p.numel() for p in student.parameters())
    assert model.compression_ratio == pytest.approx(student_count / sum(teacher_counts))
    # Against one teacher: that task's exported student (its own channels, its head) over its teacher
    for task, teacher_count in zip(model.tasks, teacher_counts, strict=True):
        channels = model.task_observation_spaces[model.tasks.index(task)].shape[0]
        n_actions = model.task_action_spaces[model.tasks.index(task)].n
        exported = (2 * channels * 9 + 2) + (2 * 16 * 4 + 4) + (4 * n_actions + n_actions)
        assert model.compression_ratios()[task] == pytest.approx(exported / teacher_count)
    assert model.compression_ratio < min(model.compression_ratios().values()) < 1
    # The default (one teacher's size) is larger
    assert tiny(teachers, envs=envs, student_policy_kwargs=None).compression_ratio > model.compression_ratio


def test_image_tasks_bad_input():
    teachers, envs = image_teachers()
    # Images and vectors cannot share one student
    mixed = {"game2": teachers["game2"], "CartPole-v1": teacher(DQN, "CartPole-v1")}
    with pytest.raises(ValueError, match="mix image and vector observations"):
        tiny(mixed, envs={"game2": envs["game2"]})
    # Only channels are padded: the frames must have one size
    big = tiny_image_env(2, size=7)
    network = dict(features_extractor_class=TinyCNN, net_arch=[])
    other = {"small": teachers["game2"], "big": DQN("CnnPolicy", big, policy_kwargs=network, buffer_size=50)}
    with pytest.raises(ValueError, match="share height and width"):
        tiny(other, envs={"small": envs["game2"], "big": big})
    with pytest.raises(ValueError, match="unknown keys"):
        tiny(teachers, envs=envs, student_policy_kwargs=dict(features_extractor=TinyCNN))
