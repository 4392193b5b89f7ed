"""The frozen embedding store: ``store.json`` plus immutable, append-only Parquet parts.

A store belongs to exactly one encoder (its fingerprint: architecture, preprocessing record and weights,
see :func:`hemoembed.model.encoder.fingerprint`) and records, per image, the path relative to the image
root, the sha256 of the file bytes, its size, the embedding (fixed-size list of float32, or float16 when the
store was created so) and the manifest's metadata columns (strings; "" where a part lacks a column).
Labels never live here (:mod:`.join` joins them at task time). Parts are committed so that a crash at any
moment leaves a valid store (:mod:`.parts`). Nothing is trusted on reading: ``store.json`` and every part's
schema are checked against each other (:mod:`.format`), and a writer re-reads ``store.json`` before each
part so it can never add rows to a store that was replaced underneath it.

Reading scales to millions of rows (:mod:`.reader`): the row table (paths, hashes, metadata) is read without
the embedding column, the embedding matrix is read part by part into one preallocated array (never a second
copy), and :meth:`EmbeddingStore.info` reads only Parquet footers and ``store.json`` (the counts the writer
recorded, :mod:`.summary`).

Format 1 stores (hemoembed before format 2) carry a weights-only fingerprint: they stay readable, but no
encoder can be matched to them (the message says how to rebuild).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import atomic_write_text, to_dict
from ..data.manifest import label_value
from ..data.preprocess import PreprocessingRecord
from ..errors import HemoembedError, InputError, MismatchError
from .format import (  # noqa: F401 - re-exported: the store's public names
    BASE_COLUMNS,
    DTYPES,
    FINGERPRINT_RE,
    FORMAT_VERSION,
    STORE_FILE,
    StoreHeader,
    check_encoder,
    check_part_schema,
    make_part_table,
    read_header,
    short,
)
from .join import match_rows
from .parts import remove_stale_temporaries, write_part
from .reader import StoreReader
from .summary import RowCounts, committed, with_counts


class EmbeddingStore(StoreReader):
    """Read (and append to) an embedding store directory. Use :meth:`open`, :meth:`create` or
    :meth:`open_or_create`; rows are read lazily and cached until :meth:`refresh` (:class:`.reader.StoreReader`)."""

    def __init__(self, directory: Path, header: StoreHeader) -> None:
        self.directory = Path(directory)
        self.header = header
        self._index = None  # the approximate neighbour index, once loaded
        self._counts: RowCounts | None = None  # what this writer has counted (see :mod:`.summary`)
        self.refresh()

    # ----------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, directory: str | os.PathLike) -> EmbeddingStore:
        """Open an existing store; a clear error when ``directory`` is not one."""
        directory = Path(directory)
        path = directory / STORE_FILE
        if not path.is_file():
            raise InputError(f"{directory}: not an embedding store (no {STORE_FILE}; create one with hemoembed embed)")
        store = cls(directory, read_header(path))
        for part in store.part_files():
            store._part_schema(part)
        return store

    @classmethod
    def create(cls, directory: str | os.PathLike, fingerprint: str, record: PreprocessingRecord,
               dim: int, dtype: str = "float32") -> EmbeddingStore:
        """Create an empty store for one encoder (``store.json`` written atomically); ``dtype`` is how the
        embeddings are stored (float16 halves disk and memory)."""
        directory = Path(directory)
        if (directory / STORE_FILE).exists():
            raise InputError(f"{directory}: a store already exists here")
        if not FINGERPRINT_RE.match(str(fingerprint)) or int(dim) < 1:
            raise InputError(f"{directory}: fingerprint {fingerprint!r} / dimension {dim} is not a valid encoder's")
        if dtype not in DTYPES:
            raise InputError(f"{directory}: embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        header = StoreHeader(fingerprint=fingerprint, record=record.to_dict(), dim=int(dim), dtype=dtype,
                             created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                             store_id=uuid.uuid4().hex)
        directory.mkdir(parents=True, exist_ok=True)
        try:  # never replaces a header: of two writers creating the store at once, exactly one succeeds
            atomic_write_text(directory / STORE_FILE, json.dumps(to_dict(header), indent=2, sort_keys=True) + "\n",
                              replace=False)
        except FileExistsError:
            raise InputError(f"{directory}: a store already exists here") from None
        return cls(directory, header)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, fingerprint: str, record: PreprocessingRecord,
                       dim: int, dtype: str | None = None) -> EmbeddingStore:
        """Open the store at ``directory`` (refusing another encoder, or another ``dtype`` when one is given)
        or create it (``dtype`` float32 unless given)."""
        if not (Path(directory) / STORE_FILE).is_file():
            try:
                return cls.create(directory, fingerprint, record, dim, dtype or "float32")
            except InputError:
                if not (Path(directory) / STORE_FILE).is_file():
                    raise  # not "created by a concurrent writer just now": a real error
        store = cls.open(directory)
        store.check_encoder(fingerprint, record, dim)
        store.check_dtype(dtype)
        return store

    def check_dtype(self, dtype: str | None) -> None:
        """Refuse appending ``dtype`` embeddings to a store kept in another type (None: any)."""
        if dtype is not None and dtype != self.dtype:
            raise MismatchError(f"{self.directory}: store embeddings are {self.dtype}, not {dtype} "
                                "(drop the dtype option to append, or use a new store)")

    def check_encoder(self, fingerprint: str, record: PreprocessingRecord | None = None,
                      dim: int | None = None) -> None:
        """Refuse an encoder that did not produce this store (names both fingerprints)."""
        check_encoder(self.header, self.directory, fingerprint, record, dim)

    # ----------------------------------------------------------------------------------- properties
    @property
    def fingerprint(self) -> str:
        return self.header.fingerprint

    @property
    def record(self) -> PreprocessingRecord:
        return PreprocessingRecord.from_dict(self.header.record)

    @property
    def dim(self) -> int:
        return int(self.header.dim)

    @property
    def dtype(self) -> str:
        """How the embeddings are stored: ``float32`` or ``float16``."""
        return self.header.dtype

    def __len__(self) -> int:
        return self.table().num_rows

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.directory)!r}, rows={len(self)}, dim={self.dim}, "
                f"encoder={short(self.fingerprint)})")

    # ----------------------------------------------------------------------------------- reading
    def refresh(self) -> None:
        """Forget cached rows and the loaded neighbour index (after parts were added by another process)."""
        super().refresh()
        self._index = None

    def join(self, labels_csv: str | os.PathLike, key: str = "path", columns: Sequence[str] | None = None,
             missing: str = "error") -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
        """Align a labels CSV with the store on ``key``: (embeddings, {column: values}, keys) in CSV order.

        ``labels_csv`` may also be a folder per class (``path`` relative to it, ``label`` its folder name).
        ``missing="error"`` refuses CSV keys absent from the store (listing some); ``"drop"`` skips them.
        """
        index, labels, keys = match_rows(self, labels_csv, key=key, columns=columns, missing=missing)
        return self._rows_matrix(index), labels, keys

    def _rows_matrix(self, index: np.ndarray) -> np.ndarray:
        """The embeddings of rows ``index``: the whole matrix when ``index`` lists the store in order, else only
        those rows (from the matrix when already read, or read part by part), never the matrix as well."""
        if len(index) == len(self) and np.array_equal(index, np.arange(len(self))):
            return self.embeddings()
        if self.embeddings_read is None:
            return self.rows_embeddings(index)
        return self.embeddings_read[index]

    def labelled_rows(self, labels: str | os.PathLike | None = None, column: str = "label",
                      key: str = "path") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(rows, y, keys)``: the store rows (:meth:`table` order) with a value in ``column``, their labels and
        ``key`` values, as :meth:`labelled` finds them, without reading any embedding (read the rows a task
        needs with :meth:`rows_embeddings`)."""
        if labels is None:
            index, values, keys = np.arange(len(self)), [str(v) for v in self.column(column)], self.column(key)
        else:
            index, columns, keys = match_rows(self, labels, key=key, columns=[column])
            values = columns[column]
        y = np.asarray([label_value(v) for v in values])
        keep = y != ""
        return index[keep], y[keep], [str(k) for k, ok in zip(keys, keep) if ok]

    def labelled(self, labels: str | os.PathLike | None = None, column: str = "label", key: str = "path", *,
                 return_keys: bool = False):
        """``(X, y)``: embeddings and labels of the rows with a value in ``column`` (others are left out), from
        ``labels`` (a CSV or a folder per class, joined on ``key``) or, without it, the store's own column.
        ``return_keys=True`` adds each row's ``key`` value: ``(X, y, keys)``. Only the labelled rows are read
        (:meth:`labelled_rows`); all of them, in store order, are the store's matrix itself (read-only)."""
        rows, y, keys = self.labelled_rows(labels, column, key)
        X = self._rows_matrix(rows)
        return (X, y, keys) if return_keys else (X, y)

    def neighbors(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """Deprecated spelling of :meth:`neighbours` (kept for one release)."""
        import warnings

        warnings.warn("EmbeddingStore.neighbors is deprecated; use EmbeddingStore.neighbours", DeprecationWarning,
                      stacklevel=2)
        return self.neighbours(*args, **kwargs)

    def neighbours(self, vectors: np.ndarray, k: int = 10, metric: str = "cosine",
                   exclude: Sequence[int] | None = None,
                   approximate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored rows of each vector: (indices (Q, k) int64, distances (Q, k) float32).

        Exact by default (streamed part by part unless the matrix is already read); ``approximate`` uses the
        store's saved index (:mod:`hemoembed.store.index`, built by ``hemoembed store index``). ``exclude``
        gives, per query, one store row to leave out (the query itself), or -1.
        """
        from .neighbors import knn, knn_blocks

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.shape[-1] != self.dim:
            raise MismatchError(f"query vectors have dimension {vectors.shape[-1]}, "
                                f"store {self.directory} has {self.dim}")
        if approximate:
            from .index import NeighbourIndex

            if self._index is None or self._index.info.metric != metric:
                self._index = NeighbourIndex.load(self, metric)
            return self._index.search(vectors, k, exclude=None if exclude is None else np.asarray(exclude))
        if self.embeddings_read is not None:
            return knn(vectors, self.embeddings_read, k, metric=metric, exclude=exclude)
        return knn_blocks(vectors, self.iter_embeddings(), len(self), k, metric, exclude)

    def info(self) -> dict:
        """Counts, encoder, dimension, parts and metadata columns (for ``hemoembed store info``): see
        :func:`.summary.describe` (Parquet footers and ``store.json`` only, at any size, for stores whose
        writer recorded its counts)."""
        from .summary import describe

        return describe(self)

    # ----------------------------------------------------------------------------------- writing
    def append(self, table) -> Path:
        """Commit ``table`` (built by :func:`make_part_table`) as the next immutable part; returns its path."""
        if table.num_rows == 0:
            raise InputError("refusing to write an empty store part")
        check_part_schema(table.schema, self.dim, self.directory / "(new part)", self.dtype)
        self._check_header_unchanged()
        table, counts = with_counts(self._counts, table, self.part_files(), self.header.store_id)
        self._counts = None  # until the part is committed
        target = write_part(self.directory, table, before_visible=self._check_header_unchanged)
        self._counts = committed(counts, target, self.part_files())
        self.refresh()
        return target

    def _check_header_unchanged(self) -> None:
        """Refuse to write when ``store.json`` is no longer the one this store was opened with."""
        try:
            current = read_header(self.directory / STORE_FILE)
        except HemoembedError as exc:
            raise MismatchError(f"{self.directory}: the store was removed or replaced while writing ({exc})") from None
        if to_dict(current) != to_dict(self.header):
            raise MismatchError(f"{self.directory}: the store was replaced while writing (now encoder "
                                f"{short(current.fingerprint)}, this writer's {short(self.fingerprint)}); "
                                "nothing more is added to it")

    def remove_stale_temporaries(self) -> int:
        """Delete temporary part files left by writers that are no longer running."""
        return remove_stale_temporaries(self.directory)
