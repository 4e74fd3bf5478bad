import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_distill import RealTimeDistillDQN
from sb3_distill.common.callbacks import EvalMembersCallback
from sb3_distill.common.losses import distillation_loss, dqn_td_targets
from sb3_distill.common.torch_layers import CompactNatureCNN
from sb3_distill.realtime_distill_dqn import RealTimeDistillDQNPolicy

# Two students with one hidden layer (stacked together, the narrower zero-padded) and one with two
STUDENTS = [dict(net_arch=[8]), dict(net_arch=[4]), dict(net_arch=[8, 8])]


def tiny_model(env="CartPole-v1", **kwargs):
    config = dict(
        learning_starts=50,
        batch_size=16,
        buffer_size=500,
        target_update_interval=50,
        train_freq=2,
        policy_kwargs=dict(net_arch=[16]),
        students=STUDENTS,
        seed=0,
    )
    config.update(kwargs)
    return RealTimeDistillDQN("MlpPolicy", env, **config)


def assert_same_weights(first: th.nn.Module, second: th.nn.Module) -> None:
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for key, value in first_state.items():
        assert th.equal(value, second_state[key]), key


@pytest.mark.parametrize("stack_teacher", [True, False])
def test_students_are_grouped_by_layer_structure(stack_teacher):
    model = tiny_model(stack_teacher=stack_teacher)
    assert model.n_students == 3
    assert model.policy.teacher_in_stack is stack_teacher
    if stack_teacher:
        # The teacher is member 0 of the first stack, with the students of its layer structure
        assert model.policy.student_members == [(0, 1), (0, 2), (1, 0)]
        assert [stack.n_members for stack in model.policy.student_stacks] == [3, 1]
        assert len(list(model.q_net.parameters())) == 0
    else:
        assert model.policy.student_members == [(0, 0), (0, 1), (1, 0)]
        assert [stack.n_members for stack in model.policy.student_stacks] == [2, 1]
    # teacher 4*16+16 + 16*2+2 = 114; students 4*8+8 + 8*2+2 = 58, 4*4+4 + 4*2+2 = 30, 58 + 8*8+8 = 130
    assert model.compression_ratios == {
        "student_0": pytest.approx(58 / 114),
        "student_1": pytest.approx(30 / 114),
        "student_2": pytest.approx(130 / 114),
    }
    # A student whose activation does not map 0 to 0 cannot be zero-padded: it gets its own stack
    # (nor with the ReLU teacher)
    model = tiny_model(
        students=[dict(net_arch=[8], activation_fn=th.nn.Sigmoid), dict(net_arch=[4], activation_fn=th.nn.Sigmoid)],
        stack_teacher=stack_teacher,
    )
    assert model.policy.student_members == [(0, 0), (1, 0)]
    assert not model.policy.teacher_in_stack
    # The layout is the policy's: a learning rate of the students' own does not change it
    assert tiny_model(stack_teacher=stack_teacher, student_learning_rate=1e-3).policy.teacher_in_stack is stack_teacher


@pytest.mark.parametrize("stack_teacher", [True, False])
def test_padded_students_stay_exact(stack_teacher):
    model = tiny_model(stack_teacher=stack_teacher)
    model.learn(200)
    first_layer = model.policy.student_stacks[0].layers[1]
    # student_1 has 4 hidden units, padded to 8 (16 with the teacher): its padding is still exactly zero
    _, member = model.policy.student_members[1]
    assert th.all(first_layer.weight[member, 4:] == 0) and th.all(first_layer.bias[member, 4:] == 0)
    assert th.all(model.policy.student_stacks[0].layers[3].weight[member, :, 4:] == 0)


@pytest.mark.parametrize("distill_loss", ["reverse_kl", "forward_kl", "nll", "mse"])
@pytest.mark.parametrize("imitation", [True, False])
@pytest.mark.parametrize("self_learning_coef", [0.0, 1.0])
def test_run(distill_loss, imitation, self_learning_coef):
    model = tiny_model(distill_loss=distill_loss, imitation=imitation, self_learning_coef=self_learning_coef)
    model.learn(150)
    assert model._n_updates > 0


@pytest.mark.parametrize("stack_teacher", [True, False])
def test_training_changes_every_member_and_target(stack_teacher):
    model = tiny_model(stack_teacher=stack_teacher)
    before = {key: value.clone() for key, value in model.policy.state_dict().items()}
    model.learn(160)
    after = model.policy.state_dict()
    teacher_prefixes = [] if stack_teacher else ["q_net.", "q_net_target."]
    for prefix in [*teacher_prefixes, "student_stacks.0.", "student_stacks.1.", "student_stack_targets.0."]:
        assert any(not th.equal(before[key], after[key]) for key in before if key.startswith(prefix)), prefix
    # every student of a stack moved
    for key in before:
        if key.startswith("student_stacks.0."):
            assert (before[key] - after[key]).flatten(1).abs().sum(dim=1).min() > 0


def test_teacher_acts():
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 3)
    model = tiny_model(env=env, learning_starts=0, exploration_initial_eps=0.0, exploration_final_eps=0.0)
    model._setup_learn(total_timesteps=100)
    actions, buffer_actions = model._sample_action(learning_starts=0, n_envs=3)
    with th.no_grad():
        expected = model.q_net(th.as_tensor(model._last_obs)).argmax(dim=1).numpy()
    assert np.array_equal(actions, expected) and np.array_equal(actions, buffer_actions)


@pytest.mark.parametrize("stack_teacher", [True, False])
def test_student_gradients(stack_teacher):
    """The teacher gets no gradient from the students' losses; self_learning_coef=0 drops the TD loss."""
    model = tiny_model(self_learning_coef=0.0, stack_teacher=stack_teacher)
    model.learn(60)
    data = model.replay_buffer.sample(16)
    stack = model.policy.student_stacks[0]
    for param in model.policy.parameters():
        param.grad = None
    if stack_teacher:
        all_q = stack(data.observations)
        distillation_loss(all_q[1:], all_q[0], loss="reverse_kl", temperature=0.1).backward()
        # The teacher's slice of the stack (member 0) gets exactly zero gradient, the students' do not
        assert all(th.all(p.grad[0] == 0) for p in stack.parameters())
        assert all(p.grad[1:].abs().sum() > 0 for p in stack.parameters())
    else:
        teacher_q = model.q_net(data.observations)
        student_q = stack(data.observations)
        distillation_loss(student_q, teacher_q, loss="reverse_kl", temperature=0.1).backward()
        assert all(p.grad is None for p in model.q_net.parameters())
        assert all(p.grad is not None for p in stack.parameters())
    # One gradient step with self_learning_coef=0 equals a step on the distillation loss alone
    for coef in [0.0, 1.0]:
        with warnings.catch_warnings():
            # distill_coef=0 and self_learning_coef=0 is legal but warned about
            warnings.simplefilter("ignore", UserWarning)
            model = tiny_model(self_learning_coef=coef, distill_coef=0.0, learning_rate=1e-2, stack_teacher=stack_teacher)
        model.learn(60)
        # The students' parameters (without the teacher's slice, member 0 of stack 0, when it is stacked)
        first = 1 if stack_teacher else 0
        before = [p[first:].clone() for p in model.policy.student_stacks[0].parameters()]
        model.train(gradient_steps=1, batch_size=16)
        after = [p[first:] for p in model.policy.student_stacks[0].parameters()]
        moved = any(not th.equal(b, p) for b, p in zip(before, after, strict=True))
        # distill_coef=0 and self_learning_coef=0: the students get no gradient at all
        assert moved == (coef > 0)


@pytest.mark.parametrize("stack_teacher", [True, False])
def test_imitation_target_through_the_model(stack_teacher):
    model = tiny_model(imitation=True, stack_teacher=stack_teacher)
    model.learn(60)
    data = model.replay_buffer.sample(16)
    target_stack = model.policy.student_stack_targets[0]
    with th.no_grad():
        teacher_next = model.q_net_target(data.next_observations)
        student_next = target_stack(data.next_observations)[1 if stack_teacher else 0 :]
    targets = dqn_td_targets(data.rewards, data.dones, model.gamma, student_next, teacher_next)
    # Eq. 5 written out for the first student of the stack
    actions = teacher_next.argmax(dim=1)
    expected = data.rewards[:, 0] + (1 - data.dones[:, 0]) * model.gamma * student_next[0, th.arange(16), actions]
    assert th.allclose(targets[0], expected)


def test_multi_env():
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2)
    model = tiny_model(env=env)
    model.learn(300)
    assert model.num_timesteps >= 300


def test_cnn_policy():
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    students = [
        dict(features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=(2, 2, 2), features_dim=4)),
        dict(features_extractor_class=CompactNatureCNN, features_extractor_kwargs=dict(filters=(4, 2, 2), features_dim=4)),
    ]
    model = RealTimeDistillDQN(
        "CnnPolicy",
        env,
        learning_starts=10,
        batch_size=4,
        buffer_size=100,
        students=students,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16)),
    )
    # Net-like students with different filters and the Nature-CNN teacher: one zero-padded stack
    assert [stack.n_members for stack in model.policy.student_stacks] == [3]
    assert model.policy.teacher_in_stack
    model.learn(40)
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(int(action))


def test_default_cnn_student_is_net3():
    env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=4, discrete=True)
    model = RealTimeDistillDQN("CnnPolicy", env, buffer_size=10)
    assert model.n_students == 1
    assert 0.036 < model.compression_ratios["student_0"] < 0.037


def test_deterministic_with_seed():
    params = []
    for _ in range(2):
        model = tiny_model(seed=3)
        model.learn(150)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    for first, second in zip(*params, strict=True):
        assert th.equal(first, second)


@pytest.mark.parametrize("member", ["teacher", "student_0", "student_1", "student_2"])
def test_predict_member(member):
    model = tiny_model(predict_member=member)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (5,)
    with th.no_grad():
        expected = model.policy.member_q_values(th.as_tensor(obs), member).argmax(dim=1).numpy()
    assert np.array_equal(actions, expected)
    action, _ = model.predict(obs[0], deterministic=True)
    assert action.shape == ()


def test_evaluate_members_and_callback(tmp_path):
    model = tiny_model()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = EvalMembersCallback(Monitor(gym.make("CartPole-v1")), eval_freq=100, n_eval_episodes=2)
    model.learn(200, callback=callback, log_interval=1)
    assert set(callback.last_results) == {"teacher", "student_0", "student_1", "student_2"}
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ["eval/teacher", "eval/student_2", "eval/student_0_to_teachers", "train/distill_loss", "train/student_td_loss"]:
        assert key in header


def test_save_load(tmp_path):
    model = tiny_model(temperature=0.5, imitation=False, self_learning_coef=0.5, predict_member="student_1")
    model.learn(200)
    model.save(tmp_path / "model.zip")
    loaded = RealTimeDistillDQN.load(tmp_path / "model.zip", env=gym.make("CartPole-v1"))
    for name in ["students", "temperature", "imitation", "self_learning_coef", "distill_coef", "predict_member"]:
        assert getattr(loaded, name) == getattr(model, name)
    assert_same_weights(model.policy, loaded.policy)
    for optimizer in ["optimizer", "student_optimizer"]:
        state, loaded_state = getattr(model.policy, optimizer).state_dict(), getattr(loaded.policy, optimizer).state_dict()
        assert len(state["state"]) > 0 and state["state"].keys() == loaded_state["state"].keys()
        for key, values in state["state"].items():
            for name, value in values.items():
                assert th.equal(th.as_tensor(value), th.as_tensor(loaded_state["state"][key][name]))
    obs = np.stack([model.observation_space.sample() for _ in range(10)])
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(100, reset_num_timesteps=False)
    # The policy alone
    model.policy.save(tmp_path / "policy.pth")
    policy = RealTimeDistillDQNPolicy.load(tmp_path / "policy.pth")
    assert_same_weights(model.policy, policy)


def test_save_load_replay_buffer(tmp_path):
    model = tiny_model()
    model.learn(120)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    old_buffer = model.replay_buffer
    model.load_replay_buffer(tmp_path / "buffer.pkl")
    assert model.replay_buffer.pos == old_buffer.pos
    assert np.array_equal(model.replay_buffer.observations, old_buffer.observations)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_export_student(index, tmp_path):
    model = tiny_model()
    model.learn(150)
    exported = model.export_student(index)
    exported.save(tmp_path / "student.zip")
    reloaded = DQN.load(tmp_path / "student.zip")
    obs = np.stack([model.observation_space.sample() * 0.5 for _ in range(50)]).astype(np.float32)
    with th.no_grad():
        expected = model.policy.member_q_values(th.as_tensor(obs), f"student_{index}")
        assert th.allclose(reloaded.q_net(th.as_tensor(obs)), expected, atol=1e-6)
    assert np.array_equal(reloaded.predict(obs, deterministic=True)[0], expected.argmax(dim=1).numpy())
    with pytest.raises(ValueError, match="index"):
        model.export_student(3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(students=[]), ValueError, "students"),
        (dict(students=[dict(net_arch=[4], optimizer_class=th.optim.SGD)]), ValueError, "students"),
        (dict(students=[[4]]), TypeError, "students"),
        (dict(distill_coef=-1.0), ValueError, "distill_coef"),
        (dict(self_learning_coef=-0.5), ValueError, "self_learning_coef"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(distill_loss="kl"), ValueError, "distill_loss"),
        (dict(imitation="yes"), ValueError, "imitation"),
        (dict(torch_compile="yes"), ValueError, "torch_compile"),
        (dict(predict_member="student_3"), ValueError, "predict_member"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_model(**kwargs)


def test_no_learning_warns():
    with pytest.warns(UserWarning, match="will not learn"):
        tiny_model(distill_coef=0.0, self_learning_coef=0.0)


def test_continuous_actions_rejected():
    with pytest.raises(ValueError, match="Discrete"):
        RealTimeDistillDQN("MlpPolicy", "Pendulum-v1")


def test_set_training_mode_switches_every_network_but_the_targets():
    model = tiny_model()
    for mode in (False, True):
        model.policy.set_training_mode(mode)
        assert model.policy.training is mode
        assert all(m.training is mode for m in [*model.q_net.modules(), *model.policy.student_stacks.modules()])
        assert not any(m.training for m in [*model.q_net_target.modules(), *model.policy.student_stack_targets.modules()])


@pytest.mark.parametrize("student_learning_rate", [None, 3e-3])
def test_stacked_teacher_computes_what_separate_networks_compute(student_learning_rate):
    """
    With the same weights and the same batches, the teacher in the students' stack (one forward, backward
    and Adam step) takes exactly the gradient steps of the separate teacher and student stacks, also when
    the students have a learning rate of their own (their updates rescaled after the shared step).
    """
    from sb3_distill.common.torch_layers import StackedQNetwork, make_q_network

    # Fill the buffer without training, so that both optimizers start fresh
    # (a small max_grad_norm, so that the per-member gradient clipping acts)
    config = dict(learning_rate=1e-2, learning_starts=1000, max_grad_norm=0.1, student_learning_rate=student_learning_rate)
    separate = tiny_model(stack_teacher=False, **config)
    stacked = tiny_model(stack_teacher=True, **config)
    separate.learn(100)
    stacked.replay_buffer = separate.replay_buffer
    stacked.set_logger(separate.logger)
    policy = separate.policy
    # Copy the separate networks' weights into the stacked model: stack 0 = [teacher, student_0, student_1]
    for online, stacks, teacher in (
        ("online", policy.student_stacks, policy.q_net),
        ("target", policy.student_stack_targets, policy.q_net_target),
    ):
        students = []
        for index, (stack, member) in enumerate(policy.student_members[:2]):
            network = make_q_network(separate.observation_space, separate.action_space, policy.student_kwargs[index])
            students.append(stacks[stack].copy_member_to(member, network))
        merged = StackedQNetwork.from_q_networks([teacher, *students])
        destination = stacked.policy.student_stacks if online == "online" else stacked.policy.student_stack_targets
        destination[0].load_state_dict(merged.state_dict())
        destination[1].load_state_dict(stacks[1].state_dict())
    obs = separate.replay_buffer.sample(32).observations
    assert th.equal(stacked.q_net(obs), separate.q_net(obs))
    for _ in range(2):
        for model in (separate, stacked):
            np.random.seed(7)
            model.train(gradient_steps=3, batch_size=16)
        assert th.allclose(stacked.q_net(obs), separate.q_net(obs), atol=1e-5)
        for member in ["student_0", "student_1", "student_2"]:
            assert th.allclose(
                stacked.policy.member_q_values(obs, member), separate.policy.member_q_values(obs, member), atol=1e-5
            )
