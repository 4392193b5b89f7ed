"""Nearest-neighbour galleries: each query next to its k nearest stored cells, with labels and distances."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.imageio import load_image
from ..errors import InputError
from .plots import image_grid, save_figure


def store_image_root(store_dir: str | os.PathLike) -> Path | None:
    """The image root the store was embedded from (``embed_config.json``), if recorded and present."""
    from ..store.embed import CONFIG_FILE

    path = Path(store_dir) / CONFIG_FILE
    try:
        root = json.loads(path.read_text()).get("image_root") or ""
    except (OSError, ValueError):
        return None
    return Path(root) if root and Path(root).is_dir() else None


def _short(text: str, width: int = 24) -> str:
    text = str(text)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def render_gallery(queries: Sequence[str | os.PathLike], neighbours: Sequence[Sequence[str]],
                   distances: np.ndarray, labels: Sequence[Sequence[str]] | None, image_root: str | os.PathLike,
                   out: str | os.PathLike, *, query_labels: Sequence[str] | None = None,
                   metric: str = "cosine") -> Path:
    """One PNG: a row per query (its image, then its neighbours titled rank, label and distance).

    ``queries`` are image files; ``neighbours`` are stored paths relative to ``image_root``."""
    root = Path(image_root)
    if not root.is_dir():
        raise InputError(f"{root}: image root folder not found (pass --image-root, the folder the store was "
                         "embedded from)")
    rows, titles = [], []
    for q, query in enumerate(queries):
        own = f"\n{query_labels[q]}" if query_labels else ""
        row, names = [load_image(query)], [f"query: {_short(Path(query).name)}{own}"]
        for rank, rel in enumerate(neighbours[q]):
            row.append(load_image(root / rel))
            label = f" {labels[q][rank]}" if labels is not None else ""
            names.append(f"#{rank + 1}{label}\n{metric} d={distances[q][rank]:.3f}")
        rows.append(row)
        titles.append(names)
    fig = image_grid(rows, titles, suptitle=f"{len(queries)} quer{'y' if len(queries) == 1 else 'ies'} and "
                                            f"{len(neighbours[0]) if neighbours else 0} nearest stored cells")
    return save_figure(fig, out)


def gallery_for_store(store, queries: Sequence[str], indices: np.ndarray, distances: np.ndarray,
                      out: str | os.PathLike, image_root: str | os.PathLike | None = None, metric: str = "cosine",
                      overwrite: bool = False) -> Path:
    """Gallery of ``store.neighbors`` results. Queries are image files or stored paths; neighbours are
    labelled by their ``label`` metadata when the store has it, else by their folder name."""
    if Path(out).exists() and not overwrite:
        raise InputError(f"{out}: output file exists (use --overwrite to replace it)")
    root = Path(image_root) if image_root is not None else store_image_root(store.directory)
    if root is None:
        raise InputError(f"{store.directory}: no recorded image root; pass --image-root")
    paths = store.paths
    names = store.column("label") if "label" in store.metadata_columns else [
        Path(p).parent.name or "-" for p in paths]
    files = [q if Path(q).is_file() else str(root / q) for q in queries]
    neighbours = [[paths[i] for i in row] for row in indices]
    labels = [[names[i] for i in row] for row in indices]
    return render_gallery(files, neighbours, distances, labels, root, out, metric=metric)
