"""ONNX export: onnxruntime against model.predict(deterministic=True) and against the networks' raw outputs."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import QRDQN, MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.envs import FakeImageEnv, IdentityEnv, IdentityEnvMultiDiscrete, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.nn import functional as F

from sb3_distill import PIEKDSAC, EnsembleDistillDQN, PolicyDistillation, RealTimeDistillDQN, export_onnx
from sb3_distill.common.export import OnnxPredictor
from sb3_distill.common.torch_layers import CompactNatureCNN

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ATOL = 1e-5
OFF_POLICY = (DQN, QRDQN, SAC, TD3, DDPG)
# (algorithm, Discrete actions, extra outputs)
PLAIN_MODELS = [
    (DQN, True, ["q_values"]),
    (QRDQN, True, ["q_values", "quantiles"]),
    (PPO, True, ["logits", "value"]),
    (PPO, False, ["value"]),
    (A2C, True, ["logits", "value"]),
    (A2C, False, ["value"]),
    (SAC, False, ["q_values"]),
    (TD3, False, ["q_values"]),
    (DDPG, False, ["q_values"]),
]
PLAIN_IDS = [f"{algo.__name__}-{'Discrete' if discrete else 'Box'}" for algo, discrete, _ in PLAIN_MODELS]


def image_env(discrete: bool) -> gym.Env:
    """36x36 channel-last grey images: the smallest the Nature-CNN accepts (SB3 transposes them)."""
    return FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=discrete)


def tiny_plain_model(algo, discrete: bool, policy: str):
    env = image_env(discrete) if policy == "CnnPolicy" else ("CartPole-v1" if discrete else "Pendulum-v1")
    policy_kwargs: dict = dict(net_arch=[16])
    if policy == "CnnPolicy":
        policy_kwargs["features_extractor_kwargs"] = dict(features_dim=16)
    kwargs: dict = dict(policy_kwargs=policy_kwargs, seed=0)
    if algo in OFF_POLICY:
        kwargs["buffer_size"] = 100
    if algo is QRDQN:
        policy_kwargs["n_quantiles"] = 5
    model = algo(policy, env, **kwargs)
    if algo in (PPO, A2C) and not discrete:
        # Means beyond the bounds, so that the clipping of predict() is exercised
        with th.no_grad():
            model.policy.action_net.bias.fill_(float(model.action_space.high[0]))
    return model


def run_onnx(path, obs: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {"obs": obs}), strict=True))


def sample_obs(model, batch_size: int) -> np.ndarray:
    space = model.observation_space
    space.seed(batch_size)
    obs = np.stack([space.sample() for _ in range(batch_size)])
    return obs if obs.dtype in (np.uint8, np.int64) else obs.astype(np.float32)


def assert_actions_match(model, path, obs: np.ndarray) -> dict[str, np.ndarray]:
    """The ONNX action equals predict's (exactly for Discrete actions); returns all the ONNX outputs."""
    outputs = run_onnx(path, obs)
    expected, _ = model.predict(obs, deterministic=True)
    assert outputs["action"].shape == expected.shape
    if isinstance(model.action_space, spaces.Discrete):
        assert outputs["action"].dtype == np.int64
        np.testing.assert_array_equal(outputs["action"], expected)
    else:
        np.testing.assert_allclose(outputs["action"], expected, atol=ATOL, rtol=0)
    return outputs


def raw_outputs(model, obs: np.ndarray) -> dict[str, th.Tensor]:
    """The networks' outputs, computed through SB3's own code paths."""
    policy = model.policy
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with th.no_grad():
        if isinstance(model, QRDQN):
            quantiles = policy.quantile_net(obs_tensor)
            return {"quantiles": quantiles, "q_values": quantiles.mean(dim=1)}
        if isinstance(model, DQN):
            return {"q_values": policy.q_net(obs_tensor)}
        if isinstance(model, (PPO, A2C)):
            distribution = policy.get_distribution(obs_tensor).distribution
            # Normalised logits (log-probabilities): the ONNX logits up to a constant
            logits = distribution.logits if isinstance(model.action_space, spaces.Discrete) else None
            return {"log_probs": logits, "value": policy.predict_values(obs_tensor)}
        actions = policy.actor(obs_tensor, deterministic=True) if isinstance(model, SAC) else policy.actor(obs_tensor)
        return {"q_values": th.cat(policy.critic(obs_tensor, actions), dim=1)}


@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
@pytest.mark.parametrize("algo,discrete,outputs", PLAIN_MODELS, ids=PLAIN_IDS)
def test_plain_models(algo, discrete, outputs, policy, tmp_path):
    model = tiny_plain_model(algo, discrete, policy)
    path = export_onnx(model, tmp_path / "model.onnx", outputs=outputs)
    onnx.checker.check_model(str(path))
    for batch_size in (1, 5):
        obs = sample_obs(model, batch_size)
        onnx_outputs = assert_actions_match(model, path, obs)
        expected = raw_outputs(model, obs)
        for name in outputs:
            if name == "logits":
                actual = F.log_softmax(th.as_tensor(onnx_outputs["logits"]), dim=1)
                th.testing.assert_close(actual, expected["log_probs"], atol=ATOL, rtol=0)
            else:
                th.testing.assert_close(th.as_tensor(onnx_outputs[name]), expected[name], atol=ATOL, rtol=0)


@pytest.mark.parametrize("algo", [PPO, SAC])
def test_generalized_state_dependent_exploration(algo, tmp_path):
    # gSDE; PPO squashes its output, so predict() unscales instead of clipping
    policy_kwargs = dict(net_arch=[16], squash_output=True) if algo is PPO else dict(net_arch=[16])
    model = algo("MlpPolicy", "Pendulum-v1", use_sde=True, policy_kwargs=policy_kwargs, seed=0)
    # Means far from 0, where tanh is not the identity
    with th.no_grad():
        (model.policy.action_net if algo is PPO else model.actor.mu[0]).bias.fill_(1.0)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert_actions_match(model, path, sample_obs(model, 8))


def test_channels_last_images(tmp_path):
    model = tiny_plain_model(DQN, True, "CnnPolicy")
    path = export_onnx(model, tmp_path / "model.onnx", outputs=["q_values"], channels_last=True)
    # As the environment gives them, (batch, H, W, C) uint8: predict() transposes them too
    env = image_env(discrete=True)
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    assert obs.shape == (4, 36, 36, 1)
    outputs = assert_actions_match(model, path, obs)
    th.testing.assert_close(th.as_tensor(outputs["q_values"]), raw_outputs(model, obs)["q_values"], atol=ATOL, rtol=0)


def test_discrete_observations(tmp_path):
    model = PPO("MlpPolicy", IdentityEnv(dim=4), n_steps=16, batch_size=16, policy_kwargs=dict(net_arch=[8]), seed=0)
    path = export_onnx(model, tmp_path / "model.onnx", outputs=["logits"])
    obs = np.arange(4, dtype=np.int64)
    outputs = assert_actions_match(model, path, obs)
    th.testing.assert_close(
        F.log_softmax(th.as_tensor(outputs["logits"]), dim=1), raw_outputs(model, obs)["log_probs"], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("from_file", [False, True])
def test_vec_normalize(from_file, tmp_path):
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=1.5)
    rng = np.random.default_rng(0)
    venv.obs_rms.mean = rng.normal(size=3)
    venv.obs_rms.var = rng.uniform(0.1, 2.0, size=3)
    model = SAC("MlpPolicy", venv, buffer_size=100, policy_kwargs=dict(net_arch=[16]), seed=0)
    venv.save(tmp_path / "vec_normalize.pkl")
    vec_normalize = tmp_path / "vec_normalize.pkl" if from_file else venv
    path = export_onnx(model, tmp_path / "model.onnx", vec_normalize=vec_normalize)
    # Raw observations, some far from the mean so that the clipping is exercised
    raw_obs = rng.normal(scale=3.0, size=(16, 3)).astype(np.float32)
    expected, _ = model.predict(venv.normalize_obs(raw_obs), deterministic=True)
    np.testing.assert_allclose(run_onnx(path, raw_obs)["action"], expected, atol=ATOL, rtol=0)
    # Without the statistics the graph is another function
    assert not np.allclose(run_onnx(export_onnx(model, tmp_path / "raw.onnx"), raw_obs)["action"], expected, atol=1e-3)


def test_ensemble_distill_dqn(tmp_path):
    model = EnsembleDistillDQN(
        "MlpPolicy",
        "CartPole-v1",
        n_teachers=3,
        buffer_size=100,
        policy_kwargs=dict(net_arch=[16]),
        student_policy_kwargs=dict(net_arch=[8]),
        seed=0,
    )
    path = export_onnx(model, tmp_path / "student.onnx", outputs=["q_values"])
    obs = sample_obs(model, 6)
    outputs = assert_actions_match(model, path, obs)
    with th.no_grad():
        expected = model.student(model.policy.obs_to_tensor(obs)[0])
    th.testing.assert_close(th.as_tensor(outputs["q_values"]), expected, atol=ATOL, rtol=0)
    # The student, not the ensemble of teachers: 8 hidden units
    assert sum(init.dims[0] == 8 for init in onnx.load(str(path)).graph.initializer if len(init.dims) == 1) >= 1


@pytest.mark.parametrize("stack_teacher", [True, False])
@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
@pytest.mark.parametrize("member", [None, "student_1", "teacher"])
def test_realtime_distill_dqn(policy, member, stack_teacher, tmp_path):
    if policy == "CnnPolicy":
        student = dict(
            features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4)
        )
        env, students = image_env(discrete=True), [student, student]
        kwargs: dict = dict(policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)))
    else:
        env, students, kwargs = (
            "CartPole-v1",
            [dict(net_arch=[8]), dict(net_arch=[4, 4])],
            dict(policy_kwargs=dict(net_arch=[16])),
        )
    model = RealTimeDistillDQN(policy, env, buffer_size=100, students=students, stack_teacher=stack_teacher, seed=0, **kwargs)
    # The teacher is exported from the students' stack (member 0) or from its own network
    assert model.policy.teacher_in_stack is stack_teacher
    path = export_onnx(model, tmp_path / "model.onnx", outputs=["q_values"], member=member)
    obs = sample_obs(model, 5)
    if member is None:
        assert_actions_match(model, path, obs)
    with th.no_grad():
        expected = model.policy.member_q_values(model.policy.obs_to_tensor(obs)[0], member or "student_0")
    outputs = run_onnx(path, obs)
    th.testing.assert_close(th.as_tensor(outputs["q_values"]), expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(outputs["action"], expected.argmax(dim=1).numpy())


@pytest.mark.parametrize(
    "teacher_class,env_id", [(DQN, "CartPole-v1"), (PPO, "CartPole-v1"), (PPO, "Pendulum-v1"), (SAC, "Pendulum-v1")]
)
def test_policy_distillation(teacher_class, env_id, tmp_path):
    buffer = {} if teacher_class is PPO else dict(buffer_size=100)
    teacher = teacher_class("MlpPolicy", env_id, policy_kwargs=dict(net_arch=[16]), seed=0, **buffer)
    model = PolicyDistillation(
        "MlpPolicy", env_id, teacher=teacher, buffer_size=100, student_policy_kwargs=dict(net_arch=[8]), seed=0
    )
    path = export_onnx(model, tmp_path / "student.onnx")
    assert_actions_match(model, path, sample_obs(model, 6))


def test_policy_distillation_cnn(tmp_path):
    env = image_env(discrete=True)
    teacher = DQN("CnnPolicy", env, buffer_size=100, policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)))
    model = PolicyDistillation("CnnPolicy", env, teacher=teacher, buffer_size=100, seed=0)
    path = export_onnx(model, tmp_path / "student.onnx", outputs=["q_values"])
    obs = sample_obs(model, 3)
    outputs = assert_actions_match(model, path, obs)
    with th.no_grad():
        expected = model.policy.student.q_net(model.policy.obs_to_tensor(obs)[0])
    th.testing.assert_close(th.as_tensor(outputs["q_values"]), expected, atol=ATOL, rtol=0)


def test_piekd_sac(tmp_path):
    model = PIEKDSAC("MlpPolicy", "Pendulum-v1", ensemble_size=3, buffer_size=100, policy_kwargs=dict(net_arch=[16]), seed=0)
    model.policy.predict_member = 2
    obs = sample_obs(model, 6)
    assert_actions_match(model, export_onnx(model, tmp_path / "best.onnx"), obs)
    # Another member: the same as that member exported to a plain SAC
    path = export_onnx(model, tmp_path / "member.onnx", member=1, outputs=["q_values"])
    member = model.export_member(1)
    outputs = assert_actions_match(member, path, obs)
    th.testing.assert_close(th.as_tensor(outputs["q_values"]), raw_outputs(member, obs)["q_values"], atol=ATOL, rtol=0)
    assert not np.allclose(outputs["action"], run_onnx(tmp_path / "best.onnx", obs)["action"])


def test_metadata(tmp_path):
    model = tiny_plain_model(DQN, True, "CnnPolicy")
    path = export_onnx(model, tmp_path / "model.onnx", outputs=["q_values"], channels_last=True)
    metadata = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    assert metadata["sb3_distill.algorithm"] == "DQN"
    assert metadata["sb3_distill.input"] == "obs: uint8 (batch, 36, 36, 1)"
    assert metadata["sb3_distill.outputs"] == "action, q_values"
    assert metadata["sb3_distill.preprocessing"] == "channels-last to channels-first, divide by 255"


def test_unsupported(tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="Dict observation"):
        export_onnx(PPO("MultiInputPolicy", SimpleMultiObsEnv(), n_steps=16, batch_size=16), path)
    with pytest.raises(ValueError, match="Recurrent"):
        export_onnx(RecurrentPPO("MlpLstmPolicy", "CartPole-v1", n_steps=16), path)
    with pytest.raises(ValueError, match="MultiCategoricalDistribution"):
        export_onnx(PPO("MlpPolicy", IdentityEnvMultiDiscrete(dim=2), n_steps=16, batch_size=16), path)
    with pytest.raises(ValueError, match="Cannot export a MaskableActorCriticPolicy"):
        export_onnx(MaskablePPO("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16), path)
    assert not path.exists()


def test_bad_arguments(tmp_path):
    path = tmp_path / "model.onnx"
    dqn = DQN("MlpPolicy", "CartPole-v1", buffer_size=100)
    with pytest.raises(TypeError, match="`model`"):
        export_onnx("model.zip", path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`outputs` must be distinct names among \['q_values'\]"):
        export_onnx(dqn, path, outputs=["value"])
    with pytest.raises(ValueError, match="`outputs`"):
        export_onnx(dqn, path, outputs=["q_values", "q_values"])
    with pytest.raises(TypeError, match="`outputs`"):
        export_onnx(dqn, path, outputs="q_values")
    with pytest.raises(ValueError, match="`outputs` 'logits' needs a Discrete"):
        export_onnx(PPO("MlpPolicy", "Pendulum-v1"), path, outputs=["logits"])
    with pytest.raises(ValueError, match="`member` is only for sb3_distill models"):
        export_onnx(dqn, path, member="student")
    with pytest.raises(ValueError, match="`member` must be one of"):
        export_onnx(RealTimeDistillDQN("MlpPolicy", "CartPole-v1", buffer_size=100), path, member="student_3")
    with pytest.raises(ValueError, match="`channels_last=True` needs an image"):
        export_onnx(dqn, path, channels_last=True)
    with pytest.raises(TypeError, match="`vec_normalize`"):
        export_onnx(dqn, path, vec_normalize=42)  # type: ignore[arg-type]
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    with pytest.raises(ValueError, match=r"`vec_normalize` has statistics of shape \(3,\)"):
        export_onnx(dqn, path, vec_normalize=venv)
    for opset_version in (True, 12, 17.0):
        with pytest.raises(ValueError, match="`opset_version`"):
            export_onnx(dqn, path, opset_version=opset_version)  # type: ignore[arg-type]
    assert not path.exists()


def test_demo_deployment_report(tmp_path):
    # The end of `make demo` (examples/demo.py), on an untrained model
    from examples.demo import deployment_report

    model = EnsembleDistillDQN(
        "MlpPolicy", "CartPole-v1", n_teachers=2, buffer_size=100, policy_kwargs=dict(net_arch=[16]), seed=0
    )
    lines = deployment_report(model, tmp_path / "student.onnx", n_calls=20)
    assert lines[0].endswith("its actions equal model.predict's: True")
    assert (tmp_path / "student.onnx").is_file() and (tmp_path / "student_teacher.onnx").is_file()
    assert len(lines) == 6 and lines[-1].startswith("Deployed student (ONNX) vs a teacher (SB3 predict): ")


@pytest.mark.parametrize("algo,env_id", [(DQN, "CartPole-v1"), (SAC, "Pendulum-v1")])
def test_onnx_predictor(algo, env_id, tmp_path):
    model = algo("MlpPolicy", env_id, buffer_size=100, policy_kwargs=dict(net_arch=[16]), seed=0)
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "model.onnx"))
    obs = sample_obs(model, 4)
    # One observation or a batch, as SB3's predict
    for observation in (obs, obs[0], obs.astype(np.float64)):
        actions, state = predictor.predict(observation)
        expected, _ = model.predict(observation, deterministic=True)
        assert actions.shape == expected.shape and state is None
        np.testing.assert_allclose(actions, expected, atol=ATOL, rtol=0)
    # The deployed file scores what the model scores
    env = Monitor(gym.make(env_id, max_episode_steps=50))
    scores = []
    for agent in (predictor, model):
        env.reset(seed=0)
        scores.append(evaluate_policy(agent, env, n_eval_episodes=2, deterministic=True))  # type: ignore[arg-type]
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)
    with pytest.raises(ValueError, match="`deterministic` must be True"):
        predictor.predict(obs, deterministic=False)
    with pytest.raises(ValueError, match="`n_threads`"):
        OnnxPredictor(tmp_path / "model.onnx", n_threads=0)


def test_policy_distillation_normalized_teacher(tmp_path):
    # A teacher trained in a VecNormalize env: PolicyDistillation.predict takes raw observations, so does the graph
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False, clip_obs=2.0)
    venv.obs_rms.mean, venv.obs_rms.var = np.array([0.5, -0.3, 2.0]), np.array([0.04, 0.25, 9.0])
    teacher = PPO("MlpPolicy", venv, policy_kwargs=dict(net_arch=[16]), seed=0)
    model = PolicyDistillation(
        "MlpPolicy", "Pendulum-v1", teacher=teacher, buffer_size=100, student_policy_kwargs=dict(net_arch=[8]), seed=0
    )
    assert model.teacher_preprocessing.normalizes
    path = export_onnx(model, tmp_path / "student.onnx")
    raw_obs = np.random.default_rng(0).normal(scale=3.0, size=(16, 3)).astype(np.float32)
    assert_actions_match(model, path, raw_obs)
    assert (
        "VecNormalize" in {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}["sb3_distill.preprocessing"]
    )
    with pytest.raises(ValueError, match="`vec_normalize` must be None for a PolicyDistillation"):
        export_onnx(model, tmp_path / "twice.onnx", vec_normalize=venv)
