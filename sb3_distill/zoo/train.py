"""``python -m sb3_distill.train``: rl-zoo3's ``train`` with the sb3_distill algorithms registered."""

import argparse
import functools
import sys
from unittest import mock

import rl_zoo3.train

from sb3_distill.zoo.exp_manager import DistillExperimentManager
from sb3_distill.zoo.registry import default_config_path, register_algorithms


def _optional_int(value: str) -> int | None:
    """An integer, or None written as 'none'."""
    return None if value.lower() == "none" else int(value)


def heartbeat_parser() -> argparse.ArgumentParser:
    """The options this command adds to rl-zoo3's ``train``."""
    parser = argparse.ArgumentParser(prog="python -m sb3_distill.train", add_help=False)
    parser.add_argument(
        "--heartbeat-interval",
        metavar="N",
        type=int,
        default=None,
        help="With -optimize and an RDB --storage (sqlite:///..., postgresql://...): turn on Optuna's heartbeat, "
        "one every N seconds, so that the trial of a killed worker is marked FAIL and retried",
    )
    parser.add_argument(
        "--heartbeat-grace-period",
        metavar="S",
        type=int,
        default=None,
        help="Seconds without heartbeat after which a trial is marked FAIL (default: twice the interval)",
    )
    parser.add_argument(
        "--heartbeat-max-retry",
        metavar="R",
        type=_optional_int,
        default=3,
        help="How many times a failed trial is retried ('none': without limit; default: 3)",
    )
    return parser


def train(argv: list[str] | None = None) -> None:
    """
    Register the algorithms, default ``--conf-file`` to this project's ``zoo_configs/<algo>.yml``, then run
    rl-zoo3's own ``train()`` (every rl-zoo3 argument works) with :class:`DistillExperimentManager`.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    registered = register_algorithms()
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = heartbeat_parser()
    if {"-h", "--help"} & set(argv):
        print("Options of sb3_distill.train in addition to rl-zoo3's (listed after these):")
        parser.print_help()
        print()
    # Read (without removing) --algo and --conf-file, as rl-zoo3's parser will
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--algo", default="ppo")
    peek.add_argument("-conf", "--conf-file", default=None)
    options, rest = parser.parse_known_args(argv)
    peeked, _ = peek.parse_known_args(rest)
    if peeked.conf_file is None and peeked.algo in registered:
        rest += ["--conf-file", str(default_config_path(peeked.algo))]
    experiment_manager = functools.partial(
        DistillExperimentManager,
        heartbeat_interval=options.heartbeat_interval,
        heartbeat_grace_period=options.heartbeat_grace_period,
        heartbeat_max_retry=options.heartbeat_max_retry,
    )
    with mock.patch.object(sys, "argv", [sys.argv[0], *rest]), mock.patch.object(
        rl_zoo3.train, "ExperimentManager", experiment_manager
    ):
        rl_zoo3.train.train()
