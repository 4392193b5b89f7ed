"""Labels joined to an embedding store (label CSVs or class-per-folder trees, several concatenated) or to
a manifest's images, and the check that a label column can be trained on."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.manifest import Manifest, label_value
from ...errors import InputError


@dataclass
class Labelled:
    """Embeddings with aligned label columns and join keys; ``""`` means no label for that column."""

    X: np.ndarray
    columns: dict[str, list[str]]
    keys: list[str]

    def take(self, idx: np.ndarray) -> Labelled:
        return Labelled(self.X[idx], {c: [v[i] for i in idx] for c, v in self.columns.items()},
                        [self.keys[i] for i in idx])

    def rows_with(self, column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(embeddings, labels, keys) of the rows that have a value for ``column``."""
        values = np.asarray([label_value(v) for v in self.columns[column]])
        keep = values != ""
        if keep.all():  # no copy of the matrix when every row is labelled
            return self.X, values, list(self.keys)
        return self.X[keep], values[keep], [k for k, ok in zip(self.keys, keep) if ok]


def load_labelled(store, labels: Sequence[str], key: str, columns: Sequence[str] | None, *,
                  lazy: bool = False) -> Labelled:
    """Join label CSVs or class folders with the store (several are concatenated), or use its metadata.
    ``lazy``: ``X`` is the store's rows (:class:`~hemoembed.store.matrix.StoreRows`), read part by part when
    used, never the matrix."""
    from ...store.join import match_rows
    from ...store.matrix import StoreRows

    if not labels:
        wanted = list(store.metadata_columns) if columns is None else list(columns)
        absent = [c for c in wanted if c not in store.metadata_columns and c != key]
        if absent:
            raise InputError(f"{store.directory}: no column {absent[0]!r} in the store (it holds "
                             f"{', '.join(store.metadata_columns) or 'no metadata'}); labels are never stored: "
                             "pass --labels with a CSV or the class-per-folder image tree")
        return Labelled(StoreRows(store, np.arange(len(store))) if lazy else store.embeddings(),
                        {c: [label_value(v) for v in store.column(c)] for c in wanted},
                        [str(v) for v in store.column(key)])
    if lazy:
        parts = [match_rows(store, path, key=key, columns=columns) for path in labels]
        X = StoreRows(store, np.concatenate([p[0] for p in parts]))
    else:
        parts = [store.join(path, key=key, columns=columns) for path in labels]
        X = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])  # one CSV: no copy
    return Labelled(X, {c: [v for p in parts for v in p[1][c]] for c in parts[0][1]},
                    [k for p in parts for k in p[2]])


def check_trainable(labels: Sequence[str], column: str, min_per_class: int = 2) -> None:
    """Refuse a column with fewer than two classes or a class with fewer than ``min_per_class`` images."""
    counts = Counter(map(str, labels))
    if len(counts) < 2:
        raise InputError(f"column {column!r}: needs at least 2 classes to train, found "
                         f"{', '.join(map(repr, counts)) or 'none'}")
    small = sorted((n, c) for c, n in counts.items() if n < min_per_class)
    if small:
        n, cls = small[0]
        raise InputError(f"column {column!r}: class {cls!r} has {n} labelled image{'s' * (n != 1)} for training; "
                         f"each class needs at least {min_per_class} (drop or merge the class)")


def manifest_labels(manifest: Manifest, labels_csv: str | os.PathLike | None, column: str = "label") -> list[str]:
    """Label of every manifest row: folder names / manifest column, or joined from ``labels_csv`` on ``path``
    (``""`` for an image the CSV does not label, or whose value is a missing-value marker such as NaN): the one
    join of labels to images by path."""
    if not labels_csv:
        return [label_value(v) for v in manifest.column(column)]
    from ...data.manifest import read_manifest_csv

    table = read_manifest_csv(Path(labels_csv), manifest.root)
    by_path = dict(zip(table.paths, table.column(column), strict=True))
    return [label_value(by_path.get(p, "")) for p in manifest.paths]
