"""
The fast gradient step of the DQN distillers (EnsembleDistillDQN, RealTimeDistillDQN): the compiled step gives the
eager step's updates, the direct fused-Adam call gives ``optimizer.step()``'s, the out-of-place per-member
clipping gives the in-place one's, and the caches behind them follow the policy.
"""

import copy
import warnings

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_distill import EnsembleDistillDQN, RealTimeDistillDQN
from sb3_distill.common.utils import FusedAdamStep, clip_grad_norm_per_member_, clipped_per_member, set_training_flag

MODEL_LIST = [EnsembleDistillDQN, RealTimeDistillDQN]
TINY = {
    EnsembleDistillDQN: dict(n_teachers=2, student_policy_kwargs=dict(net_arch=[8])),
    RealTimeDistillDQN: dict(students=[dict(net_arch=[8]), dict(net_arch=[4])], stack_teacher=True),
}


def tiny_model(model_class, policy="MlpPolicy", env="CartPole-v1", **kwargs):
    config = dict(
        learning_starts=40,
        batch_size=16,
        buffer_size=500,
        target_update_interval=50,
        train_freq=2,
        learning_rate=1e-3,
        policy_kwargs=dict(net_arch=[16]),
        seed=0,
        **TINY[model_class],
    )
    config.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model_class(policy, env, **config)


def trained_state(model, n_steps=6):
    """The policy's and optimizers' state after ``n_steps`` gradient steps on a fixed stream of batches."""
    # Fill the replay buffer with random actions only (before learning_starts: no update yet)
    model.learn(model.learning_starts)
    assert model._n_updates == 0
    np.random.seed(0)
    model.train(gradient_steps=n_steps, batch_size=16)
    optimizers = dict.fromkeys([model.policy.optimizer, model.policy.student_optimizer])
    return model.policy.state_dict(), [optimizer.state_dict() for optimizer in optimizers]


def assert_states_close(first, second, atol):
    (policy_a, optimizers_a), (policy_b, optimizers_b) = first, second
    for key, value in policy_a.items():
        assert th.allclose(value, policy_b[key], atol=atol), key
    for state_a, state_b in zip(optimizers_a, optimizers_b, strict=True):
        for index, param_state in state_a["state"].items():
            for name, value in param_state.items():
                assert th.allclose(value, state_b["state"][index][name], atol=atol), (index, name)


@pytest.mark.parametrize(
    "model_class",
    # About a minute of compilation each on a 2-core CPU: one in the fast suite, the other with `make test-slow`
    [EnsembleDistillDQN, pytest.param(RealTimeDistillDQN, marks=pytest.mark.slow)],
)
def test_compiled_step_matches_eager(model_class):
    # Different learning rates for teachers and students: the stacked teacher's students are rescaled
    kwargs = dict(student_learning_rate=3e-3)
    eager = trained_state(tiny_model(model_class, **kwargs))
    model = tiny_model(model_class, torch_compile=True, **kwargs)
    with warnings.catch_warnings():
        # A compilation that failed would fall back to eager mode with this warning: not here
        warnings.filterwarnings("error", message=".*`torch_compile=.*` failed")
        compiled = trained_state(model)
    assert model._compiled_gradient_step is not None and not model._compile_failed
    # The parameters moved, and by what eager mode moves them
    initial = tiny_model(model_class).policy.state_dict()
    assert any(not th.equal(initial[key], value) for key, value in compiled[0].items())
    assert_states_close(eager, compiled, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_compiled_cnn_step_matches_eager(model_class):
    # Stacked grouped convolutions (the ensemble's teachers) and a teacher outside the students' stack (the MinAtar
    # benchmark's real-time setting), on MinAtar images
    from benchmarks.minatar import OPTIMIZER, env_id, network

    kwargs = dict(policy_kwargs=dict(**network(16, 32), **OPTIMIZER))
    if model_class is RealTimeDistillDQN:
        kwargs.update(students=[network(4, 18), network(2, 16)], stack_teacher=False)
    else:
        kwargs.update(student_policy_kwargs=network(4, 18), n_teachers=3)

    def make(torch_compile):
        return tiny_model(model_class, policy="CnnPolicy", env=env_id("Breakout"), torch_compile=torch_compile, **kwargs)

    eager = trained_state(make(False))
    model = make(True)
    compiled = trained_state(model)
    assert model._compiled_gradient_step is not None and not model._compile_failed
    assert_states_close(eager, compiled, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_class", MODEL_LIST)
@pytest.mark.parametrize("torch_compile", [False, True])
def test_cuda_step_matches_cpu(model_class, torch_compile):
    # The eager CPU step is the reference (the fused CUDA kernels and cuBLAS round differently)
    cpu = trained_state(tiny_model(model_class))
    cuda = trained_state(tiny_model(model_class, device="cuda", torch_compile=torch_compile))
    policy, optimizers = cuda
    on_cpu = {key: value.cpu() for key, value in policy.items()}, [
        {"state": {index: {name: value.cpu() for name, value in state.items()} for index, state in opt["state"].items()}}
        for opt in optimizers
    ]
    assert_states_close(cpu, on_cpu, atol=1e-4)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_failed_compilation_falls_back_to_eager(model_class, monkeypatch):
    def broken_compile(function):
        def fails(*args):
            raise RuntimeError("no compiler")

        return fails

    eager = trained_state(tiny_model(model_class))
    monkeypatch.setattr(th, "compile", broken_compile)
    model = tiny_model(model_class, torch_compile=True)
    with pytest.warns(UserWarning, match="`torch_compile=True` failed"):
        fallback = trained_state(model)
    assert model._compiled_gradient_step is None and model._compile_failed
    assert_states_close(eager, fallback, atol=0)
    # One warning: no new attempt at the next learn() call
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*`torch_compile=.*` failed")
        model.learn(20, reset_num_timesteps=False)


def spy_on_compiled_step(model):
    """Replace the compiled step by the eager one (no compilation in this test), counting its calls."""
    calls = []

    def spy(*batch):
        calls.append(1)
        return model._losses_and_gradients(*batch)

    model._compiled_gradient_step = spy
    return calls


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_auto_compiles_long_learn_calls_only(model_class, monkeypatch):
    from sb3_distill.common import distill_dqn

    model = tiny_model(model_class)
    assert model.torch_compile == "auto"
    calls = spy_on_compiled_step(model)
    # 200 steps, 40 of warm-up, train_freq 2: 80 gradient steps, fewer than the threshold: eager
    assert model._expected_gradient_steps(200, reset_num_timesteps=True) == 80
    model.learn(200)
    assert model._n_updates == 80 and not calls and not model._compile_active
    # A threshold below the call's 80 expected steps: every gradient step of the call is the compiled one
    monkeypatch.setattr(distill_dqn, "AUTO_COMPILE_MIN_GRADIENT_STEPS", 80)
    model.learn(160, reset_num_timesteps=False)
    assert len(calls) == 80 and model._compile_active
    # The decision is remade at each call; train() outside learn() follows the last call's
    monkeypatch.setattr(distill_dqn, "AUTO_COMPILE_MIN_GRADIENT_STEPS", 10_000)
    model.learn(160, reset_num_timesteps=False)
    assert len(calls) == 80 and not model._compile_active


def test_compiling_keeps_distribution_checks():
    # The first torch.compile of a process turns torch.distributions' validation off for the whole process:
    # SB3's SAC and PPO would then no longer stop on a NaN action mean
    from sb3_distill.common.distill_dqn import compile_keeping_distribution_checks

    Distribution = th.distributions.Distribution
    assert Distribution._validate_args
    compiled = compile_keeping_distribution_checks(lambda x: x * 2)
    assert Distribution._validate_args and th.equal(compiled(th.ones(2)), th.full((2,), 2.0))
    Distribution.set_default_validate_args(False)
    try:
        compile_keeping_distribution_checks(lambda x: x)
        assert not Distribution._validate_args
    finally:
        Distribution.set_default_validate_args(True)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_expected_gradient_steps_follow_sb3_train_schedule(model_class):
    # gradient_steps=-1: as many gradient steps as environment steps collected
    model = tiny_model(model_class, gradient_steps=-1, train_freq=4, learning_starts=100)
    assert model._expected_gradient_steps(1100, reset_num_timesteps=True) == 1000
    model.num_timesteps = 60
    assert model._expected_gradient_steps(1100, reset_num_timesteps=False) == 1060
    model = tiny_model(model_class, gradient_steps=3, train_freq=4, learning_starts=0)
    assert model._expected_gradient_steps(400, reset_num_timesteps=True) == 300
    model.learn(400)
    assert model._n_updates == 300


@pytest.mark.parametrize("model_class", MODEL_LIST)
@pytest.mark.parametrize("torch_compile", [True, False])
def test_torch_compile_true_and_false_ignore_the_call_length(model_class, torch_compile):
    model = tiny_model(model_class, torch_compile=torch_compile)
    if torch_compile:
        calls = spy_on_compiled_step(model)
    model.learn(100)
    assert model._compile_active is torch_compile
    if torch_compile:
        assert len(calls) == model._n_updates > 0
    else:
        assert model._compiled_gradient_step is None


@pytest.mark.parametrize(
    "optimizer_class, kwargs",
    [
        (th.optim.Adam, {}),
        (th.optim.Adam, dict(weight_decay=0.01, betas=(0.8, 0.9), eps=1e-5, maximize=True)),
        (th.optim.AdamW, dict(weight_decay=0.1)),
    ],
)
@pytest.mark.parametrize("student_lr", [1e-2, 3e-2])
def test_fused_adam_step_matches_optimizer_step(optimizer_class, kwargs, student_lr):
    th.manual_seed(0)
    teachers = [th.nn.Parameter(th.randn(3, 4, 5)), th.nn.Parameter(th.randn(3, 5))]
    student = [th.nn.Parameter(th.randn(2, 2))]
    copies = copy.deepcopy(teachers), copy.deepcopy(student)

    def optimizers(teacher_params, student_params):
        return [
            optimizer_class(teacher_params, lr=1e-2, fused=True, **kwargs),
            optimizer_class(student_params, lr=student_lr, fused=True, **kwargs),
        ]

    reference, direct = optimizers(teachers, student), optimizers(*copies)
    step = FusedAdamStep([*direct, direct[0]])
    assert len(step.optimizers) == 2 and all(FusedAdamStep.supports(optimizer) for optimizer in direct)
    for index in range(4):
        gradients = [th.randn_like(param) for param in teachers + student]
        for param, other, gradient in zip(teachers + student, copies[0] + copies[1], gradients, strict=True):
            param.grad, other.grad = gradient.clone(), gradient.clone()
        for optimizer in reference:
            optimizer.step()
        step.step()
        if index == 1:
            # A learning-rate schedule, and a state replaced by load_state_dict: both are followed
            for optimizer in reference + direct:
                optimizer.param_groups[0]["lr"] = 5e-3
            direct[0].load_state_dict(copy.deepcopy(direct[0].state_dict()))
    # Bit for bit the same kernel on the same state
    for param, other in zip(teachers + student, copies[0] + copies[1], strict=True):
        assert th.equal(param, other)
    for optimizer, other in zip(reference, direct, strict=True):
        for state, other_state in zip(optimizer.state.values(), other.state.values(), strict=True):
            assert all(th.equal(state[key], other_state[key]) for key in ("exp_avg", "exp_avg_sq", "step"))
    # The direct call was used (the state tensors it holds are the optimizers' current ones)
    assert len(step._state) == 2


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: th.optim.Adam(params, lr=1e-2),  # not fused
        lambda params: th.optim.SGD(params, lr=1e-2),
        lambda params: th.optim.Adam(params, lr=1e-2, fused=True, amsgrad=True),
    ],
)
def test_fused_adam_step_falls_back_to_optimizer_step(optimizer):
    th.manual_seed(0)
    params = [th.nn.Parameter(th.randn(3, 4))]
    copies = copy.deepcopy(params)
    reference, direct = optimizer(params), optimizer(copies)
    step = FusedAdamStep([direct])
    for _ in range(3):
        gradient = th.randn(3, 4)
        params[0].grad, copies[0].grad = gradient.clone(), gradient.clone()
        reference.step()
        step.step()
    assert th.equal(params[0], copies[0]) and not step._state


@pytest.mark.parametrize("n_members", [1, 3])
def test_clipped_per_member_matches_in_place_clipping(n_members):
    th.manual_seed(0)
    params = [th.nn.Parameter(th.randn(n_members, 4, 3)), th.nn.Parameter(th.randn(n_members, 3))]
    for param, scale in zip(params, (10.0, 0.01), strict=True):
        # Transposed (non-contiguous) gradients, as autograd returns for batched matmuls
        param.grad = (scale * th.randn(*reversed(param.shape))).permute(*reversed(range(param.dim())))
    clipped = clipped_per_member([param.grad for param in params], 1.0, n_members)
    clip_grad_norm_per_member_(params, 1.0, n_members)
    for param, gradient in zip(params, clipped, strict=True):
        assert gradient.is_contiguous() and th.allclose(gradient, param.grad)
    norms = th.linalg.vector_norm(th.cat([g.reshape(n_members, -1) for g in clipped], dim=1), dim=1)
    assert th.allclose(norms, th.ones(n_members), atol=1e-4)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_caches_follow_the_policy(model_class, tmp_path):
    model = tiny_model(model_class)
    model.learn(60)
    stacks = model._parameter_stacks()
    assert [param for stack, _ in stacks for param in stack] == [
        param for module, _ in model._trained_modules() for param in module.parameters()
    ]
    model.save(tmp_path / "model.zip")
    loaded = model_class.load(tmp_path / "model.zip", env=model.get_env())
    # Caches are not saved; the loaded model builds its own, over its own parameters
    assert "_parameter_stacks_cache" not in loaded.__dict__ or loaded._parameter_stacks_cache[0] is loaded.policy
    loaded.learn(20, reset_num_timesteps=False)
    loaded_params = {id(param) for param in loaded.policy.parameters()}
    assert all(id(param) in loaded_params for stack, _ in loaded._parameter_stacks() for param in stack)


class _Collect(KVWriter):
    """A logger output that keeps what each dump wrote."""

    def __init__(self) -> None:
        self.dumps: list[dict] = []

    def write(self, key_values, key_excluded, step=0) -> None:
        self.dumps.append(dict(key_values))


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_diagnostics_are_recorded_when_the_logger_writes(model_class):
    model = tiny_model(model_class)
    output = _Collect()
    model.set_logger(Logger(folder=None, output_formats=[output]))
    model.learn(200, log_interval=1)
    key = "train/agreement_teacher_0" if model_class is EnsembleDistillDQN else "train/agreement_student_0"
    # Every dump after the first update holds the diagnostics, and learn() leaves them in the logger
    dumps_after_training = [dump for dump in output.dumps if "train/loss" in dump]
    assert dumps_after_training and all(key in dump for dump in dumps_after_training)
    assert key in model.logger.name_to_value


def test_set_training_flag_reaches_every_submodule():
    network = th.nn.Sequential(th.nn.Linear(2, 2), th.nn.Sequential(th.nn.Dropout(), th.nn.Linear(2, 2)))
    for mode in (False, True, False):
        set_training_flag([network], mode)
        assert all(module.training is mode for module in network.modules())
    # Deep copies keep their own submodules
    copied = copy.deepcopy(network)
    set_training_flag([copied], True)
    assert all(module.training for module in copied.modules()) and not any(m.training for m in network.modules())
