"""Joining labels to a store's rows: a labels CSV (or a folder per class) matched on ``path`` or another
column, keys normalised as the store holds them, with one-line errors for absent, duplicate or unmatched keys.
Labels never live in the store: they are joined at task time, so a relabelled cell never invalidates one."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from ..data.manifest import CELL_SPACE, label_value
from ..errors import InputError

if TYPE_CHECKING:
    from .store import EmbeddingStore


def match_rows(store: EmbeddingStore, labels_csv: str | os.PathLike, key: str = "path",
               columns: Sequence[str] | None = None,
               missing: str = "error") -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """Align a labels CSV with ``store`` on ``key``: (store row of each matched CSV row, {column: values},
    keys) in CSV order; :meth:`EmbeddingStore.join` reads the embeddings of those rows."""
    if missing not in ("error", "drop"):
        raise InputError(f"missing={missing!r} is not one of error, drop")
    header, rows = label_table(labels_csv)
    if key not in header:
        raise InputError(f"{labels_csv}: no key column {key!r} (columns: {', '.join(header)})")
    wanted = [c for c in header if c != key] if columns is None else list(columns)
    absent = [c for c in wanted if c not in header]
    if absent:
        raise InputError(f"{labels_csv}: no column(s) {', '.join(absent)} (columns: {', '.join(header)})")
    k = header.index(key)
    csv_keys = [normalise_key(row[k], key) for row in rows]
    stored = {value: i for i, value in enumerate(store.column(key))}
    if len(stored) != len(store) and key != "path":
        raise InputError(f"{store.directory}: store column {key!r} is not unique; join on 'path'")
    dupes = _first_duplicates(csv_keys)
    if dupes:
        raise InputError(f"{labels_csv}: duplicate {key} value(s) {', '.join(dupes)}")
    rows_idx = [stored.get(value, -1) for value in csv_keys]
    unmatched = [value for value, i in zip(csv_keys, rows_idx) if i < 0]
    if unmatched and missing == "error":
        raise InputError(f"{labels_csv}: {len(unmatched)} of {len(csv_keys)} {key} value(s) are not in store "
                         f"{store.directory}, e.g. {', '.join(unmatched[:5])}"
                         f"{_hint(unmatched[0], store.paths) if key == 'path' else ''}")
    keep = [j for j, i in enumerate(rows_idx) if i >= 0]
    index = np.asarray([rows_idx[j] for j in keep], dtype=np.int64)
    labels = {c: [label_value(rows[j][header.index(c)]) for j in keep] for c in wanted}  # NaN etc.: ""
    return index, labels, [csv_keys[j] for j in keep]


def label_table(labels: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a labels CSV, or of a folder per class (``path`` relative to it, ``label``)."""
    from ..data.manifest import read_csv_rows, scan_folder

    if not Path(labels).is_dir():
        return read_csv_rows(labels)
    tree = scan_folder(Path(labels))
    return (["path", *tree.columns],
            [[p, *(tree.columns[c][i] for c in tree.columns)] for i, p in enumerate(tree.paths)])


def normalise_key(value: str, key: str) -> str:
    """A join key as the store holds it: stripped; a path with forward slashes and no ``.``/``..`` parts."""
    value = value.strip(CELL_SPACE)
    if key == "path":
        value = PurePosixPath(os.path.normpath(value.replace("\\", "/"))).as_posix()
    return value


def _first_duplicates(values: Sequence[str], limit: int = 5) -> list[str]:
    seen: set[str] = set()
    dupes: list[str] = []
    for value in values:
        if value in seen and value not in dupes:
            dupes.append(value)
            if len(dupes) >= limit:
                break
        seen.add(value)
    return dupes


def _hint(example: str, stored: Sequence[str]) -> str:
    """Suggest the prefix difference when CSV paths and stored paths are relative to different roots."""
    name = PurePosixPath(example).name
    for path in stored:
        if PurePosixPath(path).name == name:
            return f" (a stored path with that file name is {path!r}: are the paths relative to another root?)"
    return ""
