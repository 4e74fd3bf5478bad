"""
Teachers (``sb3_distill.common.teachers``): the adapters of every supported SB3 policy, loading a teacher
from a model, a ``.zip`` or an rl-zoo3 experiment folder with its preprocessing, and PolicyDistillation
built on them (a VecNormalize teacher, ``load(teacher=other)``, the default policy alias).
"""

import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from sb3_contrib import QRDQN, TQC, TRPO
from sb3_contrib.tqc.policies import TQCPolicy
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize
from torch.distributions import Categorical
from torch.nn import functional as F

from sb3_distill import PolicyDistillation
from sb3_distill.common import teachers
from sb3_distill.common.teachers import (
    ActorCriticTeacher,
    DQNTeacher,
    QRDQNTeacher,
    SACTeacher,
    TD3Teacher,
    Teacher,
    load_teacher,
    register_teacher,
)

ALGOS = [
    (DQN, "CartPole-v1", DQNTeacher),
    (QRDQN, "CartPole-v1", QRDQNTeacher),
    (PPO, "CartPole-v1", ActorCriticTeacher),
    (A2C, "CartPole-v1", ActorCriticTeacher),
    (PPO, "Pendulum-v1", ActorCriticTeacher),
    (SAC, "Pendulum-v1", SACTeacher),
    (TD3, "Pendulum-v1", TD3Teacher),
    (DDPG, "Pendulum-v1", TD3Teacher),
]
IDS = [f"{algo.__name__}-{env_id}" for algo, env_id, _ in ALGOS]


def small() -> dict:
    """Tiny networks (a new dict each time: SB3 writes into `policy_kwargs`)."""
    return dict(policy_kwargs=dict(net_arch=[8]), seed=0)


@pytest.mark.parametrize("algo,env_id,adapter_class", ALGOS, ids=IDS)
def test_algorithm_read_from_file(algo, env_id, adapter_class, tmp_path):
    model = algo("MlpPolicy", env_id, **small())
    model.save(tmp_path / "teacher.zip")
    loaded = load_teacher(tmp_path / "teacher.zip", device="cpu")
    assert type(loaded.model) is algo and not loaded.preprocessing.normalizes
    adapter = Teacher.for_policy(loaded.model.policy)
    assert type(adapter) is adapter_class
    # the student of an A2C teacher is an A2C, of a DDPG teacher a DDPG, of a QR-DQN teacher a DQN
    assert teachers.student_algorithm_for(adapter, algo) is (DQN if algo is QRDQN else algo)


def test_unsupported_or_broken_files_are_rejected(tmp_path):
    TRPO("MlpPolicy", "CartPole-v1", **small()).save(tmp_path / "trpo.zip")
    # TRPO's policy is an ActorCriticPolicy, but its file is not an A2C's
    with pytest.raises(ValueError, match="saved by an algorithm that is not supported"):
        load_teacher(tmp_path / "trpo.zip")
    good = (tmp_path / "trpo.zip").read_bytes()
    (tmp_path / "truncated.zip").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="is not a readable SB3 model"):
        load_teacher(tmp_path / "truncated.zip")
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher(tmp_path / "missing.zip")
    with pytest.raises(TypeError, match="`teacher` must be an SB3 model"):
        load_teacher(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("algo,env_id,adapter_class", ALGOS, ids=IDS)
def test_adapter_outputs(algo, env_id, adapter_class):
    model = algo("MlpPolicy", env_id, **small())
    adapter = Teacher.for_policy(model.policy)
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(5)]))
    with th.no_grad():
        out, log_std = adapter.outputs(obs)
        if adapter.is_discrete:
            scores = model.policy.q_net(obs) if algo is DQN else None
            if algo is QRDQN:
                scores = model.policy.quantile_net(obs).mean(dim=1)
            if scores is not None:
                assert th.allclose(out, scores)
            # pi = softmax(scores / tau), and the softmax policy's state value
            assert th.allclose(adapter.log_probs(obs, 0.5), F.log_softmax(out / 0.5, dim=-1))
            assert th.allclose(adapter.distribution(obs, 0.5).probs, Categorical(logits=out / 0.5).probs)
            value = adapter.value(obs, temperature=0.5)
            if algo in (DQN, QRDQN):
                assert th.allclose(value, (F.softmax(out / 0.5, dim=-1) * out).sum(-1))
        elif adapter.action_kind == "deterministic":
            assert log_std is None and th.allclose(out, model.policy.actor(obs))
            with pytest.raises(ValueError, match="deterministic"):
                adapter.distribution(obs)
        else:
            actions = th.as_tensor(np.stack([model.action_space.sample() for _ in range(5)])).clamp(-0.9, 0.9)
            assert th.allclose(adapter.distribution(obs).log_prob(actions).exp() > 0, th.tensor(True))
            assert log_std.shape == out.shape
        if algo in (PPO, A2C):
            assert th.allclose(adapter.value(obs), model.policy.predict_values(obs).squeeze(-1))
    assert adapter.acting_parameter_count() > 0


def test_a_new_kind_is_one_registered_class():
    """The module docstring's example: TQC (sb3-contrib) becomes a teacher with one subclass."""
    tqc = TQC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[8], n_critics=1, n_quantiles=5), seed=0)
    with pytest.raises(ValueError, match="TQCPolicy is not supported"):
        Teacher.for_policy(tqc.policy)

    class TQCTeacher(SACTeacher):
        policy_class = TQCPolicy
        algorithms = (TQC,)
        student_algorithm = TQC

        def value(self, obs, temperature=1.0):
            mean, _ = self.outputs(obs)
            return self.policy.critic(obs, th.tanh(mean)).mean(dim=(1, 2))

    register_teacher(TQCTeacher)
    try:
        assert type(Teacher.for_policy(tqc.policy)) is TQCTeacher
        model = PolicyDistillation(
            env="Pendulum-v1", teacher=tqc, learning_starts=16, batch_size=8, student_policy_kwargs=dict(net_arch=[4])
        )
        model.learn(40)
        assert model._n_updates > 0 and type(model.export_student()) is TQC
    finally:
        teachers._REGISTRY.remove(TQCTeacher)


def write_zoo_folder(folder: Path, env_id: str, model, vec_normalize: VecNormalize | None, **config) -> Path:
    """An rl-zoo3 experiment folder as rl-zoo3's train writes it: <env>.zip, <env>/args.yml, config.yml, vecnormalize.pkl."""
    folder.mkdir(parents=True)
    model.save(folder / f"{env_id}.zip")
    (folder / env_id).mkdir()
    (folder / env_id / "args.yml").write_text(yaml.dump({"algo": type(model).__name__.lower(), "env": env_id}))
    (folder / env_id / "config.yml").write_text(yaml.dump({"normalize": vec_normalize is not None, **config}))
    if vec_normalize is not None:
        vec_normalize.save(str(folder / env_id / "vecnormalize.pkl"))
    return folder


def normalized_teacher(env_id="Pendulum-v1", algo=PPO):
    """A teacher whose env normalises observations with statistics far from the identity."""
    venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=0), norm_reward=False)
    venv.obs_rms.mean = np.array([0.5, -0.3, 2.0])[: venv.observation_space.shape[0]]
    venv.obs_rms.var = np.array([0.04, 0.25, 9.0])[: venv.observation_space.shape[0]]
    return algo("MlpPolicy", venv, policy_kwargs=dict(net_arch=[16]), seed=0), venv


def test_vec_normalize_teacher_from_zoo_folder(tmp_path):
    teacher, venv = normalized_teacher()
    folder = write_zoo_folder(tmp_path / "logs" / "ppo" / "Pendulum-v1_1", "Pendulum-v1", teacher, venv)
    # No policy alias and no extra flag: the teacher's alias, algorithm and statistics come from the folder
    model = PolicyDistillation(
        env="Pendulum-v1", teacher=str(folder), learning_starts=16, batch_size=8, student_policy_kwargs=dict(net_arch=[8])
    )
    assert model.teacher_algorithm is PPO and model.teacher_preprocessing.normalizes
    raw = np.stack([model.observation_space.sample() for _ in range(16)])
    normalized = venv.normalize_obs(raw)
    assert np.allclose(model.policy.normalize_obs(raw), normalized, atol=1e-6)
    assert not np.allclose(normalized, raw)
    # The teacher acts in the distilling model as it acts in its own normalised env
    teacher_actions = teacher.predict(normalized, deterministic=True)[0]
    assert np.allclose(model.policy.teacher.predict(model.policy.normalize_obs(raw), deterministic=True)[0], teacher_actions)
    # The buffer holds raw observations; the losses see them normalised
    model.learn(48)
    stored = model.replay_buffer.observations[:10, 0]
    assert np.abs(stored).max() <= 8.01  # Pendulum's raw bounds, not normalised values up to `clip_obs`
    with th.no_grad():
        batch = th.as_tensor(raw)
        assert th.allclose(model.policy.obs_normalizer(batch), th.as_tensor(normalized), atol=1e-6)
    # The student predicts on raw observations through the statistics
    student_actions = model.policy.student.predict(normalized, deterministic=True)[0]
    assert np.allclose(model.predict(raw, deterministic=True)[0], student_actions)

    # The exported student comes with the statistics: rl-zoo3's layout, VecNormalize.load and load_teacher read them
    exported = model.export_student(path=tmp_path / "student" / "Pendulum-v1.zip")
    stats = VecNormalize.load(
        str(tmp_path / "student" / "Pendulum-v1" / "vecnormalize.pkl"), DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    )
    assert not stats.training and np.allclose(stats.normalize_obs(raw), normalized)
    assert np.allclose(exported.predict(stats.normalize_obs(raw), deterministic=True)[0], student_actions)
    again = load_teacher(tmp_path / "student" / "Pendulum-v1.zip")
    assert type(again.model) is PPO and np.allclose(again.preprocessing.normalize(raw), normalized)

    # Saved and loaded without the teacher: the statistics are part of the model
    model.save(tmp_path / "distill.zip")
    loaded = PolicyDistillation.load(tmp_path / "distill.zip", env=gym.make("Pendulum-v1"))
    assert np.allclose(loaded.predict(raw, deterministic=True)[0], student_actions)
    # Evaluation plays the raw env through the statistics
    scores = loaded.evaluate_members(gym.make("Pendulum-v1"), n_eval_episodes=1)
    assert set(scores) == {"teacher", "student"}


def test_env_already_normalised_or_missing_wrappers_is_an_error(tmp_path):
    teacher, _ = normalized_teacher()
    with pytest.raises(ValueError, match="normalise twice"):
        PolicyDistillation("MlpPolicy", VecNormalize(make_vec_env("Pendulum-v1")), teacher=teacher)
    # A teacher trained on stacked frames, given an env without them
    stacked = PPO("MlpPolicy", VecFrameStack(make_vec_env("CartPole-v1"), 2), policy_kwargs=dict(net_arch=[8]))
    folder = write_zoo_folder(tmp_path / "stacked", "CartPole-v1", stacked, None, frame_stack=2)
    with pytest.raises(ValueError, match=r"VecFrameStack\(env, 2\)"):
        PolicyDistillation("MlpPolicy", make_vec_env("CartPole-v1"), teacher=str(folder))
    # Given the env id, the frame stacking is added
    model = PolicyDistillation(env="CartPole-v1", teacher=str(folder), student_policy_kwargs=dict(net_arch=[4]))
    assert model.observation_space.shape == (8,)
    # An rl-zoo3 `env_wrapper` the env lacks
    wrapped = write_zoo_folder(
        tmp_path / "wrapped", "CartPole-v1", PPO("MlpPolicy", "CartPole-v1", **small()), None,
        env_wrapper="gymnasium.wrappers.TimeAwareObservation",
    )  # fmt: skip
    with pytest.raises(ValueError, match="TimeAwareObservation"):
        PolicyDistillation("MlpPolicy", make_vec_env("CartPole-v1"), teacher=str(wrapped))


def test_load_with_another_teacher_replaces_its_weights(tmp_path):
    first = DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[16]), seed=0)
    model = PolicyDistillation(
        env="CartPole-v1", teacher=first, learning_starts=16, batch_size=8, student_policy_kwargs=dict(net_arch=[4])
    )
    model.learn(32)
    model.save(tmp_path / "distill.zip")
    student = {key: value.clone() for key, value in model.policy.student.state_dict().items()}
    # A teacher with another network: its weights, not the saved teacher's, and the student is kept
    other = DQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[32]), seed=1)
    loaded = PolicyDistillation.load(tmp_path / "distill.zip", env=gym.make("CartPole-v1"), teacher=other)
    for key, value in other.policy.state_dict().items():
        assert th.equal(loaded.policy.teacher.state_dict()[key], value), key
    for key, value in student.items():
        assert th.equal(loaded.policy.student.state_dict()[key], value), key
    loaded.learn(32)
    # Without `teacher`, the saved teacher is restored
    plain = PolicyDistillation.load(tmp_path / "distill.zip", env=gym.make("CartPole-v1"))
    for key, value in first.policy.state_dict().items():
        assert th.equal(plain.policy.teacher.state_dict()[key], value), key
    assert plain.policy_kwargs == {}  # never rewritten with derived keys
    PolicyDistillation.load(tmp_path / "distill.zip", env=gym.make("CartPole-v1"), policy_kwargs=plain.policy_kwargs)


def test_vec_normalize_teacher_trained_by_rl_zoo3(tmp_path):
    """The real rl-zoo3 layout: a PPO teacher trained by rl-zoo3 with normalize, distilled from the zoo command too."""
    logs = tmp_path / "logs"
    zoo_train = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "CartPole-v1", "-n", "128", "-f", str(logs)]
    params = ["normalize:True", "n_steps:64", "batch_size:64", "n_epochs:1", "policy_kwargs:dict(net_arch=[8])"]
    subprocess.run(
        [*zoo_train, "--seed", "0", "--eval-freq", "-1", "-params", *params],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    folder = logs / "ppo" / "CartPole-v1_1"
    with open(folder / "CartPole-v1" / "vecnormalize.pkl", "rb") as file:
        stats = pickle.load(file)
    model = PolicyDistillation(env="CartPole-v1", teacher=str(folder), student_policy_kwargs=dict(net_arch=[4]))
    raw = np.stack([model.observation_space.sample() for _ in range(8)]) * 0.1
    assert np.allclose(model.policy.normalize_obs(raw), stats.normalize_obs(raw), atol=1e-6)
    # The zoo command with the folder as teacher: no extra flag
    distill = [sys.executable, "-m", "sb3_distill.train", "--algo", "policy_distillation", "--env", "CartPole-v1", "-n", "200"]
    params = [f"teacher:'{folder}'", "learning_starts:50", "student_policy_kwargs:dict(net_arch=[4])"]
    result = subprocess.run(
        [*distill, "-f", str(logs), "--eval-freq", "-1", "-params", *params], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = PolicyDistillation.load(logs / "policy_distillation" / "CartPole-v1_1" / "CartPole-v1.zip")
    assert saved.teacher_preprocessing.normalizes and saved.teacher_algorithm is PPO
