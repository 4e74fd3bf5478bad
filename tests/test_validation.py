"""Every argument of every algorithm: numbers checked for type, finiteness and range, bools, SB3's `train_freq` and
SAC's strings for type and value, at construction and on load."""

import warnings

import numpy as np
import pytest
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import LinearSchedule

from sb3_distill import (
    PIEKDSAC,
    DistillPPO,
    EnsembleDistillDQN,
    MultiTaskPolicyDistillation,
    PolicyDistillation,
    RealTimeDistillDQN,
)
from sb3_distill.common.validation import (
    STUDENT_LEARNING_RATE,
    ArgumentTypeError,
    CheckedSchedule,
    Choice,
    Flag,
    Number,
    TrainFrequency,
    check_net_arch,
    check_number,
)
from tests.models import MODEL_LIST, ON_POLICY, make_env, make_model

NAN, INF = float("nan"), float("inf")

# Bad values of the arguments every algorithm checks (SB3's own off-policy arguments included)
COMMON_BAD = [
    ("learning_rate", NAN),
    ("learning_rate", -1e-3),
    ("learning_rate", True),
    ("gamma", 1.5),
    ("tau", INF),
    ("batch_size", 0),
    ("batch_size", 16.5),
    ("buffer_size", "500"),
    ("learning_starts", -1),
    ("gradient_steps", -2),
    ("train_freq", -5),
    ("train_freq", 1.5),
    ("train_freq", "4"),
    ("train_freq", (4, "bogus")),
    ("train_freq", (0, "episode")),
    ("train_freq", (4, "step", 1)),
]
# Bad values of SB3's on-policy (PPO) arguments, which SB3 checks only in part, and not when the model is built in
# `_setup_model` (as `load()` does)
ON_POLICY_BAD = [
    ("learning_rate", NAN),
    ("learning_rate", -1e-3),
    ("learning_rate", True),
    ("gamma", 1.5),
    ("gae_lambda", INF),
    ("n_steps", 0),
    ("n_steps", 32.5),
    ("batch_size", "16"),
    ("n_epochs", 0),
    ("clip_range", 0.0),
    ("clip_range", NAN),
    ("clip_range_vf", -0.2),
    ("ent_coef", NAN),
    ("vf_coef", -1.0),
    ("max_grad_norm", 0.0),
    ("target_kl", INF),
    ("normalize_advantage", 1),
    ("sde_sample_freq", -2),
    ("sde_sample_freq", 2.5),
]
# Bad values of each algorithm's own arguments (those the issue found accepted are all here)
OWN_BAD = {
    EnsembleDistillDQN: [
        ("n_teachers", 0),
        ("n_teachers", True),
        ("n_teachers", 2.5),
        ("temperature", INF),
        ("temperature", 0),
        ("student_learning_rate", NAN),
        ("student_learning_rate", INF),
        ("student_learning_rate", -1e-3),
        ("student_learning_rate", True),
        ("max_grad_norm", "10"),
        ("max_grad_norm", NAN),
        ("exploration_final_eps", 1.5),
        ("target_update_interval", 0),
        ("n_steps", 0),
        ("n_steps", NAN),
        ("optimize_memory_usage", "no"),
        ("distill_diagnostics", 1),
    ],
    RealTimeDistillDQN: [
        ("temperature", INF),
        ("distill_coef", NAN),
        ("distill_coef", INF),
        ("distill_coef", -1.0),
        ("self_learning_coef", NAN),
        ("student_learning_rate", NAN),
        ("student_learning_rate", INF),
        ("student_learning_rate", -1e-3),
        ("student_learning_rate", True),
        ("max_grad_norm", "10"),
        ("n_steps", -1),
        ("imitation", "yes"),
        ("stack_teacher", 0),
    ],
    PIEKDSAC: [
        ("ensemble_size", 0),
        ("ensemble_size", True),
        ("ensemble_size", 2.0),
        ("n_recent_episodes", 0),
        ("distill_interval", INF),
        ("distill_epochs", "5"),
        ("distill_batch_size", 0),
        ("distill_learning_rate", NAN),
        ("distill_learning_rate", INF),
        ("distill_learning_rate", 0.0),
        ("target_update_interval", 0),
        ("ent_coef", "bogus"),
        ("ent_coef", "auto_-0.1"),
        ("ent_coef", "auto_nan"),
        ("ent_coef", -0.5),
        ("ent_coef", None),
        ("target_entropy", "bogus"),
        ("target_entropy", NAN),
        ("use_sde_at_warmup", "yes"),
        ("sde_sample_freq", "4"),
        ("n_steps", 0.5),
        ("distill_gradient_steps", 0),
        ("distill_gradient_steps", "all"),
    ],
    PolicyDistillation: [
        ("temperature", INF),
        ("temperature", -1.0),
        ("value_coef", NAN),
        ("value_coef", -1.0),
        ("max_grad_norm", "10"),
        ("max_grad_norm", NAN),
        ("teacher_prob", NAN),
        ("teacher_prob", 1.5),
        ("deterministic_control", "yes"),
        ("optimize_memory_usage", 1),
    ],
    MultiTaskPolicyDistillation: [
        ("temperature", INF),
        ("temperature", -1.0),
        ("temperature", "1"),
        ("max_grad_norm", "10"),
        ("max_grad_norm", NAN),
        ("teacher_prob", NAN),
        ("teacher_prob", 1.5),
        ("teacher_prob", True),
        ("deterministic_control", 1),
    ],
    DistillPPO: [
        ("distill_coef", NAN),
        ("distill_coef", -0.1),
        ("distill_coef", True),
        ("teacher_prob", 1.5),
        ("teacher_prob", "0.5"),
        ("temperature", 0.0),
        ("temperature", INF),
        ("value_gating", 1),
        ("env_reward", "yes"),
    ],
}
BAD_CASES = [
    pytest.param(model_class, name, value, id=f"{model_class.__name__}-{name}-{value!r}")
    for model_class in MODEL_LIST
    for name, value in (ON_POLICY_BAD if model_class in ON_POLICY else COMMON_BAD) + OWN_BAD[model_class]
]


#: The arguments that take some strings (SAC's "auto", PIEKD's "buffer")
TAKE_STRINGS = ("ent_coef", "target_entropy", "distill_gradient_steps")


def _error_pattern(name: str) -> str:
    # The argument in backticks, then what is allowed, then the value received
    return rf"`{name}` must be .*got "


@pytest.mark.parametrize("model_class, name, value", BAD_CASES)
def test_bad_number_at_construction(model_class, name, value):
    with pytest.raises(ValueError, match=_error_pattern(name)) as error:
        make_model(model_class, **{name: value})
    # Not a number (nor a bool): also a TypeError; a bad string for an argument that takes strings: a ValueError only
    if isinstance(value, (str, bool)) and name not in TAKE_STRINGS:
        assert isinstance(error.value, TypeError)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One saved tiny model per algorithm (saving once keeps the load tests fast)."""
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for model_class in MODEL_LIST:
        paths[model_class] = folder / f"{model_class.__name__}.zip"
        make_model(model_class).save(paths[model_class])
    return paths


@pytest.mark.parametrize("model_class, name, value", BAD_CASES)
def test_bad_number_on_load(model_class, name, value, saved_models):
    # `load(path, **kwargs)` (and rl-zoo3's `--trained-agent` with `-params`) bypasses __init__
    with pytest.raises(ValueError, match=_error_pattern(name)):
        model_class.load(saved_models[model_class], **{name: value})


GOOD_NUMPY = {
    EnsembleDistillDQN: dict(n_teachers=np.int64(2), temperature=np.float32(0.5), student_learning_rate=np.float64(1e-3)),
    RealTimeDistillDQN: dict(distill_coef=np.float64(0.5), self_learning_coef=np.int32(1), batch_size=np.int64(16)),
    PIEKDSAC: dict(ensemble_size=np.int64(2), distill_learning_rate=np.float32(1e-3), distill_interval=np.int16(100)),
    PolicyDistillation: dict(temperature=np.float64(0.5), value_coef=np.int64(0), teacher_prob=np.float32(0.25)),
    DistillPPO: dict(distill_coef=np.float32(0.5), n_epochs=np.int64(1), target_kl=np.float64(0.5), gamma=np.float32(0.9)),
    MultiTaskPolicyDistillation: dict(temperature=np.float64(0.5), teacher_prob=np.float32(0.25), batch_size=np.int64(8)),
}


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_numpy_numbers_accepted(model_class, saved_models):
    kwargs = GOOD_NUMPY[model_class]
    loaded = model_class.load(saved_models[model_class], env=make_env(model_class), **kwargs)
    for model in (make_model(model_class, **kwargs), loaded):
        for name, value in kwargs.items():
            # Stored as a plain Python number (json-able, and what the policies and rl-zoo3 expect)
            assert type(getattr(model, name)) in (int, float) and getattr(model, name) == pytest.approx(float(value))
        model.learn(60)


#: Legal values of the non-numeric arguments (bools, SB3's `train_freq`, SAC's strings) that must stay legal
GOOD_OTHERS = {
    EnsembleDistillDQN: dict(train_freq=(1, "episode"), distill_diagnostics=np.bool_(False)),
    RealTimeDistillDQN: dict(train_freq=(np.int64(3), "step"), imitation=False, stack_teacher=True),
    PIEKDSAC: dict(ent_coef="auto_0.2", target_entropy=-1, use_sde_at_warmup=False, distill_gradient_steps="buffer"),
    PolicyDistillation: dict(train_freq=np.int32(2), deterministic_control=True, max_grad_norm=None),
    DistillPPO: dict(normalize_advantage=False, env_reward=None, sde_sample_freq=-1),
    MultiTaskPolicyDistillation: dict(train_freq=(2, "step"), deterministic_control=np.bool_(True)),
}


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_other_arguments_accepted(model_class, saved_models):
    kwargs = GOOD_OTHERS[model_class]
    loaded = model_class.load(saved_models[model_class], env=make_env(model_class), **kwargs)
    for model in (make_model(model_class, **kwargs), loaded):
        for name, value in kwargs.items():
            stored = getattr(model, name)
            if isinstance(value, np.bool_):
                assert type(stored) is bool
            if name == "train_freq":
                # SB3's TrainFreq, its frequency a plain int (SB3 requires one)
                expected = value if isinstance(value, tuple) else (value, "step")
                assert type(stored.frequency) is int and stored.frequency == expected[0]
                assert stored.unit.value == expected[1]
        model.learn(60)
    if model_class is PIEKDSAC:
        # SAC's fixed entropy coefficient, a number
        make_model(PIEKDSAC, ent_coef=0.1).learn(60)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_load_as_rl_zoo3_enjoy_does(model_class, saved_models):
    # rl-zoo3's `enjoy` loads every model with a learning rate of 0 (to act, not to learn)
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    model = model_class.load(saved_models[model_class], custom_objects=custom_objects, seed=0)
    assert model.learning_rate == 0.0
    model.predict(model.observation_space.sample(), deterministic=True)


NET_ARCH_CASES = [
    (EnsembleDistillDQN, dict(policy_kwargs=dict(net_arch=[-1])), r"`policy_kwargs\['net_arch'\]`"),
    (EnsembleDistillDQN, dict(student_policy_kwargs=dict(net_arch=[8, 0])), r"`student_policy_kwargs\['net_arch'\]`"),
    (RealTimeDistillDQN, dict(policy_kwargs=dict(net_arch=[-1])), r"`policy_kwargs\['net_arch'\]`"),
    (RealTimeDistillDQN, dict(students=[dict(net_arch=[8]), dict(net_arch=[4.5])]), r"`students\[1\]\['net_arch'\]`"),
    (PIEKDSAC, dict(policy_kwargs=dict(net_arch=dict(pi=[16], qf=[-1]))), r"`policy_kwargs\['net_arch'\]\['qf'\]`"),
    (PIEKDSAC, dict(policy_kwargs=dict(net_arch=16)), r"`policy_kwargs\['net_arch'\]` must be a list"),
    (PolicyDistillation, dict(student_policy_kwargs=dict(net_arch=[-1])), r"`student_policy_kwargs\['net_arch'\]`"),
    (DistillPPO, dict(policy_kwargs=dict(net_arch=dict(pi=[8], vf=[0]))), r"`policy_kwargs\['net_arch'\]\['vf'\]`"),
]


@pytest.mark.parametrize("model_class, kwargs, match", NET_ARCH_CASES)
def test_bad_layer_sizes(model_class, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(model_class, **kwargs)


@pytest.mark.parametrize(
    "model_class, kwargs",
    [
        (EnsembleDistillDQN, dict(student_policy_kwargs=dict(net_arch=[64, 64]))),
        (RealTimeDistillDQN, dict(students=[dict(net_arch=[8]), dict(net_arch=[64, 64])])),
        (PolicyDistillation, dict(student_policy_kwargs=dict(net_arch=[128, 128]))),
    ],
)
def test_student_larger_than_teacher_warns(model_class, kwargs):
    with pytest.warns(UserWarning, match="times as many parameters as"):
        make_model(model_class, **kwargs)
    # The default, compact student does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model(model_class)


@pytest.mark.parametrize("model_class", MODEL_LIST)
def test_zero_learning_rate_on_load(model_class, saved_models):
    # rl-zoo3's `enjoy` loads every model with `custom_objects={"learning_rate": 0.0, "lr_schedule": ...}`
    model = model_class.load(saved_models[model_class], custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0})
    assert model.learning_rate == 0.0


def test_schedules_checked_where_evaluated():
    # Legal at both endpoints, NaN in between: caught when the schedule is evaluated in `train()`
    def schedule(progress: float) -> float:
        return 1e-3 if progress > 0.9 or progress < 0.1 else NAN

    for model_class in (EnsembleDistillDQN, RealTimeDistillDQN):
        model = make_model(model_class, student_learning_rate=schedule)
        with pytest.raises(ValueError, match=r"`student_learning_rate` must be .*got nan .*at progress remaining"):
            model.learn(200)
    beta = lambda progress: 2.0 if 0.2 < progress < 0.8 else 0.5  # noqa: E731
    model = make_model(PolicyDistillation, control="mixture", teacher_prob=beta)
    with pytest.raises(ValueError, match=r"`teacher_prob` must be a number in \[0, 1\].*got 2.0 at progress remaining"):
        model.learn(100)
    # DistillPPO's weight of the distillation terms: legal at the start, negative from half-way
    model = make_model(DistillPPO, distill_coef=lambda progress: progress - 0.5)
    with pytest.raises(ValueError, match=r"`distill_coef` must be a number >= 0 .*got -0\.25 at progress remaining 0\.25"):
        model.learn(120)


@pytest.mark.parametrize("value", [1, 2.5, np.int64(3), np.float32(0.25), np.uint8(4)])
def test_check_number_accepts_numbers(value):
    checked = check_number(value, "x", Number(low=0))
    assert type(checked) in (int, float) and checked == pytest.approx(float(value))


@pytest.mark.parametrize(
    "value, spec, error, match",
    [
        (True, Number(), ArgumentTypeError, r"`x` must be a number, got True of type bool"),
        (np.bool_(True), Number(), ArgumentTypeError, "of type bool"),
        ("1", Number(), ArgumentTypeError, "got '1' of type str"),
        (None, Number(), ArgumentTypeError, "of type NoneType"),
        (NAN, Number(), ValueError, r"got nan \(not finite\)"),
        (-INF, Number(), ValueError, r"got -inf \(not finite\)"),
        (2.5, Number(integer=True), ValueError, r"`x` must be an integer, got 2.5 \(not an integer\)"),
        (0, Number(low=0, low_open=True, meaning="the rate"), ValueError, r"`x` must be a number > 0 \(the rate\), got 0"),
        (1.5, Number(low=0, high=1), ValueError, r"must be a number in \[0, 1\], got 1.5"),
        (1.0, Number(low=0, high=1, high_open=True), ValueError, r"in \[0, 1\), got 1.0"),
    ],
)
def test_check_number_rejects(value, spec, error, match):
    with pytest.raises(error, match=match):
        check_number(value, "x", spec)


def test_flag_choice_and_train_frequency():
    assert Flag().check(np.bool_(True), "x") is True and Flag(optional=True).check(None, "x") is None
    with pytest.raises(ArgumentTypeError, match=r"`x` must be a bool \(True or False\) \(the switch\), got 1 of type int"):
        Flag(meaning="the switch").check(1, "x")
    with pytest.raises(ArgumentTypeError, match=r"must be a bool \(True or False\) or None, got 'no'"):
        Flag(optional=True).check("no", "x")
    ent_coef = Choice(("auto",), prefixed="auto_", number=Number(low=0))
    assert ent_coef.check("auto", "x") == "auto" and ent_coef.check("auto_0.5", "x") == "auto_0.5"
    assert ent_coef.check(np.float32(0.5), "x") == 0.5
    for bad, error in [
        ("auto_", ValueError),
        ("auto_-1", ValueError),
        ("auto_inf", ValueError),
        (-1, ValueError),
        (True, TypeError),
    ]:
        with pytest.raises(error, match=r"`x` must be 'auto', 'auto_<x>' with x >= 0 or a number >= 0, got "):
            ent_coef.check(bad, "x")
    with pytest.raises(ArgumentTypeError, match=r"`x` must be 'buffer', got 3 of type int"):
        Choice(("buffer",)).check(3, "x")
    frequency = TrainFrequency()
    assert frequency.check(np.int64(4), "x") == 4 and type(frequency.check(np.int64(4), "x")) is int
    assert frequency.check((2, "episode"), "x") == (2, "episode")
    saved = TrainFreq(3, TrainFrequencyUnit.STEP)
    assert frequency.check(saved, "x") == saved and isinstance(frequency.check(saved, "x"), TrainFreq)
    for bad, match in [
        (0, r"`x` must be an integer >= 1 .*got 0"),
        ((4, "minute"), r"unit in \('step', 'episode'\), got the unit 'minute'"),
        ((1,), r"got \(1,\)"),
        ("4", r"of type str"),
    ]:
        with pytest.raises(ValueError, match=match):
            frequency.check(bad, "x")


def test_checked_schedule_and_net_arch():
    schedule = CheckedSchedule(lambda progress: progress - 0.5, "lr", Number(low=0))
    assert schedule(1.0) == 0.5 and isinstance(schedule(1.0), float)
    with pytest.raises(ValueError, match=r"`lr` must be a number >= 0, got -0.5 at progress remaining 0"):
        schedule(0.0)
    assert CheckedSchedule(0.25, "lr", Number(low=0))(0.3) == 0.25
    check_net_arch(None, "net_arch")
    check_net_arch(dict(pi=[8], vf=[np.int64(8)]), "net_arch")
    with pytest.raises(ValueError, match=r"`net_arch` must be an integer >= 1 \(every layer size\), got -1"):
        check_net_arch([-1], "net_arch")


def test_schedule_may_decay_to_an_open_bound():
    # A learning rate decaying linearly to 0 (rl-zoo3's `lin_` schedules, the demo's settings) is legal
    schedule = CheckedSchedule(LinearSchedule(5e-3, 0.0, 1.0), "student_learning_rate", STUDENT_LEARNING_RATE)
    assert schedule(0.0) == 0.0
    with pytest.raises(ValueError, match=r"got -0\.001"):
        CheckedSchedule(lambda _: -1e-3, "student_learning_rate", STUDENT_LEARNING_RATE)(0.5)
    # An open bound stays open for a constant
    with pytest.raises(ValueError, match="> 0"):
        CheckedSchedule(0.0, "temperature", Number(low=0, low_open=True))(0.5)
    for model_class in (EnsembleDistillDQN, RealTimeDistillDQN):
        make_model(model_class, student_learning_rate=LinearSchedule(5e-3, 0.0, 1.0)).learn(100)


@pytest.mark.parametrize("model_class", [PolicyDistillation, DistillPPO, MultiTaskPolicyDistillation])
def test_export_student_learning_rate_checked(model_class):
    model = make_model(model_class)

    def export(learning_rate):
        if model_class is MultiTaskPolicyDistillation:
            return model.export_student(model.tasks[0], learning_rate=learning_rate)
        return model.export_student(learning_rate=learning_rate)

    for bad, error in [("a", ArgumentTypeError), (NAN, ValueError), (-1e-3, ValueError)]:
        with pytest.raises(error, match=r"`learning_rate` must be a number >= 0 .*got "):
            export(bad)
    assert export(5e-4).learning_rate == 5e-4
    assert export(LinearSchedule(1e-3, 0.0, 1.0)).lr_schedule(0.5) == pytest.approx(5e-4)
