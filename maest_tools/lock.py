# Copyright 2026 The MAEST for transformers authors. Licensed under the Apache License, Version 2.0.
"""One run at a time per output: an exclusive `fcntl.flock` on a lock file that holds the owner's PID.

The kernel releases a flock when its process ends, however it ends (crash, kill -9, OOM killer), so a lock left by
a dead run is never in the way: the next run takes it at once and overwrites the PID inside (stale-lock recovery
needs no timeout and no guess). The PID in the file is only there to name the other run in the refusal.

Which file is locked (see `maest_tools.tag`): ``OUTPUT.lock`` for a run on the whole output (held by rank 0 of a
torchrun job, whose other ranks write only their own shard journals), ``OUTPUT.shard-I-of-N.lock`` for a manual
``--shard I/N`` run, and ``OUTPUT.lock`` plus every shard lock for ``--merge``.
"""

from __future__ import annotations

import errno
import os

from .cli import UsageError, error_message


def lock_path(output: str) -> str:
    """The lock file of a whole output: ``OUTPUT.lock``."""
    return output + ".lock"


def shard_lock_path(output: str, index: int, count: int) -> str:
    """The lock file of manual shard ``index`` of ``count``: ``OUTPUT.shard-I-of-N.lock``."""
    return f"{output}.shard-{index}-of-{count}.lock"


class OutputLock:
    """An exclusive, non-blocking lock on ``path`` for this process (a context manager; `release` is idempotent).

    Raises:
        UsageError: another live process holds it (the message names its PID and the output), or the lock file
            cannot be created (for example a read-only folder).
    """

    def __init__(self, path: str, what: str):
        self.path = path
        self._handle = None
        while True:
            handle = self._open_and_lock(path, what)
            # The previous holder removes the file when it releases it: make sure the locked file is still the one
            # under `path` (else a third run could lock a new file of the same name at the same time).
            try:
                same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        # Ours now (a PID left by a crashed run is simply replaced).
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    @staticmethod
    def _open_and_lock(path: str, what: str):
        import fcntl

        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as error:
            raise UsageError(
                f"Cannot create the lock file {path!r} ({error_message(error)}): the output's folder must be "
                "writable. Choose an --output in a folder you can write to."
            ) from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"Cannot lock {path!r}: {error_message(error)}.") from None
            raise UsageError(
                f"Another maest-tag run (PID {owner}) is writing {what}: two runs on one output would lose records. "
                f"Wait for it to finish (or stop it), or choose another --output. The lock is {path!r}."
            ) from None
        return handle

    def release(self) -> None:
        """Drop the lock and remove the file (only while holding it, so a waiting run never loses its own)."""
        if self._handle is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        self._handle.close()  # closing releases the flock
        self._handle = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_output_locks(output: str, shard: tuple[int, int] | None = None) -> list[OutputLock]:
    """The locks a run on ``output`` holds until it ends (release them with `release_all`).

    A run on the whole output (or --merge) holds ``OUTPUT.lock`` and the lock of every manual shard that has one,
    so it waits for no shard and no shard runs beside it. A manual ``--shard I/N`` run holds its shard's lock and
    checks that no whole-output run holds ``OUTPUT.lock`` (taken and released at once: a whole-output run that
    starts later sees the shard's lock). Either order of start, one of the two refuses.

    Raises:
        UsageError: another run holds one of them (the message names its PID).
    """
    import glob

    held: list[OutputLock] = []
    try:
        if shard is not None:
            index, count = shard
            held.append(OutputLock(shard_lock_path(output, index, count), f"shard {index} of {count} of {output!r}"))
            OutputLock(lock_path(output), repr(output)).release()
            return held
        held.append(OutputLock(lock_path(output), repr(output)))
        for path in sorted(glob.glob(glob.escape(output) + ".shard-*-of-*.lock")):
            held.append(OutputLock(path, f"a shard of {output!r}"))
        return held
    except BaseException:
        release_all(held)
        raise


def release_all(locks: list[OutputLock]) -> None:
    """Release ``locks`` (newest first)."""
    for lock in reversed(locks):
        lock.release()
