"""``hemoembed tsne``: fit a t-SNE map of a store and draw it by columns, or place new cells onto a saved map.

The runs behind the command, callable from Python: :func:`fit_map` and :func:`place_on_map` write the
same files the command writes (coordinates CSV, PNGs, the reusable map) and return what they wrote.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import atomic_write_text, csv_text, safe_name
from ..errors import InputError, MismatchError
from ..progress import ProgressFactory, stage
from .tsne import TsneConfig, TsneMap


@dataclass(frozen=True)
class TsneRun:
    """What one ``hemoembed tsne`` run read and wrote (saved as tsne_run.json; ``color_by`` keeps the
    file's original key: the columns the map was coloured by)."""

    store: str = ""
    labels: str = ""
    color_by: tuple[str, ...] = ()
    map: str = ""
    query: str = ""
    tsne: dict = field(default_factory=dict)


def colour_columns(store, labels: str | os.PathLike | None, colour_by: tuple[str, ...]) -> dict[str, list[str]]:
    """Per stored row, the values of each colour column (labels CSV first, then store metadata)."""
    paths = store.paths
    found: dict[str, list[str]] = {}
    if labels is not None:
        _, columns, keys = store.join(labels, key="path", missing="drop")
        if not keys:
            raise InputError(f"{labels}: none of its paths are in store {store.directory}")
        row = {k: i for i, k in enumerate(keys)}
        for name, values in columns.items():
            found[name] = [values[row[p]] if p in row else "unlabelled" for p in paths]
    for name in store.metadata_columns:
        found.setdefault(name, [str(v) for v in store.column(name)])
    wanted = list(colour_by) or (["label"] if "label" in found else [])
    absent = [c for c in wanted if c not in found]
    if absent:
        raise InputError(f"--colour-by {absent[0]}: no such column in "
                         f"{'the labels CSV or ' if labels else ''}the store (have: {', '.join(found) or 'none'})")
    return {c: found[c] for c in wanted}


def write_coordinates(path: Path, keys, coords, columns: dict[str, list[str]]) -> None:
    """``path,x,y,<columns>`` CSV of map coordinates."""
    rows = [["path", "x", "y", *columns]]
    rows += [[k, f"{x:.5f}", f"{y:.5f}", *(columns[c][i] for c in columns)] for i, (k, (x, y)) in
             enumerate(zip(keys, coords))]
    atomic_write_text(path, csv_text(rows))


def fit_map(store_dir: str | os.PathLike, out: str | os.PathLike, *, labels: str | os.PathLike | None = None,
            colour_by: tuple[str, ...] = (), config: TsneConfig = TsneConfig(),
            progress: ProgressFactory | None = None) -> list:
    """Fit a map of a store into ``out``: the map, ``coordinates.csv``, one ``map_<column>.png`` per colour
    column and ``tsne_run.json``. Returns ``[number of cells, files written...]``."""
    from ..config import save_config
    from ..plotting import pyplot
    from ..store.store import EmbeddingStore
    from .plots import save_figure, scatter_categories

    out = Path(out)
    store = EmbeddingStore.open(store_dir)
    colours = colour_columns(store, labels, colour_by)
    with stage(progress, config.total_iterations, "t-SNE") as advance:
        tsne_map = TsneMap.fit(store.embeddings(), store.paths, config,
                               source={"store": str(store_dir), "fingerprint": store.fingerprint},
                               progress=advance)
    tsne_map.save(out)
    write_coordinates(out / "coordinates.csv", tsne_map.keys, tsne_map.coords, colours)
    written = [len(tsne_map.keys), out / "coordinates.csv"]
    plt = pyplot()
    for name, values in (colours or {"": None}).items():
        fig, ax = plt.subplots(figsize=(8, 6.5))
        scatter_categories(ax, tsne_map.coords, values, legend_title=name,
                           title=f"t-SNE of {len(values or tsne_map.keys)} cells" + (f" by {name}" if name else ""))
        written.append(save_figure(fig, out / (f"map_{safe_name(name)}.png" if name else "map.png")))
    save_config(TsneRun(store=str(store_dir), labels=str(labels or ""), color_by=tuple(colour_by),
                        tsne=dict(vars(config))), out / "tsne_run.json")
    return written


def place_on_map(map_dir: str | os.PathLike, query_dir: str | os.PathLike, out: str | os.PathLike) -> int:
    """Place the cells of store ``query_dir`` onto a saved map: ``query_coordinates.csv``,
    ``query_map.png`` and ``tsne_run.json`` in ``out``. Returns the number of cells placed."""
    from ..config import save_config
    from ..data.manifest import read_csv_rows
    from ..plotting import pyplot
    from ..store.store import EmbeddingStore, short
    from .plots import save_figure, scatter_categories

    map_dir, out = Path(map_dir), Path(out)
    tsne_map = TsneMap.load(map_dir)
    store = EmbeddingStore.open(query_dir)
    fingerprint = tsne_map.source.get("fingerprint", "")
    if fingerprint and fingerprint != store.fingerprint:
        raise MismatchError(f"{query_dir}: store was built by encoder {short(store.fingerprint)} but map {map_dir} "
                            f"by encoder {short(fingerprint)}; embed the new cells with the map's encoder")
    # part by part into the map's (PCA) feature space: the store's full-width matrix is never held
    features = [tsne_map.project(block) for _, block in store.iter_embeddings()]
    placed = tsne_map.place(np.concatenate(features) if features else tsne_map.project(store.embeddings()))
    meta = {c: [str(v) for v in store.column(c)] for c in store.metadata_columns}
    write_coordinates(out / "query_coordinates.csv", store.paths, placed, meta)
    reference_colours, name = None, ""
    if (map_dir / "coordinates.csv").is_file():
        header, rows = read_csv_rows(map_dir / "coordinates.csv")
        if len(header) > 3:
            name, reference_colours = header[3], [row[3] for row in rows]
    fig, ax = pyplot().subplots(figsize=(8, 6.5))
    scatter_categories(ax, tsne_map.coords, reference_colours, legend_title=name, alpha=0.35,
                       title=f"{len(placed)} new cells placed onto a map of {len(tsne_map.keys)}")
    ax.scatter(placed[:, 0], placed[:, 1], marker="*", s=90 if len(placed) < 200 else 30, c="black",
               edgecolors="white", linewidths=0.5, label=f"new cells ({len(placed)})", zorder=3)
    handles, texts = ax.get_legend_handles_labels()
    legend = ax.legend(handles, texts, title=name or None, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                       frameon=False)
    for handle in legend.legend_handles:  # the faint, tiny background points would give invisible swatches
        handle.set_alpha(1.0)
        handle.set_sizes([30])
    save_figure(fig, out / "query_map.png")
    save_config(TsneRun(map=str(map_dir), query=str(query_dir)), out / "tsne_run.json")
    return len(placed)
