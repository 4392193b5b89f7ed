"""One writer per store: an advisory ``flock`` on ``DIR/.lock`` held while a command appends parts."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def writer_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the store's single-writer lock for a block.

    A second writer is refused at once with a one-line error (instead of embedding the same images twice);
    the operating system releases the lock when its holder exits, even when it is killed.
    """
    import fcntl

    directory = Path(directory)
    handle = open(directory / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(f"{directory}: another hemoembed process ({holder}) is writing to this store; "
                             "wait for it to finish or use another --store") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
