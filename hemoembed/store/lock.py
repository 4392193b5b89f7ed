"""Writer locks of a store: advisory ``flock`` on ``DIR/.lock`` (and one file per shard) held while a command
appends parts.

A whole-store writer (``embed`` without ``--shard``, ``--overwrite``) holds ``.lock`` exclusively. A shard
writer (``embed --shard I/N``) holds ``.lock`` shared, so shards run side by side and a whole-store writer
waits for none of them, plus ``.lock-shard-I-of-N`` exclusively: no two writers on the same shard.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

LOCK_FILE = ".lock"
SHARD_LOCK_PREFIX = ".lock-shard-"


def shard_lock_name(shard: tuple[int, int]) -> str:
    """The lock file of shard ``(I, N)``."""
    return f"{SHARD_LOCK_PREFIX}{shard[0]}-of-{shard[1]}"


def is_lock_file(name: str) -> bool:
    return name == LOCK_FILE or name.startswith(SHARD_LOCK_PREFIX)


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike, shard: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold the store's writer lock for a block: the whole store, or one shard ``(I, N)`` of it.

    A refused writer gets a one-line error at once (instead of embedding the same images twice); the
    operating system releases the locks when their holder exits, even when it is killed.
    """
    import fcntl

    directory = Path(directory)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(open(directory / LOCK_FILE, "a+"))
        if not _try_lock(store, fcntl.LOCK_SH if shard else fcntl.LOCK_EX):
            store.seek(0)
            holder = store.read().strip() or "shard writers"
            raise InputError(f"{directory}: another hemoembed process ({holder}) is writing to this store; "
                             "wait for it to finish or use another --store")
        mine = store
        if shard:
            mine = stack.enter_context(open(directory / shard_lock_name(shard), "a+"))
            if not _try_lock(mine, fcntl.LOCK_EX):
                mine.seek(0)
                holder = mine.read().strip() or "another process"
                raise InputError(f"{directory}: shard {shard[0]}/{shard[1]} is already being written ({holder}); "
                                 "wait for it to finish")
        mine.seek(0)
        mine.truncate()
        mine.write(f"pid {os.getpid()}\n")
        mine.flush()
        try:
            yield
        finally:
            if shard is None:
                mine.seek(0)
                mine.truncate()  # the next refused writer must not name a finished process


def _try_lock(handle, mode: int) -> bool:
    import fcntl

    try:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
