"""The one progress protocol of every long step (embedding, fitting, querying, training, t-SNE).

A *progress factory* is called as ``progress(length, label)`` and returns a context manager that yields
``advance(n=1)``; the work calls ``advance`` as it goes. The CLI passes a terminal bar
(:func:`hemoembed.cli.common.progress`), a notebook may pass its own (for example a tqdm wrapper), and
``None`` everywhere means silence (:func:`no_progress`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[..., None]
ProgressFactory = Callable[[int, str], contextlib.AbstractContextManager[Advance]]


def _ignore(n: int = 1) -> None:
    """An ``advance`` that does nothing."""


@contextlib.contextmanager
def no_progress(length: int, label: str) -> Iterator[Advance]:
    """The silent progress factory."""
    yield _ignore


def stage(progress: ProgressFactory | None, length: int, label: str) -> contextlib.AbstractContextManager[Advance]:
    """``progress(length, label)``, or a silent stage when ``progress`` is ``None``."""
    return (progress or no_progress)(length, label)
