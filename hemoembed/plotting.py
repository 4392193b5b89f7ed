"""Headless matplotlib and atomic PNG writes: the one place every report, figure and script draws through."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from .config import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend unless a backend is already chosen.

    Commands and scripts run on servers without a display, so an unchosen backend becomes Agg; a backend
    someone chose (a notebook's inline backend, ``MPLBACKEND``, ``matplotlib.use``, an imported pyplot) is
    never switched."""
    import matplotlib

    if not _backend_chosen(matplotlib):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _backend_chosen(matplotlib) -> bool:
    if "matplotlib.pyplot" in sys.modules:
        return True
    chosen = getattr(matplotlib.rcParams, "_get_backend_or_none", None)  # None while still "auto"
    return chosen is None or chosen() is not None


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Render ``fig`` to PNG through a temporary file (never a half-written image) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
