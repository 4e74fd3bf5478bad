"""
``python -m sb3_distill.record_video`` and ``python -m sb3_distill.record_training``: rl-zoo3's own scripts
with the sb3_distill algorithms registered.

rl-zoo3 keeps the code of these two scripts under ``if __name__ == "__main__":``, so they are run as
``__main__`` with :func:`runpy.run_module`, after :func:`register_algorithms` (their ``--algo`` choices are read
from ``rl_zoo3.utils.ALGOS`` when the script runs). ``record_training`` records each checkpoint in a
subprocess, ``python -m rl_zoo3.record_video``: that call is redirected to ``sb3_distill.record_video`` with
this interpreter. It joins the videos with the ``ffmpeg`` command; when none is on the ``PATH``, the binary
of ``imageio-ffmpeg`` (installed with ``moviepy``, which SB3's ``VecVideoRecorder`` needs) is used.
"""

import contextlib
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

from sb3_distill.zoo.registry import register_algorithms

#: The subprocess rl-zoo3's record_training starts for every video, and what runs instead
RL_ZOO_RECORD_VIDEO = ["python", "-m", "rl_zoo3.record_video"]


def run_script(module: str, argv: list[str] | None) -> None:
    """
    Register the algorithms, then run an rl-zoo3 script module as ``__main__`` with the given arguments.

    :param module: e.g. ``"rl_zoo3.record_video"``
    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    register_algorithms()
    argv = sys.argv[1:] if argv is None else list(argv)
    with mock.patch.object(sys, "argv", [sys.argv[0], *argv]):
        runpy.run_module(module, run_name="__main__", alter_sys=False)


def record_video(argv: list[str] | None = None) -> None:
    """
    rl-zoo3's ``record_video`` (every rl-zoo3 argument works): a video of a trained agent.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    run_script("rl_zoo3.record_video", argv)


def _redirected_call(args: Sequence[str], *popen_args: Any, **kwargs: Any) -> int:
    """``subprocess.call``, with rl-zoo3's ``python -m rl_zoo3.record_video`` run as ``sb3_distill.record_video``."""
    if list(args[:3]) == RL_ZOO_RECORD_VIDEO:
        args = [sys.executable, "-m", "sb3_distill.record_video", *args[3:]]
    return subprocess.Popen(args, *popen_args, **kwargs).wait()


@contextlib.contextmanager
def ffmpeg_on_path() -> Iterator[None]:
    """Put imageio-ffmpeg's ``ffmpeg`` on the ``PATH`` when there is none (nothing happens otherwise)."""
    try:
        import imageio_ffmpeg

        executable = None if shutil.which("ffmpeg") else imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        executable = None
    if executable is None:
        yield
        return
    with tempfile.TemporaryDirectory() as folder:
        os.symlink(executable, os.path.join(folder, "ffmpeg"))
        with mock.patch.dict(os.environ, {"PATH": folder + os.pathsep + os.environ.get("PATH", "")}):
            yield


def record_training(argv: list[str] | None = None) -> None:
    """
    rl-zoo3's ``record_training`` (every rl-zoo3 argument works): one video of the final model, the best model
    and every checkpoint of a run, joined into ``training.mp4``.

    :param argv: the command-line arguments (default: ``sys.argv[1:]``)
    """
    with ffmpeg_on_path(), mock.patch.object(subprocess, "call", _redirected_call):
        run_script("rl_zoo3.record_training", argv)
