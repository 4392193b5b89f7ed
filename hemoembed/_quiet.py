"""Import TensorFlow without its C++ start-up chatter on stderr (CLI errors must stay one line)."""
from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # no real stderr (e.g. captured in a notebook)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once with start-up logs hidden, unless TF_CPP_MIN_LOG_LEVEL is set to 0."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow  # noqa: F401
        return
    with _stderr_silenced():
        import tensorflow  # noqa: F401
