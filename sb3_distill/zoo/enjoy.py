"""``python -m sb3_distill.enjoy``: rl-zoo3's ``enjoy`` with the sb3_distill algorithms registered."""

import sys
from unittest import mock

import rl_zoo3.enjoy

from sb3_distill.zoo.registry import register_algorithms


def enjoy(argv: list[str] | None = None) -> None:
    """
    Register the algorithms, then run rl-zoo3's own ``enjoy()`` (every rl-zoo3 argument works).

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    register_algorithms()
    argv = sys.argv[1:] if argv is None else list(argv)
    with mock.patch.object(sys, "argv", [sys.argv[0], *argv]):
        rl_zoo3.enjoy.enjoy()
