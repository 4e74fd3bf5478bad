"""
SB3's contracts, for every algorithm (modelled on SB3's and sb3-contrib's test_run.py, test_save_load.py,
test_predict.py and test_spaces.py): run, multi-env, seeding, exact save/load of every member and optimizer,
get/set_parameters, load with overrides, replay buffer, predict shapes and dtypes per supported space, training
and evaluation modes, callbacks, VecNormalize, images normalised or not, unsupported spaces and features.
PolicyDistillation and DistillPPO run with an untrained teacher (tests/models.py): the contracts do not need a good
one. DistillPPO is on-policy: the replay-buffer contracts do not apply to it (skipped, saying so), and its
``train()`` takes no arguments. MultiTaskPolicyDistillation runs on two tasks (CartPole-v1 and Acrobot-v1, one env
each) with untrained teachers; its observations are the multi-task env's ``Dict`` (``{"obs", "task"}``), so the
contracts sample them from the model's observation space and step its env; an env given to it becomes its one task.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiDiscrete, SimpleMultiObsEnv
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_distill import (
    PIEKDSAC,
    DistillPPO,
    EnsembleDistillDQN,
    MultiTaskPolicyDistillation,
    PolicyDistillation,
    RealTimeDistillDQN,
)
from sb3_distill.common.teachers import load_teacher
from sb3_distill.common.torch_layers import CompactNatureCNN
from sb3_distill.common.validation import UnsupportedSpaceError
from tests.helpers import assert_observations_equal, assert_optimizer_states_equal, sample_observations
from tests.models import (
    BOX_ONLY,
    DISCRETE_ONLY,
    MODEL_LIST,
    MULTI_TASK,
    ON_POLICY,
    BoxActionEnv,
    default_env_id,
    image_env,
    make_env,
    make_model,
    untrained_ppo_teacher,
    untrained_teacher,
)


def recursive_getattr(obj, name: str):
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def same_policy_weights(first, second) -> bool:
    first_state, second_state = first.policy.state_dict(), second.policy.state_dict()
    return first_state.keys() == second_state.keys() and all(th.equal(first_state[k], second_state[k]) for k in first_state)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_run(model_class):
    model = make_model(model_class)
    model.learn(150)
    assert model._n_updates > 0 and model.num_timesteps == 150


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_multi_env(model_class):
    env = DummyVecEnv([lambda: gym.make(default_env_id(model_class))] * 2)
    model = make_model(model_class, env=env)
    model.learn(150)
    assert model._n_updates > 0 and model.num_timesteps >= 150


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_seeding(model_class):
    # The same seed gives the same training, bit for bit; another seed does not
    models = [make_model(model_class, seed=seed).learn(120) for seed in (3, 3, 4)]
    assert same_policy_weights(models[0], models[1])
    assert not same_policy_weights(models[0], models[2])


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_save_load_exact(model_class, tmp_path):
    model = make_model(model_class).learn(150)
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip", env=make_env(model_class))
    # Every member: the policy's state dict holds every network (teachers, students, members, targets)
    assert same_policy_weights(model, loaded)
    # Every optimizer, and the other PyTorch variables (PIEKDSAC's entropy coefficients)
    state_dicts, variables = model._get_torch_save_params()
    for name in state_dicts:
        if name != "policy":
            assert_optimizer_states_equal(recursive_getattr(model, name), recursive_getattr(loaded, name))
    for name in variables:
        assert th.equal(recursive_getattr(model, name), recursive_getattr(loaded, name))
    obs = sample_observations(model.observation_space, 5)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.num_timesteps == model.num_timesteps and loaded._n_updates == model._n_updates
    # Training continues from the loaded state
    loaded.learn(60, reset_num_timesteps=False)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_get_set_parameters(model_class):
    model = make_model(model_class)
    params = model.get_parameters()
    # Every entry of the policy is a float tensor (SB3's round trips perturb them all)
    assert all(value.is_floating_point() for value in params["policy"].values())
    perturbed = {"policy": {key: value + 1.0 for key, value in params["policy"].items()}}
    model.set_parameters(perturbed, exact_match=False)
    for key, value in model.policy.state_dict().items():
        assert th.equal(value, perturbed["policy"][key])
    # exact_match=True accepts what get_parameters gives, and rejects a missing object
    model.set_parameters(params, exact_match=True)
    assert all(th.equal(value, params["policy"][key]) for key, value in model.policy.state_dict().items())
    with pytest.raises(ValueError):
        model.set_parameters(perturbed, exact_match=True)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_load_with_overrides(model_class, tmp_path):
    make_model(model_class).save(tmp_path / "model")
    # The third override changes when training happens: `learning_starts`, or the rollout length (on-policy)
    when = dict(n_steps=20) if model_class in ON_POLICY else dict(learning_starts=10)
    loaded = model_class.load(tmp_path / "model", env=make_env(model_class), learning_rate=5e-4, batch_size=10, **when)
    assert loaded.batch_size == 10 and loaded.lr_schedule(1.0) == pytest.approx(5e-4)
    loaded.learn(40)
    assert loaded._n_updates > 0
    if model_class in ON_POLICY:
        # The rollout buffer is rebuilt with the new length
        assert loaded.n_steps == 20 and loaded.rollout_buffer.buffer_size == 20 and loaded.num_timesteps == 40


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_replay_buffer(model_class, tmp_path):
    if model_class in ON_POLICY:
        pytest.skip("on-policy: no replay buffer")
    model = make_model(model_class).learn(100)
    model.save_replay_buffer(tmp_path / "buffer")
    loaded = make_model(model_class)
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    for name in ("observations", "actions", "rewards", "dones", "next_observations"):
        assert_observations_equal(getattr(loaded.replay_buffer, name), getattr(model.replay_buffer, name))
    assert loaded.replay_buffer.pos == model.replay_buffer.pos
    loaded.learn(60)


# (env factory, its name) for the action spaces each algorithm supports
DISCRETE_ENVS = [(lambda: gym.make("CartPole-v1"), "CartPole"), (lambda: IdentityEnv(4), "IdentityDiscrete")]
BOX_ENVS = [
    (lambda: gym.make("Pendulum-v1"), "Pendulum"),
    (lambda: IdentityEnvBox(ep_length=20), "IdentityBox"),
    (lambda: BoxActionEnv((2, 2)), "Box(2,2)"),
    (lambda: BoxActionEnv((2, 1, 3)), "Box(2,1,3)"),
]
PREDICT_CASES = [
    pytest.param(model_class, make_env, id=f"{model_class.__name__}-{name}")
    for model_class in MODEL_LIST
    for make_env, name in (DISCRETE_ENVS if model_class not in BOX_ONLY else [])
    + (BOX_ENVS if model_class not in DISCRETE_ONLY else [])
    # The tasks of MultiTaskPolicyDistillation have Box observations (IdentityEnv's are Discrete: refused, tested
    # in test_unsupported_observation_space)
    if not (model_class in MULTI_TASK and name == "IdentityDiscrete")
]


@pytest.mark.parametrize("model_class, make_env", PREDICT_CASES)
def test_predict_shapes_and_dtypes(model_class, make_env):
    env = make_env()
    # Learn past `learning_starts`, so that the algorithm's own actions (not random ones) reach the env
    model = make_model(model_class, env=env).learn(80)
    action_space = model.action_space
    # What predict() takes: the env's observations (the multi-task env's Dict for MULTI_TASK)
    obs = model.observation_space.sample()
    for deterministic in (True, False):
        action, state = model.predict(obs, deterministic=deterministic)
        assert state is None and action.shape == action_space.shape and action_space.contains(action)
        batch = {key: np.stack([value] * 5) for key, value in obs.items()} if isinstance(obs, dict) else np.stack([obs] * 5)
        actions, _ = model.predict(batch, deterministic=deterministic)
        assert actions.shape == (5, *action_space.shape)
        assert all(action_space.contains(a) for a in actions)
        if isinstance(action_space, spaces.Discrete):
            assert np.issubdtype(actions.dtype, np.integer)
        else:
            assert actions.dtype == action_space.dtype
    # With a VecEnv, as SB3's evaluate_policy calls it
    vec_env = model.get_env() if model_class in MULTI_TASK else DummyVecEnv([make_env])
    actions, _ = model.predict(vec_env.reset(), deterministic=True)
    vec_env.step(actions)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_train_and_eval_modes(model_class):
    model = make_model(model_class).learn(80)
    model.predict(model.observation_space.sample())
    # predict() puts the policy in evaluation mode, train() in training mode (batch norm, dropout)
    assert not model.policy.training
    if model_class in ON_POLICY:
        model.train()  # on the last rollout
    else:
        model.train(gradient_steps=1, batch_size=8)
    assert model.policy.training
    model.policy.set_training_mode(False)
    assert not any(module.training for module in model.policy.modules() if len(list(module.parameters())) > 0)


class CountingCallback(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.calls = {"training_start": 0, "step": 0, "rollout_end": 0, "training_end": 0}

    def _on_training_start(self) -> None:
        self.calls["training_start"] += 1

    def _on_step(self) -> bool:
        self.calls["step"] += 1
        return True

    def _on_rollout_end(self) -> None:
        self.calls["rollout_end"] += 1

    def _on_training_end(self) -> None:
        self.calls["training_end"] += 1


class StopAt(BaseCallback):
    def _on_step(self) -> bool:
        return self.num_timesteps < 70


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_callbacks(model_class, tmp_path):
    model = make_model(model_class)
    # Callbacks count calls, one per step of all the envs (MultiTaskPolicyDistillation: one env per task)
    n_envs = model.n_envs
    counting = CountingCallback()
    checkpoint = CheckpointCallback(save_freq=50 // n_envs, save_path=str(tmp_path), save_replay_buffer=True)
    evaluation = EvalCallback(make_env(model_class), eval_freq=100 // n_envs, n_eval_episodes=1, warn=False)
    model.learn(120, callback=CallbackList([counting, checkpoint, evaluation]))
    assert counting.calls["training_start"] == 1 and counting.calls["training_end"] == 1
    assert counting.calls["step"] == 120 // n_envs and counting.calls["rollout_end"] > 0
    assert evaluation.n_calls == 120 // n_envs and np.isfinite(evaluation.last_mean_reward)
    checkpoints = sorted(path.name for path in tmp_path.glob("rl_model_*_steps.zip"))
    assert checkpoints == ["rl_model_100_steps.zip", "rl_model_50_steps.zip"]
    model_class.load(tmp_path / "rl_model_100_steps.zip")
    # A callback that returns False stops training
    model = make_model(model_class).learn(500, callback=StopAt())
    assert model.num_timesteps == 70


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_vec_normalize(model_class, tmp_path):
    env = VecNormalize(DummyVecEnv([lambda: gym.make(default_env_id(model_class))] * 2), gamma=0.99)
    if model_class is DistillPPO:
        # The student sees what the teacher saw: a teacher trained with VecNormalize needs an env with its
        # statistics, frozen (DistillPPO refuses a VecNormalize still learning them)
        teacher = untrained_ppo_teacher(env).learn(64)
        with pytest.raises(ValueError, match="frozen statistics"):
            make_model(model_class, env=env, teacher=teacher)
        statistics = env.obs_rms.mean.copy(), env.obs_rms.var.copy()
        env = load_teacher(teacher).preprocessing.vec_normalize(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2))
        model = make_model(model_class, env=env, teacher=teacher).learn(150)
        assert model.get_vec_normalize_env() is env and not env.training
        np.testing.assert_array_equal(env.obs_rms.mean, statistics[0])
        np.testing.assert_array_equal(env.obs_rms.var, statistics[1])
    elif model_class in MULTI_TASK:
        # A task's teacher trained with VecNormalize: the multi-task env applies its frozen statistics itself, so
        # the task's env is given without VecNormalize (refused, clearly, with it: it would normalise twice)
        teacher = untrained_teacher(env).learn(64)
        with pytest.raises(ValueError, match="pass the env without VecNormalize"):
            make_model(model_class, env=env, teacher=teacher)
        model = make_model(model_class, env=DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2), teacher=teacher)
        model.learn(150)
        preprocessing = model.teacher_preprocessings[0]
        np.testing.assert_array_equal(preprocessing.obs_mean, env.obs_rms.mean)
        raw = np.stack([gym.make("CartPole-v1").observation_space.sample() for _ in range(4)])
        np.testing.assert_allclose(model.env.process(0, raw), env.normalize_obs(raw), rtol=1e-6)
    else:
        model = make_model(model_class, env=env).learn(150)
        assert model.get_vec_normalize_env() is env and env.obs_rms.count > 100
    assert model._n_updates > 0
    env.save(str(tmp_path / "vec_normalize.pkl"))
    VecNormalize.load(str(tmp_path / "vec_normalize.pkl"), DummyVecEnv([lambda: gym.make(default_env_id(model_class))]))


IMAGE_MODELS = [EnsembleDistillDQN, RealTimeDistillDQN, PolicyDistillation, DistillPPO, MultiTaskPolicyDistillation]
CNN_KWARGS = {
    MultiTaskPolicyDistillation: dict(
        student_policy_kwargs=dict(
            features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4)
        )
    ),
    EnsembleDistillDQN: dict(student_policy_kwargs=dict(features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4))),
    RealTimeDistillDQN: dict(students=[dict(features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4))]),
    PolicyDistillation: dict(student_policy_kwargs=dict(features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4))),
    DistillPPO: {},
}


@pytest.mark.parametrize("model_class", IMAGE_MODELS)
@pytest.mark.parametrize("normalized", [False, True])
def test_image_inputs(model_class, normalized, tmp_path):
    env = image_env(normalized=normalized)
    # Pre-normalized float images: `normalize_images=False` (SB3's NatureCNN then skips its uint8 checks)
    network = dict(normalize_images=not normalized, features_extractor_kwargs=dict(features_dim=8))
    if model_class in ON_POLICY:
        kwargs = dict(n_steps=10, batch_size=5, n_epochs=1)
    else:
        kwargs = dict(CNN_KWARGS[model_class], learning_starts=10, batch_size=4, buffer_size=100)
    if model_class in (PolicyDistillation, MultiTaskPolicyDistillation):
        kwargs["teacher"] = DQN("CnnPolicy", env, policy_kwargs=network, buffer_size=10)
    else:
        kwargs["policy_kwargs"] = network
    if model_class is MultiTaskPolicyDistillation:
        # The student's trunk is described on its own (the teacher's `normalize_images` is not copied onto it)
        kwargs["student_policy_kwargs"] = dict(kwargs["student_policy_kwargs"], normalize_images=not normalized)
    if model_class is DistillPPO:
        # The student has its own (SB3 NatureCNN) network, the teacher the same layout
        kwargs["teacher"] = PPO("CnnPolicy", env, policy_kwargs=network, n_steps=10, batch_size=5)
    model = make_model(model_class, env=env, policy="CnnPolicy", **kwargs).learn(30)
    obs = np.stack([env.observation_space.sample() for _ in range(3)])
    # MultiTaskPolicyDistillation: one task's raw images, with `task` (the env given is its one task, "task")
    predict_kwargs = dict(task="task") if model_class in MULTI_TASK else {}
    actions, _ = model.predict(obs, deterministic=True, **predict_kwargs)
    assert actions.shape == (3,)
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True, **predict_kwargs)[0], actions)


def test_compact_nature_cnn_is_a_nature_cnn():
    # SB3 passes `normalized_image=True` to NatureCNN and its subclasses when `normalize_images=False`
    env = image_env(normalized=True)
    policy = DQN("CnnPolicy", env, policy_kwargs=dict(features_extractor_class=CompactNatureCNN, normalize_images=False))
    assert isinstance(policy.q_net.features_extractor, CompactNatureCNN)
    assert policy.policy.features_extractor_kwargs["normalized_image"] is True


def test_piekd_sac_rejects_images():
    with pytest.raises(ValueError, match="FlattenExtractor"):
        make_model(PIEKDSAC, env=image_env(discrete=False), policy_kwargs=dict(features_extractor_class=CompactNatureCNN))


UNSUPPORTED = [
    (EnsembleDistillDQN, lambda: gym.make("Pendulum-v1")),
    (EnsembleDistillDQN, lambda: IdentityEnvMultiDiscrete(2)),
    (RealTimeDistillDQN, lambda: gym.make("Pendulum-v1")),
    (PIEKDSAC, lambda: gym.make("CartPole-v1")),
    (PIEKDSAC, lambda: IdentityEnvMultiDiscrete(2)),
    (PolicyDistillation, lambda: IdentityEnvMultiDiscrete(2)),
    (DistillPPO, lambda: IdentityEnvMultiDiscrete(2)),
]


@pytest.mark.parametrize("model_class, make_env", UNSUPPORTED)
def test_unsupported_action_space(model_class, make_env):
    env = make_env()
    kwargs = {}
    if model_class is PolicyDistillation:
        kwargs["teacher"] = untrained_teacher("CartPole-v1")
    if model_class is DistillPPO:
        # A teacher in the same (MultiDiscrete) spaces: PPO supports them, DistillPPO does not
        kwargs["teacher"] = untrained_ppo_teacher(env)
    # An AssertionError, as SB3's check of `supported_action_spaces` (code written against SB3 catches it)
    with pytest.raises(AssertionError) as error:
        model_class("MlpPolicy", env, **kwargs)
    if model_class is not PolicyDistillation:
        assert isinstance(error.value, UnsupportedSpaceError) and isinstance(error.value, ValueError)
        assert "action space" in str(error.value)


def test_multitask_unsupported_spaces():
    # MultiTaskPolicyDistillation's own checks: every task needs Discrete actions and Box observations
    with pytest.raises(ValueError, match="supports Discrete actions only"):
        make_model(MultiTaskPolicyDistillation, env="Pendulum-v1")  # a SAC teacher
    with pytest.raises(ValueError, match=r"is not supported\. Supported teachers"):
        make_model(
            MultiTaskPolicyDistillation,
            env=IdentityEnvMultiDiscrete(2),
            teacher=untrained_ppo_teacher(IdentityEnvMultiDiscrete(2)),
        )
    with pytest.raises(ValueError, match="Box observations only"):
        make_model(MultiTaskPolicyDistillation, env=IdentityEnv(4))


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_gsde_unsupported(model_class):
    # gSDE: PIEKDSAC and DistillPPO keep SAC's / PPO's argument and reject it clearly; the others do not take it
    if model_class in (PIEKDSAC, DistillPPO):
        with pytest.raises(ValueError, match="`use_sde=True` is not supported"):
            make_model(model_class, env="Pendulum-v1", use_sde=True)
    else:
        with pytest.raises(TypeError, match="use_sde"):
            make_model(model_class, use_sde=True)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_device(model_class):
    model = make_model(model_class)
    assert all(param.device.type == get_device("auto").type for param in model.policy.parameters())


def test_dict_observations(tmp_path):
    # PolicyDistillation supports Dict observations (MultiInputPolicy, as its teachers)
    env = SimpleMultiObsEnv(random_start=False)
    teacher = DQN("MultiInputPolicy", env, policy_kwargs=dict(net_arch=[32]), buffer_size=100)
    model = make_model(PolicyDistillation, env=env, policy="MultiInputPolicy", teacher=teacher, learning_starts=20).learn(60)
    obs = env.observation_space.sample()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == () and model.action_space.contains(int(action))
    actions, _ = model.predict({key: np.stack([value] * 3) for key, value in obs.items()}, deterministic=True)
    assert actions.shape == (3,)
    model.save(tmp_path / "model.zip")
    loaded = PolicyDistillation.load(tmp_path / "model.zip")
    assert int(loaded.predict(obs, deterministic=True)[0]) == int(action)


@pytest.mark.parametrize("model_class", [EnsembleDistillDQN, RealTimeDistillDQN, PIEKDSAC])
def test_dict_observations_unsupported(model_class):
    # The stacked members take flat or image observations only: SB3's clear errors
    env = SimpleMultiObsEnv(random_start=False, discrete_actions=model_class is not PIEKDSAC)
    with pytest.raises(ValueError, match="MultiInputPolicy"):
        model_class("MlpPolicy", env)
    with pytest.raises(ValueError, match="Policy MultiInputPolicy unknown"):
        model_class("MultiInputPolicy", env)
