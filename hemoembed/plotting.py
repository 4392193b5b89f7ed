"""Headless matplotlib and atomic PNG writes: the one place every report, figure and script draws through."""
from __future__ import annotations

import io
import os
from pathlib import Path

from .config import atomic_write_bytes


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (commands and scripts run on servers without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Render ``fig`` to PNG through a temporary file (never a half-written image) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
