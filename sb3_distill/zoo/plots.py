"""
``python -m sb3_distill.plots <script> [arguments]``: rl-zoo3's plotting scripts (``plot_train``, ``all_plots``,
``plot_from_file``, as ``rl_zoo3 <script>`` names them) on the logs of ``python -m sb3_distill.train``.

The scripts read the log folder ``<exp-folder>/<algo>/<env>_<run>``, so they need nothing registered; the
algorithms are registered anyway, so that every sb3_distill command sees the same ``rl_zoo3.ALGOS``.
"""

import sys
from collections.abc import Callable
from unittest import mock

from rl_zoo3.plots import all_plots, plot_from_file, plot_train

from sb3_distill.zoo.registry import register_algorithms

#: script name -> rl-zoo3 function (the names of ``rl_zoo3.cli``)
PLOTS: dict[str, Callable[[], None]] = {"plot_train": plot_train, "all_plots": all_plots, "plot_from_file": plot_from_file}


def plots(argv: list[str] | None = None) -> None:
    """
    Run one of rl-zoo3's plotting scripts with its own arguments.

    :param argv: the script name, then its arguments (default: ``sys.argv[1:]``)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in PLOTS:
        got = repr(argv[0]) if argv else "nothing"
        raise SystemExit(f"usage: python -m sb3_distill.plots {{{','.join(PLOTS)}}} [arguments]; got {got}")
    register_algorithms()
    with mock.patch.object(sys, "argv", [f"{sys.argv[0]} {argv[0]}", *argv[1:]]):
        PLOTS[argv[0]]()
