"""Saving benchmark results safely when several benchmark processes write the same file."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename, so that a reader never sees
    half a file and a crash never leaves one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (``<path>.lock``) for a read-modify-write of ``path``, so that two processes
    saving at the same moment do not drop each other's runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
