"""What a store holds, read cheaply: :func:`describe` (``hemoembed store info``) and the counts a writer
records with every part so that it stays cheap at any size.

Two of the numbers are distinct counts over the whole store: ``rows`` (paths; the newest row of a path
wins) and ``unique_images`` (sha256 values among those rows). Computing them needs every path and hash
(over a second at a million rows). So :meth:`EmbeddingStore.append <.store.EmbeddingStore.append>` keeps
them in a :class:`RowCounts` and writes them into each part's Parquet footer (key-value metadata
``hemoembed.counts``: the store's counts with that part included, how many parts it followed, the
``store_id``). :func:`describe` then reads only footers and ``store.json``; it falls back to reading the
``path`` and ``sha256`` columns when the newest part has no such record (stores written before), or one
written without knowing every earlier part (two shards committing at the same moment), or one that does
not add up. Engines that read the parts directly ignore the key.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .format import BASE_COLUMNS
from .parts import read_part

if TYPE_CHECKING:
    from .store import EmbeddingStore

COUNTS_KEY = b"hemoembed.counts"


class RowCounts:
    """A writer's running distinct counts: the newest sha256 of every path, and how many of those rows
    hold each sha256; ``parts`` are the committed parts counted so far, in order."""

    def __init__(self) -> None:
        self.sha_of: dict[str, str] = {}
        self.holders: Counter = Counter()
        self.parts: list[str] = []

    @property
    def rows(self) -> int:
        return len(self.sha_of)

    @property
    def unique_images(self) -> int:
        return len(self.holders)

    def add(self, paths: Sequence[str], shas: Sequence[str]) -> None:
        """Count rows appended after those already counted (a known path's newer row replaces its older)."""
        for path, sha in zip(paths, shas):
            old = self.sha_of.get(path)
            if old is not None:
                self.holders[old] -= 1
                if not self.holders[old]:
                    del self.holders[old]
            self.sha_of[path] = sha
            self.holders[sha] += 1

    def sync(self, parts: Sequence[Path]) -> RowCounts:
        """Bring the counts up to the committed ``parts`` (reading keys only of those not counted yet);
        start over when the counted parts are no longer the first ones (the folder was rebuilt)."""
        names = [p.name for p in parts]
        counts = self if names[:len(self.parts)] == self.parts else RowCounts()
        for part in parts[len(counts.parts):]:
            keys = read_part(part, ["path", "sha256"])
            counts.add(keys.column("path").to_pylist(), keys.column("sha256").to_pylist())
            counts.parts.append(part.name)
        return counts

    def record(self, store_id: str) -> bytes:
        """The footer value of the part about to be committed after :attr:`parts` (rows already added)."""
        return json.dumps({"rows": self.rows, "unique_images": self.unique_images, "parts_before": len(self.parts),
                           "previous": self.parts[-1] if self.parts else "", "store_id": store_id}).encode()


def with_counts(counts: RowCounts | None, table: Any, parts: Sequence[Path], store_id: str) -> tuple[Any, RowCounts]:
    """``table`` (a part about to be committed after ``parts``) with the store's counts in its schema metadata,
    and those counts (``counts`` brought up to date, or new; it is changed)."""
    counts = (counts or RowCounts()).sync(parts)
    counts.add(table.column("path").to_pylist(), table.column("sha256").to_pylist())
    return table.replace_schema_metadata({**(table.schema.metadata or {}), COUNTS_KEY: counts.record(store_id)}), counts


def committed(counts: RowCounts, target: Path, parts: Sequence[Path]) -> RowCounts | None:
    """``counts`` once their part got the name ``target`` among the committed ``parts``; None when another
    writer's part came in between (its rows are not in the record: the next writer counts again)."""
    counts.parts.append(target.name)
    return counts if [p.name for p in parts[:len(counts.parts)]] == counts.parts else None


def recorded_counts(footer: Any, parts: Sequence[Path], store_id: str, written: int) -> tuple[int, int] | None:
    """``(rows, unique_images)`` from the newest part's footer (``footer``) when its record was written
    after exactly the parts before it in ``parts`` and adds up (``written``: rows of all parts); else None."""
    try:
        data = json.loads((footer.metadata or {})[COUNTS_KEY])
        rows, unique, before = (data[k] for k in ("rows", "unique_images", "parts_before"))
        ok = (all(type(v) is int for v in (rows, unique, before)) and data.get("store_id") == store_id
              and before == len(parts) - 1 and data.get("previous") == (parts[-2].name if before else "")
              and 0 <= unique <= rows <= written and (rows > 0) == (written > 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return (rows, unique) if ok else None


def counted_rows(store: EmbeddingStore, parts: Sequence[Path]) -> tuple[int, int]:
    """``(rows, unique_images)`` the slow way: the ``path`` and ``sha256`` columns of every part."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not parts:
        return 0, 0
    keys = pa.concat_tables([read_part(p, ["path", "sha256"]) for p in parts])
    rows = len(pc.unique(keys.column("path")))
    if rows < keys.num_rows:
        keys = store.table()  # a file changed after it was stored: count the newest rows only
    return rows, len(pc.unique(keys.column("sha256"))) if rows else 0


def describe(store: EmbeddingStore) -> dict:
    """Counts, encoder, dimension, dtype, parts and metadata columns of ``store`` (``hemoembed store info``)."""
    parts = store.part_files()
    footers = {p: store.footer(p) for p in parts}
    written = sum(meta.num_rows for meta in footers.values())
    counts = recorded_counts(footers[parts[-1]], parts, store.header.store_id, written) if parts else (0, 0)
    rows, unique = counts if counts is not None else counted_rows(store, parts)
    metadata: list[str] = []
    for meta in footers.values():
        metadata += [n for n in meta.schema.to_arrow_schema().names if n not in BASE_COLUMNS + tuple(metadata)]
    header = store.header
    return {
        "directory": str(store.directory), "rows": rows, "unique_images": unique,
        "fingerprint": header.fingerprint, "dim": store.dim, "dtype": header.dtype,
        "record": header.record, "parts": len(parts),
        "part_rows": {p.name: meta.num_rows for p, meta in footers.items()},
        "bytes": sum(p.stat().st_size for p in parts),
        "metadata_columns": metadata if rows else [],
        "format_version": header.format_version, "hemoembed_version": header.hemoembed_version,
        "created": header.created,
    }
