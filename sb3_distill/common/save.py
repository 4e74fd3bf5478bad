"""
Atomic saves: a crash (or ``kill -9``) during ``save()`` or ``save_replay_buffer()`` leaves the previous file
intact. SB3 opens the target with ``"wb"`` (truncating it) and writes in place, so a crash during a save over a
good file leaves a truncated, unloadable one. Here the data go to a temporary file in the target's folder,
which is flushed to disk and then renamed over the target with ``os.replace`` (atomic on POSIX and Windows
when both are on the same file system, which the same folder ensures).
"""

import contextlib
import io
import os
import pathlib
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm


def resolve_save_path(path: str | os.PathLike, suffix: str | None) -> pathlib.Path:
    """
    The file SB3 would write for ``path`` (``open_path_pathlib`` in ``stable_baselines3.common.save_util``):
    ``.suffix`` added when the path has none, ``<path>_2`` when the path is a folder.

    :param path: the path given to ``save()`` / ``save_replay_buffer()``
    :param suffix: the default suffix, ``"zip"`` or ``"pkl"``; None: the path is used as given
    :return: the file's path
    """
    target = pathlib.Path(path)
    if suffix is not None and target.suffix == "":
        target = pathlib.Path(f"{target}.{suffix}")
    if target.is_dir():
        warnings.warn(f"Path '{target}' is a folder. Will save instead to {target}_2")
        target = pathlib.Path(f"{target}_2")
    return target


def _new_file_mode(target: pathlib.Path) -> int:
    """The target's permissions if it exists, else those of a new file (0o666 less the umask)."""
    if target.exists():
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: str | pathlib.Path, directory: bool = False) -> None:
    """Flush a file (or, best effort, a folder's entries) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_save_path(
    path: str | os.PathLike | io.BufferedIOBase, suffix: str | None
) -> Iterator[str | os.PathLike | io.BufferedIOBase]:
    """
    Give the writer a temporary path next to the target, then rename it over the target once the writer is
    done; on an error the temporary file is removed and the target left as it was. A file-like object is
    passed through unchanged (the caller owns it).

    :param path: the path given to ``save()`` / ``save_replay_buffer()``, or a file-like object
    :param suffix: the default suffix SB3 adds, ``"zip"`` or ``"pkl"``; None: the path is used as given
    :return: (context) what to give SB3's writer instead of ``path``
    """
    if not isinstance(path, (str, os.PathLike)):
        yield path
        return
    target = resolve_save_path(path, suffix)
    if not target.parent.exists():
        warnings.warn(f"Path '{target.parent}' does not exist. Will create it.")
        target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own in the same folder (same file system: the rename is atomic); its suffix stops SB3
    # from adding one
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield pathlib.Path(temporary)
        os.chmod(temporary, _new_file_mode(target))
        _fsync(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync(target.parent, directory=True)


class AtomicModelSaveMixin(BaseAlgorithm):
    """
    ``save()`` that never leaves a half-written file, for any SB3 algorithm (on-policy ones included): it writes
    to a temporary file in the same folder and renames it over the target (see :func:`atomic_save_path`). SB3's
    path conventions hold (``.zip`` added when the path has no suffix; file-like objects accepted).
    Put it first in the bases: ``class DistillPPO(AtomicModelSaveMixin, PPO)``.
    """

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        with atomic_save_path(path, "zip") as save_path:
            super().save(save_path, exclude=exclude, include=include)  # type: ignore[arg-type]


class AtomicSaveMixin(AtomicModelSaveMixin, OffPolicyAlgorithm):
    """
    :class:`AtomicModelSaveMixin` for off-policy algorithms: ``save()`` and ``save_replay_buffer()`` both
    atomic (``.pkl`` added to a replay buffer's path without suffix).
    Put it first in the bases: ``class EnsembleDistillDQN(AtomicSaveMixin, DQN)``.
    """

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        with atomic_save_path(path, "pkl") as save_path:
            super().save_replay_buffer(save_path)  # type: ignore[arg-type]


def save_exported(
    model: BaseAlgorithm, path: str | os.PathLike, preprocessing: Any, observation_space: Any, action_space: Any
) -> None:
    """
    Save an exported student atomically at ``path`` and its observation preprocessing beside it, as rl-zoo3
    lays them out (``<dir>/<name>.zip`` and ``<dir>/<name>/``; see ``TeacherPreprocessing.save``).

    :param model: the exported plain SB3 model
    :param path: the model's path (``.zip`` added when it has no suffix, as SB3 does)
    :param preprocessing: the ``TeacherPreprocessing`` the student expects its observations through
    :param observation_space: the model's observation space
    :param action_space: the model's action space
    """
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_save_path(path, "zip") as save_path:
        model.save(save_path)  # type: ignore[arg-type]
    folder = pathlib.Path(path).parent / pathlib.Path(path).name.removesuffix(".zip")
    preprocessing.save(folder, observation_space, action_space)
