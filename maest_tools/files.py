# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""Files the tools write and recognise: atomic writes (temporary file, fsync, rename), fingerprints and hashes.

An atomic write never leaves a truncated file under the final name: an interrupted run leaves either the old file
or the new one (and at worst a stray temporary file, named after the process).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside `path`; once the block ends without an error, fsync it and rename it to `path`.

    The caller writes the temporary file in any way (open, `np.save`, `pyarrow.parquet.write_table`). `suffix` ends
    the temporary name, for writers that add an extension themselves (`np.save` adds `.npy` to other names). On an
    error the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_npy(path: str | os.PathLike, array) -> None:
    """Write an `.npy` file atomically (see `atomic_path`)."""
    import numpy as np

    with atomic_path(path, ".npy") as temporary:
        np.save(temporary, array)


def file_fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a file's content for caches: absolute path, size in bytes and modification time in ns."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


TEMPORARY_MARK = ".tmp-"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (a process of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike, folders: tuple[str, ...] = ()) -> list[str]:
    """Remove the temporary files `atomic_path` left beside ``path`` and inside ``folders`` (recursively) when the
    process named in them (``NAME.tmp-PID[suffix]``) is no longer running: the litter of a crashed run.

    Returns:
        `list[str]`: the files removed.
    """
    import glob
    import re

    pattern = re.compile(r"\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")
    base = glob.escape(os.fspath(path))
    candidates = glob.glob(base + TEMPORARY_MARK + "*") + glob.glob(base + ".*" + TEMPORARY_MARK + "*")
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            candidates.extend(os.path.join(root, name) for name in names if TEMPORARY_MARK in name)
    removed = []
    for candidate in candidates:
        found = pattern.search(candidate)
        if found is None or pid_alive(int(found.group(1))) or not os.path.isfile(candidate):
            continue
        try:
            os.remove(candidate)
            removed.append(candidate)
        except OSError:
            pass
    return removed
