"""What the app serves against: the reference store, its encoder, the SVM, the reference labels, the map.

Everything is checked together at start-up, with one-line errors: the SVM and the map must come from
the store's encoder (fingerprints), the encoder is the one recorded in the store's ``embed_config.json``
(or ``--encoder``) and must reproduce the store's fingerprint, and the reference labels are those the
SVM was fitted on (``fit_svm_config.json`` beside it) unless ``--labels`` names others.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import lib

LARGE_STORE = 100_000  # rows above which the start-up line advises an index: exact search took 1.9 s a cell at 1M


@dataclass
class Reference:
    """The reference side of the app (read-only while the server runs)."""

    store: Any  # EmbeddingStore
    store_dir: Path
    image_root: Path | None
    svm_dir: Path
    svm_meta: dict
    column: str
    labels: dict[str, str]  # store path → reference label ("" rows are unlabelled and absent)
    row_labels: list[str]  # per store row, "" when unlabelled
    map: Any | None  # TsneMap
    map_rows: np.ndarray | None  # per map point, its store row
    index: Any | None = None  # the store's approximate index (NeighbourIndex) when it has a current one
    neighbour_search: str = "exact"  # how neighbours are found, as the server reports it at start-up
    _reading: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fingerprint(self) -> str:
        return self.store.fingerprint

    def neighbours(self, vector: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` nearest reference cells (cosine): row, path, label, distance. Through the store's
        approximate index when it has a current one (18.5 ms p50 at a million rows, measured), else exactly on the
        store's matrix, read on the first call and kept: one copy (4.9 GB at a million float32 rows, then 1.9 s a
        cell), since reading every part per cell instead took 41 s a cell there."""
        if self.index is not None:
            rows, dists = self.index.search(vector[None, :], k)
        else:
            with self._reading:  # two first detail views at once must not read two copies
                self.store.embeddings()  # read once and kept (one copy): no pass over every part per cell
            rows, dists = self.store.neighbours(vector[None, :], k=k)
        found = [(int(r), float(d)) for r, d in zip(rows[0], dists[0]) if r >= 0]
        paths = self.store.paths_at([r for r, _ in found])
        return [{"row": r, "path": path, "label": self.row_labels[r], "distance": round(d, 5)}
                for (r, d), path in zip(found, paths)]

    def image_file(self, row: int) -> Path:
        """The file of reference row ``row`` (a row number from the client, never a path)."""
        if self.image_root is None:
            raise lib.InputError(f"{self.store_dir}: no image root recorded; start the server with --image-root")
        if not 0 <= row < len(self.store):
            raise lib.InputError(f"reference row {row} does not exist (0..{len(self.store) - 1})")
        root = self.image_root.resolve()
        path = (root / self.store.paths_at([row])[0]).resolve()
        if root not in path.parents:
            raise lib.InputError(f"reference row {row}: its path leaves the image root")
        return path


def open_reference(store_dir: Path, svm_dir: Path, map_dir: Path | None = None, *, column: str | None = None,
                   labels: tuple[Path, ...] = (), image_root: Path | None = None) -> Reference:
    """Open and cross-check the reference store, SVM, labels and map (see the module docstring)."""
    store = lib.EmbeddingStore.open(store_dir)
    if len(store) == 0:
        raise lib.InputError(f"{store_dir}: the reference store is empty")
    folder = lib.column_folder(svm_dir, column)
    meta = lib.read_meta(folder)
    lib.check_fingerprint(meta, store.fingerprint, f"store {store_dir}")  # refuses another encoder's model
    column = meta["column"]
    label_sources, key = _label_sources(folder, labels)
    data = lib.load_labelled(store, [str(p) for p in label_sources], key, [column], lazy=True)  # labels only
    _, values, keys = data.rows_with(column)
    if key != "path":
        to_path = dict(zip(store.column(key), store.paths))
        keys = [to_path[k] for k in keys]
    known = dict(zip(keys, values.tolist()))
    unknown = sorted(set(known.values()) - set(meta["classes"]))
    if unknown:
        raise lib.InputError(f"reference labels of column {column!r} hold class(es) {', '.join(unknown[:5])} that "
                             f"SVM {folder} does not know ({', '.join(meta['classes'])})")
    row_labels = [known.get(p, "") for p in store.paths]
    tsne_map, map_rows = _open_map(map_dir, store, store_dir) if map_dir is not None else (None, None)
    lib.load_svm(folder, store.fingerprint, where=f"store {store_dir}")  # a damaged model.skops, once the rest holds
    root = Path(image_root) if image_root is not None else lib.store_image_root(store_dir)
    index, search = _neighbour_search(store)
    return Reference(store, Path(store_dir), root, folder, meta, column, known, row_labels, tsne_map, map_rows,
                     index, search)


def _neighbour_search(store) -> tuple[Any | None, str]:
    """The store's current approximate index, if any, and a line saying how neighbours will be found."""
    index, why_not = lib.saved_index(store, "cosine")
    if index is not None:
        return index, (f"approximate (the store's index: recall@{index.info.k} {index.info.recall:.3f} "
                       f"measured at build)")
    if why_not:
        return None, f"exact, because {why_not}"
    if len(store) > LARGE_STORE:
        return None, (f"exact (seconds a cell at {len(store):,} rows; an index answers in milliseconds: "
                      f"hemoembed store index {store.directory})")
    return None, "exact"


def load_store_encoder(reference: Reference, encoder: Path | None = None):
    """The encoder recorded in the store (or ``encoder``), refused unless it built the store."""
    path = Path(encoder) if encoder is not None else _recorded_encoder(reference.store_dir)
    model, record = lib.load_encoder(path)
    reference.store.check_encoder(lib.fingerprint(model), record, int(model.output_shape[-1]))
    return model, record, path


def _label_sources(folder: Path, labels: tuple[Path, ...]) -> tuple[list[Path], str]:
    """``--labels``, else the labels the SVM was fitted on (its fit_svm_config.json), else store metadata."""
    if labels:
        return list(labels), "path"
    for config in (folder / "fit_svm_config.json", folder.parent / "fit_svm_config.json"):
        if config.is_file():
            data = json.loads(config.read_text())
            sources = [Path(p) for p in data.get("labels") or []]
            missing = [p for p in sources if not p.exists()]
            if missing:
                raise lib.InputError(f"{config}: the SVM's labels {missing[0]} are gone; pass --labels CSV")
            return sources, data.get("key") or "path"
    return [], "path"


def _open_map(map_dir: Path, store, store_dir: Path):
    tsne_map = lib.TsneMap.load(map_dir)
    source = tsne_map.source.get("fingerprint", "")
    if source and source != store.fingerprint:
        raise lib.MismatchError(f"{map_dir}: map was made from encoder {lib.short(source)}, the store {store_dir} "
                                f"from {lib.short(store.fingerprint)}")
    index = {p: i for i, p in enumerate(store.paths)}
    rows = np.asarray([index.get(k, -1) for k in tsne_map.keys], np.int64)
    if (rows < 0).any():
        raise lib.MismatchError(f"{map_dir}: {int((rows < 0).sum())} map point(s) are not in store {store_dir}, "
                                f"e.g. {tsne_map.keys[int(np.argmin(rows))]}")
    return tsne_map, rows


def _recorded_encoder(store_dir: Path) -> Path:
    config = Path(store_dir) / lib.EMBED_CONFIG
    try:
        recorded = json.loads(config.read_text()).get("encoder") or ""
    except (OSError, ValueError):
        recorded = ""
    if not recorded:
        raise lib.InputError(f"{store_dir}: no encoder recorded in {lib.EMBED_CONFIG}; pass --encoder ENCODER")
    for candidate in (Path(recorded), Path(store_dir).parent / recorded):
        if candidate.is_file():
            return candidate
    raise lib.InputError(f"{store_dir}: the recorded encoder {recorded} is not there; pass --encoder ENCODER")
