"""Reading a store's rows at any size: the row table without the embedding column, the embedding matrix read
part by part into one preallocated array (never a second copy), selected rows and part-by-part streams
that never hold the matrix, and the parts' footers and schemas (checked against ``store.json``).

:class:`StoreReader` is the reading half of :class:`hemoembed.store.store.EmbeddingStore` (which adds opening,
creating, appending, joins and neighbours); it caches what it reads until :meth:`StoreReader.refresh`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .format import BASE_COLUMNS, check_part_schema, make_part_table
from .parts import parquet_metadata, part_files, read_part


class StoreReader:
    """The rows of the store at ``directory`` (``dim`` columns of ``dtype`` embeddings), read lazily and cached
    until :meth:`refresh`. Subclasses provide ``directory``, ``dim`` and ``dtype``."""

    directory: Path
    dim: int
    dtype: str

    def part_files(self) -> list[Path]:
        """Committed parts in write order (temporary files are hidden and never listed)."""
        return part_files(self.directory)

    @property
    def embeddings_read(self) -> np.ndarray | None:
        """The matrix when :meth:`embeddings` has read it (until :meth:`refresh`), else None: readers that find
        it use it, others stream the parts."""
        return self._embeddings

    def refresh(self) -> None:
        """Forget cached rows (after parts were added by another process)."""
        self._table = None
        self._parts: list[tuple[Path, int]] = []  # the parts read into the table, with their row counts
        self._kept: np.ndarray | None = None  # rows of the parts' concatenation kept (None: all)
        self._embeddings: np.ndarray | None = None
        self._footers: dict[Path, object] = {}  # Parquet footers read, per part

    def table(self):
        """All current rows as a pyarrow Table, without the embedding column (:meth:`embeddings` reads it):
        one row per path; the newest row wins when a file changed."""
        if self._table is None:
            self._table = self._read_table()
        return self._table

    def _read_table(self):
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = self.part_files()
        if not parts:
            return self.empty_table().drop_columns(["embedding"])
        tables = []
        for part in parts:
            columns = [name for name in self._part_schema(part).names if name != "embedding"]
            tables.append(read_part(part, columns))
        self._parts = [(part, t.num_rows) for part, t in zip(parts, tables)]
        table = pa.concat_tables(tables, promote_options="default")  # chunks stay per part: no copy
        for i, name in enumerate(table.column_names):  # a part without a metadata column: "" there, never null
            if name not in BASE_COLUMNS and table.column(i).null_count:
                table = table.set_column(i, name, pc.fill_null(table.column(i), ""))
        if len(pc.unique(table.column("path"))) < table.num_rows:
            # a file changed after it was stored: the newest row wins (last occurrence of each path)
            paths = table.column("path").to_numpy(zero_copy_only=False)
            _, last = np.unique(paths[::-1], return_index=True)
            self._kept = np.sort(len(paths) - 1 - last)
            table = table.take(pa.array(self._kept))
        return table

    def empty_table(self):
        """A zero-row table with this store's base columns."""
        return make_part_table([], [], [], [], np.zeros((0, self.dim), np.float32), dtype=self.dtype)

    @property
    def paths(self) -> list[str]:
        return self.table().column("path").to_pylist()

    def paths_at(self, rows: Sequence[int]) -> list[str]:
        """The paths of some rows (:meth:`table` order), without listing them all: :attr:`paths` builds one Python
        string per row, about 0.1 s at a million rows, too slow for a request that needs ten."""
        import pyarrow as pa

        return self.table().column("path").take(pa.array(self._checked_rows(rows))).to_pylist()

    @property
    def sha256(self) -> list[str]:
        return self.table().column("sha256").to_pylist()

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.table().column_names if c not in BASE_COLUMNS]

    def embeddings(self) -> np.ndarray:
        """(N, D) read-only matrix of the store's dtype (float32, or float16) in :meth:`table` order.

        Read part by part into one preallocated array: peak memory is the matrix plus one part.
        """
        if self._embeddings is None:
            matrix = np.empty((self.table().num_rows, self.dim), np.dtype(self.dtype))
            for start, block in self.iter_embeddings():
                matrix[start:start + len(block)] = block
            matrix.setflags(write=False)
            self._embeddings = matrix
        return self._embeddings

    def iter_embeddings(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, block)`` part by part in :meth:`table` order, in the store's dtype, without holding
        the whole matrix (for passes over stores larger than memory)."""
        if self._embeddings is not None:
            yield 0, self._embeddings
            return
        self.table()
        start = 0
        for part, rows in self._parts:
            block = self._part_embeddings(part)
            if self._kept is None:
                yield start, block
            else:  # rows that lost to a newer row of the same path are skipped
                lo, hi = np.searchsorted(self._kept, [start, start + rows])
                if hi > lo:
                    yield int(lo), block[self._kept[lo:hi] - start]
            start += rows

    def rows_embeddings(self, rows: Sequence[int]) -> np.ndarray:
        """Embeddings of some rows (:meth:`table` order) as float32, reading only the parts that hold them."""
        rows = self._checked_rows(rows)
        out = np.empty((len(rows), self.dim), np.float32)
        for positions, block in self.iter_rows(rows):
            out[positions] = block
        return out

    def iter_rows(self, rows: Sequence[int], rng: np.random.Generator | None = None,
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions in rows, float32 embeddings of those rows)`` one part at a time, reading only the parts
        that hold some of ``rows`` (:meth:`table` order); parts in a random order drawn from ``rng`` when given.
        Memory: one part and its selected rows, never the matrix."""
        rows = self._checked_rows(rows)
        if self._embeddings is not None:  # already read: blocks of the cached matrix
            from .matrix import BLOCK_ROWS

            starts = np.arange(0, len(rows), BLOCK_ROWS)
            for start in starts if rng is None else rng.permutation(starts):
                positions = np.arange(start, min(start + BLOCK_ROWS, len(rows)))
                yield positions, np.asarray(self._embeddings[rows[positions]], np.float32)
            return
        source = rows if self._kept is None else self._kept[rows]  # rows of the parts' concatenation
        bounds = np.cumsum([0] + [count for _, count in self._parts])
        part_of = np.searchsorted(bounds, source, side="right") - 1
        by_part = np.argsort(part_of, kind="stable")
        parts, firsts = np.unique(part_of[by_part], return_index=True)
        groups = np.split(by_part, firsts[1:])
        for g in range(len(parts)) if rng is None else rng.permutation(len(parts)):
            p, positions = parts[g], groups[g]
            block = self._part_embeddings(self._parts[p][0])[source[positions] - bounds[p]]
            yield positions, np.asarray(block, np.float32)

    def _checked_rows(self, rows: Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, np.int64).reshape(-1)
        n = self.table().num_rows
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise InputError(f"{self.directory}: row index out of range (the store has {n} rows)")
        return rows

    def _part_embeddings(self, part: Path) -> np.ndarray:
        """One part's (rows, D) embeddings in the store's dtype (a view of the Arrow buffer when possible)."""
        column = read_part(part, ["embedding"]).column(0)
        chunks = [np.asarray(chunk.flatten()).reshape(-1, self.dim) for chunk in column.chunks]
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.dtype(self.dtype))

    def column(self, name: str) -> list:
        """One column of :meth:`table` as a list; a clear error names the available ones."""
        table = self.table()
        if name not in table.column_names:
            raise InputError(f"{self.directory}: no column {name!r} in the store "
                             f"(columns: {', '.join(c for c in table.column_names if c != 'embedding')})")
        return table.column(name).to_pylist()

    def footer(self, part: Path):
        """A part's Parquet footer (row count, schema, key-value metadata), read once until :meth:`refresh`."""
        if part not in self._footers:
            self._footers[part] = parquet_metadata(part)
        return self._footers[part]

    def _part_schema(self, part: Path):
        """A part's Arrow schema, checked against the header."""
        schema = self.footer(part).schema.to_arrow_schema()
        check_part_schema(schema, self.dim, part, self.dtype)
        return schema
