"""
rl-zoo3's ``ExperimentManager`` with what the sb3_distill algorithms need and rl-zoo3 does not do itself:

- the student descriptions of the YAML files (``student_policy_kwargs``, ``students``, ...) are strings
  evaluated like ``policy_kwargs``, in rl-zoo3's namespace plus :class:`CompactNatureCNN`;
- ``student_learning_rate``, ``teacher_prob`` and ``distill_coef`` accept rl-zoo3's schedule strings
  (``lin_5e-3``) like ``learning_rate``;
- ``multitask_policy_distillation`` trains on the multi-task env of its ``teachers`` (and ``envs``) with
  ``n_envs`` envs per task; ``--env`` only names the section of its YAML file;
- ``-optimize`` on an RDB storage can turn on Optuna's heartbeat, so that the trial of a killed worker is
  marked failed and retried instead of staying RUNNING forever;
- rl-zoo3 options that cannot work with these algorithms (:data:`UNSUPPORTED_CALLBACKS`) are refused with a
  clear message before anything is built, instead of a run that fails later or trains nothing.
"""

from typing import Any
from unittest import mock

import optuna
import rl_zoo3.exp_manager
from optuna.storages import RDBStorage
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.utils import SimpleLinearSchedule
from stable_baselines3.common.torch_layers import FlattenExtractor, NatureCNN
from stable_baselines3.common.vec_env import VecEnv

from sb3_distill.common.torch_layers import CompactNatureCNN
from sb3_distill.zoo.registry import ZOO_ALGORITHMS

try:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    _CALLBACK_ARGUMENT = "heartbeat_stale_trial_callback"
except ImportError:  # Optuna < 4.9: the same callback and argument under their older names
    from optuna.storages import RetryFailedTrialCallback as RetryHeartbeatStaleTrialCallback  # type: ignore[assignment]

    _CALLBACK_ARGUMENT = "failed_trial_callback"

#: The rl-zoo3 key of MultiTaskPolicyDistillation, whose env is built from its teachers
MULTITASK_ALGO = "multitask_policy_distillation"
#: Hyperparameters given as Python expressions in the YAML files (rl-zoo3 evaluates ``policy_kwargs`` itself)
EVAL_KEYS = ("policy_kwargs", "student_policy_kwargs", "students")
#: Learning rates that accept rl-zoo3's schedule strings (rl-zoo3 converts ``learning_rate`` itself); numbers are
#: left as they are (PIEKDSAC's ``distill_learning_rate`` takes a number only, so it is not listed)
SCHEDULE_KEYS = ("student_learning_rate", "teacher_prob", "distill_coef")
#: Added to rl-zoo3's evaluation namespace (which has ``nn``, ``th``, SB3's classes)
EXTRA_NAMESPACE = {"CompactNatureCNN": CompactNatureCNN, "NatureCNN": NatureCNN, "FlattenExtractor": FlattenExtractor}

#: rl-zoo3 callbacks that cannot work with the sb3_distill algorithms, and why
UNSUPPORTED_CALLBACKS = {
    "ParallelTrainCallback": (
        "it trains, in a thread, a copy of the model reloaded with `SAC.load` or `TQC.load` (which drops PIEKDSAC's "
        "ensemble: K members, K entropy coefficients, knowledge sharing; the other sb3_distill algorithms are not SAC "
        "at all) and switches the model's own `train()` off, so nothing would be trained"
    ),
}


def check_zoo_options(algo: str, hyperparams: dict[str, Any]) -> None:
    """
    Raise a ``ValueError`` for an rl-zoo3 option that cannot work with an sb3_distill algorithm (rl-zoo3 would
    build the run and fail later, or train nothing and exit 0).

    :param algo: the ``--algo`` key
    :param hyperparams: the hyperparameters of the run (YAML and ``-params``), before rl-zoo3 processes them
    """
    if algo not in ZOO_ALGORITHMS:
        return
    # rl-zoo3's `callback` hyperparameter: a class path, a {path: kwargs} dict, or a list of those
    callbacks = hyperparams.get("callback")
    for name, reason in UNSUPPORTED_CALLBACKS.items():
        if name in repr(callbacks):
            raise ValueError(
                f"rl-zoo3's `{name}` cannot be used with `--algo {algo}`: {reason}. "
                f"Remove it from the `callback` hyperparameter (YAML or `-params`), got callback={callbacks!r}"
            )


def eval_hyperparameter(expression: str) -> Any:
    """
    Evaluate a hyperparameter written as a Python expression, as rl-zoo3 does for ``policy_kwargs``.

    :param expression: e.g. ``"[dict(net_arch=[32]), dict(net_arch=[16])]"``
    :return: the value
    """
    return eval(expression, {**vars(rl_zoo3.exp_manager), **EXTRA_NAMESPACE})


def make_heartbeat_storage(
    storage: str | None, heartbeat_interval: int, grace_period: int | None = None, max_retry: int | None = 3
) -> RDBStorage:
    """
    An Optuna RDB storage with heartbeat: a worker that stops sending heartbeats for ``grace_period`` seconds
    (killed, machine lost) has its RUNNING trial marked FAIL by the next worker that starts a trial, and
    :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback` enqueues a copy of it with the same parameters.

    :param storage: the database URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``)
    :param heartbeat_interval: seconds between the heartbeats of a running trial
    :param grace_period: seconds without heartbeat after which a trial is stale; None is Optuna's default,
        twice ``heartbeat_interval``
    :param max_retry: how many times one trial is retried; None retries without limit
    :return: the storage
    """
    if storage is None or storage.endswith(".log") or "://" not in storage:
        raise ValueError(
            f"`--heartbeat-interval` needs an RDB `--storage` URL (sqlite:///study.db, postgresql://...), got {storage!r}; "
            "a journal file (.log) or an in-memory study has no heartbeat"
        )
    if isinstance(heartbeat_interval, bool) or not isinstance(heartbeat_interval, int) or heartbeat_interval < 1:
        raise ValueError(f"`--heartbeat-interval` must be an integer >= 1 (seconds), got {heartbeat_interval!r}")
    if grace_period is not None and (not isinstance(grace_period, int) or grace_period <= heartbeat_interval):
        raise ValueError(
            f"`--heartbeat-grace-period` must be an integer > `--heartbeat-interval` ({heartbeat_interval} s), "
            f"got {grace_period!r}"
        )
    if max_retry is not None and (not isinstance(max_retry, int) or max_retry < 0):
        raise ValueError(f"`--heartbeat-max-retry` must be an integer >= 0, got {max_retry!r}")
    retry: dict[str, Any] = {_CALLBACK_ARGUMENT: RetryHeartbeatStaleTrialCallback(max_retry=max_retry)}
    return RDBStorage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period, **retry)


class _OptunaWithStorage:
    """The ``optuna`` module as rl-zoo3's experiment manager sees it, with ``create_study`` using a given storage."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(optuna, name)

    def create_study(self, *args: Any, **kwargs: Any) -> optuna.Study:
        kwargs["storage"] = self._storage
        return optuna.create_study(*args, **kwargs)


class DistillExperimentManager(ExperimentManager):
    """
    rl-zoo3's experiment manager for the sb3_distill algorithms (see the module docstring).

    Takes rl-zoo3's arguments, plus:

    :param heartbeat_interval: with ``-optimize`` and an RDB ``--storage``: seconds between Optuna heartbeats
        (None: no heartbeat, rl-zoo3's behaviour)
    :param heartbeat_grace_period: seconds without heartbeat after which a trial is marked failed
        (None: Optuna's default, twice the interval)
    :param heartbeat_max_retry: how many times a failed trial is retried (None: without limit)
    """

    def __init__(
        self,
        *args: Any,
        heartbeat_interval: int | None = None,
        heartbeat_grace_period: int | None = None,
        heartbeat_max_retry: int | None = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_grace_period = heartbeat_grace_period
        self.heartbeat_max_retry = heartbeat_max_retry
        if heartbeat_interval is not None:
            if not self.optimize_hyperparameters:
                raise ValueError("`--heartbeat-interval` only applies to hyperparameter optimization (`-optimize`)")
            # Fail early, before any environment is built
            make_heartbeat_storage(self.storage, heartbeat_interval, heartbeat_grace_period, heartbeat_max_retry)

    def _preprocess_hyperparams(self, hyperparams: dict[str, Any]) -> tuple[dict[str, Any], Any, Any, Any]:
        check_zoo_options(self.algo, hyperparams)
        # Python expressions in the YAML (rl-zoo3 evaluates `policy_kwargs` without CompactNatureCNN in scope)
        for key in EVAL_KEYS:
            if isinstance(hyperparams.get(key), str):
                hyperparams[key] = eval_hyperparameter(hyperparams[key])
        # Linear schedules of the extra learning rates, written as for `learning_rate` ("lin_5e-3")
        for key in SCHEDULE_KEYS:
            value = hyperparams.get(key)
            if isinstance(value, str):
                schedule, _, initial_value = value.partition("_")
                if schedule != "lin":
                    raise ValueError(f"`{key}` must be a number or 'lin_<initial value>', got {value!r}")
                hyperparams[key] = SimpleLinearSchedule(float(initial_value))
        processed = super()._preprocess_hyperparams(hyperparams)
        # What the multi-task env is built from (`create_envs` is called before `_hyperparams` is set)
        self._multitask_hyperparams = processed[0]
        return processed

    def create_envs(self, n_envs: int, eval_env: bool = False, no_log: bool = False) -> VecEnv:
        if self.algo != MULTITASK_ALGO:
            return super().create_envs(n_envs, eval_env=eval_env, no_log=no_log)
        from sb3_distill.multitask_policy_distillation.multitask_policy_distillation import load_teachers, make_multitask_env

        hyperparams = self._multitask_hyperparams
        if "teachers" not in hyperparams:
            raise ValueError(f"`{MULTITASK_ALGO}` needs `teachers` (task name -> teacher) in its hyperparameters")
        return make_multitask_env(load_teachers(hyperparams["teachers"]), hyperparams.get("envs"), n_envs)

    def hyperparameters_optimization(self) -> None:
        if self.heartbeat_interval is None:
            super().hyperparameters_optimization()
            return
        storage = make_heartbeat_storage(
            self.storage, self.heartbeat_interval, self.heartbeat_grace_period, self.heartbeat_max_retry
        )
        if self.verbose > 0:
            print(
                f"Optuna heartbeat every {self.heartbeat_interval} s, grace period "
                f"{storage.grace_period} s, failed trials retried {self.heartbeat_max_retry} times"
            )
        # rl-zoo3 passes the URL to `optuna.create_study`: give it the storage with heartbeat instead
        with mock.patch.object(rl_zoo3.exp_manager, "optuna", _OptunaWithStorage(storage)):
            super().hyperparameters_optimization()
