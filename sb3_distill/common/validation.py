"""
Checks of the arguments of the sb3_distill algorithms: numbers (:class:`Number`), bools (:class:`Flag`), strings
or numbers (:class:`Choice`, e.g. SAC's ``ent_coef``) and SB3's ``train_freq`` (:class:`TrainFrequency`).

Every algorithm calls :func:`check_arguments` at the start of ``_setup_model()``, so that the checks run at
construction, after ``load(path, **kwargs)`` and for rl-zoo3's ``-params`` alike (``load()`` and rl-zoo3's
``--trained-agent`` write attributes straight into ``__dict__`` and never pass through ``__init__``).
A number is accepted when it is a Python or NumPy int or float (a bool is not), finite and in range; it is
stored back as a plain Python ``int`` or ``float``. Errors name the argument in backticks, give the value
received and the values allowed: :class:`ArgumentTypeError` (both a ``TypeError`` and a ``ValueError``, so that
code catching either, as the checks before it raised ``ValueError``, still does) for a value that is not a
number, ``ValueError`` otherwise.
"""

import dataclasses
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.type_aliases import Schedule


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a string or a bool where a number is expected, ...)."""


@dataclass(frozen=True)
class Number:
    """
    What a numeric argument accepts: a finite number (an integer with ``integer=True``) in a range.

    :param low: the lower bound (None: no bound)
    :param high: the upper bound (None: no bound)
    :param low_open: exclude ``low`` itself (``> low`` instead of ``>= low``)
    :param high_open: exclude ``high`` itself
    :param integer: accept integers only (Python or NumPy)
    :param optional: accept None
    :param schedule: accept a callable of the progress remaining (a schedule), checked where it is evaluated
        (see :class:`CheckedSchedule`)
    :param meaning: what the argument is, for the error (e.g. its paper symbol)
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    schedule: bool = False
    meaning: str = ""

    def describe(self) -> str:
        """The values allowed, in words: ``"a number > 0"``, ``"an integer >= 1"``, ``"a number in [0, 1]"``."""
        kind = "an integer" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = kind
        if self.schedule:
            text += " or a schedule (a function of the progress remaining) with such values"
        if self.optional:
            text += " or None"
        return text

    def in_range(self, value: float) -> bool:
        """Whether a finite number is within the bounds."""
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or not (value >= self.high if self.high_open else value > self.high)

    def check(self, value: Any, name: str) -> Any:
        """
        Raise a ``TypeError`` or ``ValueError`` unless ``value`` is allowed.

        :param value: the argument's value
        :param name: the argument's name
        :return: the value, a number converted to a plain Python ``int`` or ``float``
        """
        if value is None and self.optional:
            return None
        if self.schedule and callable(value):
            return value
        return check_number(value, name, self)


def _error_text(name: str, spec: Number, value: Any, reason: str = "") -> str:
    meaning = f" ({spec.meaning})" if spec.meaning else ""
    return f"`{name}` must be {spec.describe()}{meaning}, got {value!r}{reason}"


def check_number(value: Any, name: str, spec: Number) -> int | float:
    """
    Raise an :class:`ArgumentTypeError` unless ``value`` is a number (Python or NumPy int or float, not a bool), and a
    ``ValueError`` unless it is finite, an integer when ``spec.integer``, and within the bounds of ``spec``.

    :param value: the value to check
    :param name: the argument's name, for the error
    :param spec: what is allowed
    :return: the value as a plain Python ``int`` (``spec.integer``) or ``float``/``int``
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(_error_text(name, spec, value, f" of type {type(value).__name__}"))
    if not math.isfinite(value):
        raise ValueError(_error_text(name, spec, value, " (not finite)"))
    if spec.integer:
        if not isinstance(value, numbers.Integral):
            raise ValueError(_error_text(name, spec, value, " (not an integer)"))
        value = int(value)
    elif not isinstance(value, int):
        value = float(value)
    if not spec.in_range(value):
        raise ValueError(_error_text(name, spec, value))
    return value


@dataclass(frozen=True)
class Flag:
    """
    A True/False argument: a Python or NumPy bool (not 0, 1 or a string, which would silently mean True or False).

    :param optional: accept None
    :param meaning: what the argument is, for the error
    """

    optional: bool = False
    meaning: str = ""

    def check(self, value: Any, name: str) -> bool | None:
        """
        Raise an :class:`ArgumentTypeError` unless ``value`` is a bool (or None when optional).

        :param value: the argument's value
        :param name: the argument's name
        :return: the value as a plain Python ``bool`` (or None)
        """
        if value is None and self.optional:
            return None
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        meaning = f" ({self.meaning})" if self.meaning else ""
        allowed = "a bool (True or False)" + (" or None" if self.optional else "")
        raise ArgumentTypeError(f"`{name}` must be {allowed}{meaning}, got {value!r} of type {type(value).__name__}")


@dataclass(frozen=True)
class Choice:
    """
    One of a few strings (e.g. ``"auto"``), a string with a numeric suffix (SAC's ``"auto_0.1"``), or a number.

    :param choices: the strings accepted as they are
    :param prefixed: a prefix (``"auto_"``) after which a number of ``number`` is accepted; None: no such strings
    :param number: the numbers accepted, None: no number
    """

    choices: tuple[str, ...]
    prefixed: str | None = None
    number: Number | None = None

    def describe(self) -> str:
        """The values allowed, in words."""
        allowed = [repr(choice) for choice in self.choices]
        if self.prefixed is not None and self.number is not None:
            allowed.append(f"'{self.prefixed}<x>' with x {self.number.describe().removeprefix('a number ')}")
        if self.number is not None:
            allowed.append(self.number.describe() + (f" ({self.number.meaning})" if self.number.meaning else ""))
        return ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]

    def check(self, value: Any, name: str) -> Any:
        """
        Raise a ``TypeError`` or ``ValueError`` unless ``value`` is allowed.

        :param value: the argument's value
        :param name: the argument's name
        :return: the value, a number converted to a plain Python ``int`` or ``float``
        """
        error = f"`{name}` must be {self.describe()}, got {value!r}"
        if isinstance(value, str):
            if value in self.choices or self._is_prefixed_number(value):
                return value
            raise ValueError(error)
        if self.number is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgumentTypeError(f"{error} of type {type(value).__name__}")
        try:
            return check_number(value, name, self.number)
        except ValueError:
            raise ValueError(error) from None

    def _is_prefixed_number(self, value: str) -> bool:
        """Whether ``value`` is the prefix followed by an allowed number (``"auto_0.1"``)."""
        if self.prefixed is None or self.number is None or not value.startswith(self.prefixed):
            return False
        try:
            number = float(value.removeprefix(self.prefixed))
        except ValueError:
            return False
        return math.isfinite(number) and self.number.in_range(number)


@dataclass(frozen=True)
class TrainFrequency:
    """
    SB3's ``train_freq`` of the off-policy algorithms: an integer >= 1 (environment steps), a tuple
    ``(frequency, unit)`` with unit ``"step"`` or ``"episode"``, or SB3's ``TrainFreq`` (what a saved model holds).
    """

    UNITS = ("step", "episode")

    def check(self, value: Any, name: str) -> Any:
        """
        Raise a ``TypeError`` or ``ValueError`` unless ``value`` is allowed.

        :param value: the argument's value
        :param name: the argument's name
        :return: the value, its frequency converted to a plain Python ``int`` (which SB3 requires)
        """
        frequency_spec = Number(low=1, integer=True, meaning="how often to train, in `unit`s")
        allowed = f"an integer >= 1 or a tuple (frequency, unit) with unit in {self.UNITS}"
        if isinstance(value, tuple):
            if len(value) != 2:
                raise ValueError(f"`{name}` must be {allowed}, got {value!r}")
            frequency, unit = value
            unit_name = getattr(unit, "value", unit)
            if unit_name not in self.UNITS:
                raise ValueError(f"`{name}` must be {allowed}, got the unit {unit!r} in {value!r}")
            checked = check_number(frequency, name, frequency_spec)
            # SB3's TrainFreq (a NamedTuple) stays one
            return value._replace(frequency=checked) if hasattr(value, "_replace") else (checked, unit)
        try:
            return check_number(value, name, frequency_spec)
        except ArgumentTypeError:
            raise ArgumentTypeError(f"`{name}` must be {allowed}, got {value!r} of type {type(value).__name__}") from None


#: What an argument accepts (each spec's ``check(value, name)`` raises or returns the value to store)
ArgumentSpec = Number | Flag | Choice | TrainFrequency


class CheckedSchedule:
    """
    A schedule whose every value is checked where it is evaluated (not only at its endpoints): a schedule
    can leave its range in between, e.g. a user's function of the progress remaining. A schedule may reach an
    open bound (a learning rate decaying linearly to 0, as rl-zoo3's ``lin_`` schedules do), not pass it.

    :param schedule: the schedule, or a constant
    :param name: the argument's name, for the error
    :param spec: what each value must be
    """

    def __init__(self, schedule: Schedule | float, name: str, spec: Number) -> None:
        self.schedule = schedule
        self.name = name
        self.spec = dataclasses.replace(spec, low_open=False, high_open=False) if callable(schedule) else spec

    def __call__(self, progress_remaining: float) -> float:
        value = self.schedule(progress_remaining) if callable(self.schedule) else self.schedule
        try:
            return float(check_number(value, self.name, self.spec))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{error} at progress remaining {progress_remaining:g} (from the schedule)") from None

    def __repr__(self) -> str:
        return f"CheckedSchedule({self.schedule!r}, {self.name!r})"


#: A learning rate: 0 is legal (a model loaded to act, not to learn: rl-zoo3's ``enjoy`` loads every model with
#: ``custom_objects={"learning_rate": 0.0, ...}``)
LEARNING_RATE = Number(low=0, schedule=True, meaning="0: no learning")
#: SB3's off-policy arguments that SB3 itself does not check (see ``OffPolicyAlgorithm``)
OFF_POLICY_NUMBERS: dict[str, ArgumentSpec] = {
    "learning_rate": LEARNING_RATE,
    "buffer_size": Number(low=1, integer=True),
    "learning_starts": Number(low=0, integer=True),
    "batch_size": Number(low=1, integer=True),
    "tau": Number(low=0, high=1, meaning="the soft update coefficient"),
    "gamma": Number(low=0, high=1, meaning="the discount factor"),
    "gradient_steps": Number(low=-1, integer=True, meaning="-1: as many as environment steps"),
    "train_freq": TrainFrequency(),
    "n_steps": Number(low=1, integer=True, meaning="n of the n-step return"),
    "optimize_memory_usage": Flag(),
}
#: SB3's on-policy arguments (see ``OnPolicyAlgorithm``); SB3 checks none of them when the subclass builds its
#: model in ``_setup_model`` (``_init_setup_model=False``)
ON_POLICY_NUMBERS: dict[str, ArgumentSpec] = {
    "learning_rate": LEARNING_RATE,
    "n_steps": Number(low=1, integer=True, meaning="steps per env and rollout"),
    "gamma": Number(low=0, high=1, meaning="the discount factor"),
    "gae_lambda": Number(low=0, high=1, meaning="the GAE factor lambda"),
    "ent_coef": Number(low=0, meaning="the entropy coefficient"),
    "vf_coef": Number(low=0, meaning="the value function coefficient"),
    "max_grad_norm": Number(low=0, low_open=True),
    "use_sde": Flag(meaning="generalized State-Dependent Exploration"),
    "sde_sample_freq": Number(low=-1, integer=True, meaning="-1: only at the start of each rollout"),
}
#: PPO's own arguments, for the PPO-based algorithms
PPO_NUMBERS: dict[str, ArgumentSpec] = {
    **ON_POLICY_NUMBERS,
    "batch_size": Number(low=1, integer=True),
    "n_epochs": Number(low=1, integer=True),
    "clip_range": Number(low=0, low_open=True, schedule=True, meaning="the clipping parameter epsilon"),
    "clip_range_vf": Number(low=0, low_open=True, schedule=True, optional=True, meaning="None: no clipping"),
    "target_kl": Number(low=0, low_open=True, optional=True, meaning="None: no early stopping"),
    "normalize_advantage": Flag(),
}
#: SAC's own arguments, for the SAC-based algorithms
SAC_NUMBERS: dict[str, ArgumentSpec] = {
    **OFF_POLICY_NUMBERS,
    "target_update_interval": Number(low=1, integer=True),
    "ent_coef": Choice(("auto",), prefixed="auto_", number=Number(low=0, meaning="a fixed entropy coefficient alpha")),
    "target_entropy": Choice(("auto",), number=Number(meaning="the target entropy")),
    "use_sde": Flag(meaning="generalized State-Dependent Exploration"),
    "sde_sample_freq": Number(low=-1, integer=True, meaning="-1: only at the start of each rollout"),
    "use_sde_at_warmup": Flag(),
}
#: DQN's own arguments, for the DQN-based algorithms
DQN_NUMBERS: dict[str, ArgumentSpec] = {
    **OFF_POLICY_NUMBERS,
    "target_update_interval": Number(low=1, integer=True),
    "exploration_fraction": Number(low=0, high=1),
    "exploration_initial_eps": Number(low=0, high=1),
    "exploration_final_eps": Number(low=0, high=1),
    "max_grad_norm": Number(low=0, low_open=True),
}
#: A student's learning rate: None (the teachers'), a number or a schedule
STUDENT_LEARNING_RATE = Number(low=0, optional=True, schedule=True, meaning="None: `learning_rate`")
#: beta, the probability that the teacher acts (PolicyDistillation's and the multi-task student's mixture control)
TEACHER_PROB = Number(low=0, high=1, schedule=True, meaning="beta, the probability that the teacher acts")
#: A softmax temperature
TEMPERATURE = Number(low=0, low_open=True, meaning="the softmax temperature tau")


def check_net_arch(net_arch: Any, name: str) -> None:
    """
    Raise a ``ValueError`` unless ``net_arch`` is None, a list of positive layer sizes, or a dict of such
    lists (SB3's ``dict(pi=[...], qf=[...])`` / ``dict(pi=[...], vf=[...])``).

    :param net_arch: the network architecture
    :param name: where it was given, for the error
    """
    if net_arch is None:
        return
    layers = net_arch.items() if isinstance(net_arch, Mapping) else [(None, net_arch)]
    for key, sizes in layers:
        where = name if key is None else f"{name}[{key!r}]"
        if not isinstance(sizes, (list, tuple)):
            raise ValueError(f"`{where}` must be a list of layer sizes (integers >= 1), got {sizes!r}")
        for size in sizes:
            check_number(size, where, Number(low=1, integer=True, meaning="every layer size"))


def _check_networks(model: Any) -> None:
    """The layer sizes of every network description of ``model`` (teachers', members' and students')."""
    policy_kwargs = getattr(model, "policy_kwargs", None) or {}
    check_net_arch(policy_kwargs.get("net_arch"), "policy_kwargs['net_arch']")
    student_policy_kwargs = getattr(model, "student_policy_kwargs", None)
    if isinstance(student_policy_kwargs, Mapping):
        check_net_arch(student_policy_kwargs.get("net_arch"), "student_policy_kwargs['net_arch']")
    students = getattr(model, "students", None)
    if isinstance(students, (list, tuple)):
        for index, student in enumerate(students):
            if isinstance(student, Mapping):
                check_net_arch(student.get("net_arch"), f"students[{index}]['net_arch']")


def check_arguments(model: Any, specs: Mapping[str, ArgumentSpec]) -> None:
    """
    Check the arguments of ``model`` (its attributes named in ``specs``) and the layer sizes of its network
    descriptions; store each value back as its spec returns it (a number as a plain Python ``int`` or ``float``).

    :param model: the algorithm, in ``_setup_model()``
    :param specs: argument name -> what it accepts
    """
    for name, spec in specs.items():
        setattr(model, name, spec.check(getattr(model, name), name))
    _check_networks(model)


def warn_if_student_larger(ratios: float | Mapping[str, float], teacher: str = "its teacher") -> None:
    """
    Warn when a student has more parameters than its teacher (legal, but rarely what distillation is for).

    :param ratios: the student's parameter count over its teacher's, or one such ratio per student name
    :param teacher: how to name the teacher in the warning
    """
    named = {"the student": ratios} if not isinstance(ratios, Mapping) else ratios
    for student, ratio in named.items():
        if ratio > 1:
            warnings.warn(
                f"{student} has {ratio:.3g} times as many parameters as {teacher}: distillation usually compresses; "
                "check `student_policy_kwargs` / `students`"
            )


class NonFiniteLossError(ValueError):
    """
    Training produced a NaN or infinite loss. A ``ValueError``, as what SB3's SAC raises in the same case (torch's
    ``Normal`` rejecting a NaN mean at the next action), so code written against SB3 catches it.
    """


def check_finite_losses(losses: Mapping[str, tuple[Sequence[str], th.Tensor]], n_updates: int) -> None:
    """
    Raise a :class:`NonFiniteLossError` naming the member, the loss and the update number when a loss of the
    gradient steps of one ``train()`` call is NaN or infinite. One device synchronisation for the whole call
    (the losses stay on the device until then); the search for the first bad value runs only on failure.

    :param losses: loss name -> (member names, the loss of each gradient step and member, shape
        (gradient_steps, n_members), or (gradient_steps,) for one member)
    :param n_updates: the update counter before these gradient steps (``_n_updates``)
    """
    # One kernel and one synchronisation on the concatenated losses
    if bool(th.cat([steps.reshape(-1) for _, steps in losses.values()]).isfinite().all()):
        return
    values = {name: (members, steps.reshape(steps.shape[0], -1)) for name, (members, steps) in losses.items()}
    # The first gradient step with a non-finite loss, and every member and loss bad at that step
    first_step = min(
        int((~steps.isfinite()).any(dim=1).nonzero()[0]) for _, steps in values.values() if not steps.isfinite().all()
    )
    bad = [
        f"`{name}` of {members[member]} = {float(steps[first_step, member])}"
        for name, (members, steps) in values.items()
        if first_step < steps.shape[0]
        for member in range(steps.shape[1])
        if not bool(steps[first_step, member].isfinite())
    ]
    raise NonFiniteLossError(
        f"Training stopped at update {n_updates + first_step + 1}: {', '.join(bad)}. The networks' weights are no "
        "longer usable (reload the last saved model). Usual causes: a NaN or infinite reward or observation (wrap "
        "the env with SB3's `VecCheckNan` to find it) or a learning rate that is too high."
    )


def checked_loss_means(losses: Mapping[str, tuple[Sequence[str], th.Tensor]], n_updates: int) -> dict[str, list[float]]:
    """
    Each loss's mean over the gradient steps of one ``train()`` call, per member, from ONE device-to-host copy;
    a NaN or infinite loss makes its member's mean non-finite, and then :func:`check_finite_losses` raises its
    error naming the member and the update.

    :param losses: as for :func:`check_finite_losses`
    :param n_updates: the update counter before these gradient steps (``_n_updates``)
    :return: loss name -> the mean of each member, in the order of its member names
    """
    shaped = [steps.reshape(steps.shape[0], -1) for _, steps in losses.values()]
    flat = th.cat([steps.mean(dim=0) for steps in shaped]).tolist()
    if not all(math.isfinite(value) for value in flat):
        check_finite_losses(losses, n_updates)
    means, start = {}, 0
    for name, steps in zip(losses, shaped, strict=True):
        means[name] = flat[start : start + steps.shape[1]]
        start += steps.shape[1]
    return means


class UnsupportedSpaceError(ValueError, AssertionError):
    """
    An env's action (or observation) space the algorithm does not support. Also an ``AssertionError``: SB3 checks
    ``supported_action_spaces`` with an assertion, so code written against SB3 catches it as one.
    """
