"""
The sb3_distill algorithms as rl-zoo3 sees them: algorithm key -> class, Optuna sampler, converter.

Adding an algorithm is one line in :data:`ZOO_ALGORITHMS` (plus its ``zoo_configs/<key>.yml``).
"""

import importlib
import site
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_distill.zoo.hyperparams_opt import (
    convert_distill_offpolicy_params,
    convert_distill_ppo_params,
    convert_policy_distillation_params,
    sample_distill_ppo_params,
    sample_ensemble_distill_dqn_params,
    sample_multitask_policy_distillation_params,
    sample_piekd_sac_params,
    sample_policy_distillation_params,
    sample_realtime_distill_dqn_params,
)


class ZooAlgorithm(NamedTuple):
    """
    One rl-zoo3 registration.

    :param class_path: the algorithm class as ``"module:Class"``
    :param sampler: its Optuna sampler, with rl-zoo3's signature ``(trial, n_actions, n_envs, additional_args)``
    :param converter: turns a trial's ``params`` back into hyperparameters (``--trial-id``)
    """

    class_path: str
    sampler: Callable[..., dict[str, Any]]
    converter: Callable[[dict[str, Any]], dict[str, Any]] = convert_distill_offpolicy_params


#: rl-zoo3 key -> registration. An entry whose module does not exist (an algorithm not merged yet) is skipped.
ZOO_ALGORITHMS: dict[str, ZooAlgorithm] = {
    "ensemble_distill_dqn": ZooAlgorithm(
        "sb3_distill.ensemble_distill_dqn:EnsembleDistillDQN", sample_ensemble_distill_dqn_params
    ),
    "realtime_distill_dqn": ZooAlgorithm(
        "sb3_distill.realtime_distill_dqn:RealTimeDistillDQN", sample_realtime_distill_dqn_params
    ),
    "piekd_sac": ZooAlgorithm("sb3_distill.piekd_sac:PIEKDSAC", sample_piekd_sac_params),
    "policy_distillation": ZooAlgorithm(
        "sb3_distill.policy_distillation:PolicyDistillation",
        sample_policy_distillation_params,
        convert_policy_distillation_params,
    ),
    "distill_ppo": ZooAlgorithm("sb3_distill.distill_ppo:DistillPPO", sample_distill_ppo_params, convert_distill_ppo_params),
    "multitask_policy_distillation": ZooAlgorithm(
        "sb3_distill.multitask_policy_distillation:MultiTaskPolicyDistillation",
        sample_multitask_policy_distillation_params,
        convert_policy_distillation_params,
    ),
}


def import_algorithm(class_path: str) -> type[BaseAlgorithm] | None:
    """
    Import ``"module:Class"``.

    :param class_path: the module and class name, separated by a colon
    :return: the class, or None when the module itself does not exist (an error inside it is raised)
    """
    module_name, class_name = class_path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only "this algorithm is not there"; a missing dependency of an existing module is a real error
        if error.name is not None and module_name.startswith(error.name):
            return None
        raise
    return getattr(module, class_name)


def register_algorithms() -> list[str]:
    """
    Register every available sb3_distill algorithm in rl-zoo3: its class in ``rl_zoo3.ALGOS``, its sampler in
    ``HYPERPARAMS_SAMPLER`` and its converter in ``HYPERPARAMS_CONVERTER``. Call it before rl-zoo3 builds its
    argument parser (``--algo`` choices are computed from ``ALGOS``). Idempotent.

    :return: the registered algorithm keys
    """
    registered = []
    for key, entry in ZOO_ALGORITHMS.items():
        algorithm_class = import_algorithm(entry.class_path)
        if algorithm_class is None:
            continue
        ALGOS[key] = algorithm_class
        HYPERPARAMS_SAMPLER[key] = entry.sampler
        HYPERPARAMS_CONVERTER[key] = entry.converter  # type: ignore[assignment]
        registered.append(key)
    return registered


def config_dirs() -> list[Path]:
    """
    Where this project's ``zoo_configs/`` may be, in order: the checkout this package runs from (source tree or
    editable install), then the ``share/sb3_distill/zoo_configs`` data directory of a wheel install (under the
    prefix of this copy of the package, the environment, or the user base).

    :return: the candidate directories
    """
    package_dir = Path(__file__).resolve().parent.parent
    # site-packages/sb3_distill -> the install prefix (prefix/lib/pythonX.Y/site-packages/sb3_distill)
    own_prefix = package_dir.parents[3] if len(package_dir.parents) > 3 else package_dir
    prefixes = [own_prefix, Path(sysconfig.get_path("data")), Path(sys.prefix), Path(site.getuserbase())]
    return [package_dir.parent / "zoo_configs"] + [prefix / "share" / "sb3_distill" / "zoo_configs" for prefix in prefixes]


def default_config_path(algo: str) -> Path:
    """
    The hyperparameter file used when ``--conf-file`` is not given: ``zoo_configs/<algo>.yml``.

    :param algo: the rl-zoo3 algorithm key
    :return: the path of the YAML file
    """
    for directory in config_dirs():
        path = directory / f"{algo}.yml"
        if path.is_file():
            return path
    searched = ", ".join(str(directory) for directory in config_dirs())
    raise ValueError(f"No zoo_configs/{algo}.yml for `--algo` {algo!r} (searched {searched}); pass `--conf-file`")
