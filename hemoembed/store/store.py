"""The frozen embedding store: ``store.json`` plus immutable, append-only Parquet parts.

A store belongs to exactly one encoder (its weight fingerprint) and records, per image, the path relative
to the image root, the sha256 of the file bytes, its size, the embedding (fixed-size list of float32) and
the manifest's metadata columns. Labels never live here: they are joined from CSVs at task time, so a
relabelled cell never invalidates a store. Parts are written to a hidden temporary name and hard-linked to
their final name (never replacing an existing part), so after a crash at any moment the store is valid.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from .._version import __version__
from ..config import atomic_write_text, from_dict, to_dict
from ..data.preprocess import PreprocessingRecord
from ..errors import InputError, MismatchError

FORMAT_VERSION = 1
STORE_FILE = "store.json"
PART_GLOB = "part-*.parquet"
_PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
BASE_COLUMNS = ("path", "sha256", "width", "height", "embedding")


@dataclass
class StoreHeader:
    """Contents of ``store.json``: what produced the embeddings and how to read them."""

    format_version: int = FORMAT_VERSION
    fingerprint: str = ""
    record: dict = field(default_factory=dict)
    dim: int = 0
    dtype: str = "float32"
    hemoembed_version: str = __version__
    created: str = ""


def short(fp: str) -> str:
    """First 12 hex digits of a fingerprint, for messages."""
    return fp[:12]


class EmbeddingStore:
    """Read (and append to) an embedding store directory. Use :meth:`open`, :meth:`create` or
    :meth:`open_or_create`; rows are read lazily and cached until :meth:`refresh`."""

    def __init__(self, directory: Path, header: StoreHeader) -> None:
        self.directory = Path(directory)
        self.header = header
        self._table = None
        self._embeddings: np.ndarray | None = None

    # ----------------------------------------------------------------------------------- opening
    @classmethod
    def open(cls, directory: str | os.PathLike) -> EmbeddingStore:
        """Open an existing store; a clear error when ``directory`` is not one."""
        directory = Path(directory)
        path = directory / STORE_FILE
        if not path.is_file():
            raise InputError(f"{directory}: not an embedding store (no {STORE_FILE}; create one with hemoembed embed)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot read store header ({exc})") from None
        version = data.get("format_version", 0) if isinstance(data, dict) else 0
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise MismatchError(f"{path}: store format {version} is newer than this hemoembed "
                                f"({__version__}) reads (format {FORMAT_VERSION}); upgrade hemoembed")
        return cls(directory, from_dict(StoreHeader, data, source=str(path)))

    @classmethod
    def create(cls, directory: str | os.PathLike, fingerprint: str, record: PreprocessingRecord,
               dim: int) -> EmbeddingStore:
        """Create an empty store for one encoder (``store.json`` written atomically)."""
        directory = Path(directory)
        if (directory / STORE_FILE).exists():
            raise InputError(f"{directory}: a store already exists here")
        header = StoreHeader(fingerprint=fingerprint, record=record.to_dict(), dim=int(dim),
                             created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / STORE_FILE, json.dumps(to_dict(header), indent=2, sort_keys=True) + "\n")
        return cls(directory, header)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, fingerprint: str, record: PreprocessingRecord,
                       dim: int) -> EmbeddingStore:
        """Open the store at ``directory`` (refusing another encoder) or create it."""
        if (Path(directory) / STORE_FILE).is_file():
            store = cls.open(directory)
            store.check_encoder(fingerprint, record, dim)
            return store
        return cls.create(directory, fingerprint, record, dim)

    def check_encoder(self, fingerprint: str, record: PreprocessingRecord | None = None,
                      dim: int | None = None) -> None:
        """Refuse an encoder that did not produce this store (names both fingerprints)."""
        if fingerprint != self.fingerprint:
            raise MismatchError(f"{self.directory}: store was built by encoder {short(self.fingerprint)} but this "
                                f"encoder is {short(fingerprint)} (use a new --store, or --overwrite to rebuild)")
        if record is not None and record.to_dict() != self.record.to_dict():
            raise MismatchError(f"{self.directory}: store preprocessing {self.record.to_dict()} differs from the "
                                f"encoder's {record.to_dict()}")
        if dim is not None and int(dim) != self.dim:
            raise MismatchError(f"{self.directory}: store dimension {self.dim} differs from the encoder's {dim}")

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

    def part_files(self) -> list[Path]:
        """Committed parts in write order (temporary files are hidden and never listed)."""
        return sorted(p for p in self.directory.glob(PART_GLOB) if _PART_RE.match(p.name))

    def __len__(self) -> int:
        return self.table().num_rows

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.directory)!r}, rows={len(self)}, dim={self.dim}, "
                f"encoder={short(self.fingerprint)})")

    # ----------------------------------------------------------------------------------- reading
    def refresh(self) -> None:
        """Forget cached rows (after parts were added by another process)."""
        self._table = None
        self._embeddings = None

    def table(self):
        """All current rows as a pyarrow Table (one row per path; the newest row wins when a file changed)."""
        if self._table is None:
            self._table = self._read_table()
        return self._table

    def _read_table(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.part_files()
        if not parts:
            return self.empty_table()
        try:
            tables = [pq.read_table(p, memory_map=True) for p in parts]
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{self.directory}: cannot read a store part ({exc})") from None
        import pyarrow.compute as pc

        table = pa.concat_tables(tables, promote_options="default")  # chunks stay per part: no copy
        if pc.count_distinct(table.column("path")).as_py() < table.num_rows:
            # a file changed after it was stored: the newest row wins (last occurrence of each path)
            paths = table.column("path").to_numpy(zero_copy_only=False)
            _, last = np.unique(paths[::-1], return_index=True)
            table = table.take(pa.array(np.sort(len(paths) - 1 - last)))
        return table

    def empty_table(self):
        """A zero-row table with this store's base columns."""
        return make_part_table([], [], [], [], np.zeros((0, self.dim), np.float32))

    @property
    def paths(self) -> list[str]:
        return self.table().column("path").to_pylist()

    @property
    def sha256(self) -> list[str]:
        return self.table().column("sha256").to_pylist()

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.table().column_names if c not in BASE_COLUMNS]

    def embeddings(self) -> np.ndarray:
        """(N, D) float32 matrix in :meth:`table` order, from the Arrow buffers (no per-row Python)."""
        if self._embeddings is None:
            column = self.table().column("embedding")
            chunks = [np.asarray(chunk.flatten(), dtype=np.float32).reshape(-1, self.dim)
                      for chunk in column.chunks]
            matrix = np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
            matrix.setflags(write=False)
            self._embeddings = matrix
        return self._embeddings

    def column(self, name: str) -> list:
        """One column of :meth:`table` as a list; a clear error names the available ones."""
        table = self.table()
        if name not in table.column_names:
            raise InputError(f"{self.directory}: no column {name!r} in the store "
                             f"(columns: {', '.join(c for c in table.column_names if c != 'embedding')})")
        return table.column(name).to_pylist()

    def join(self, labels_csv: str | os.PathLike, key: str = "path", columns: Sequence[str] | None = None,
             missing: str = "error") -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
        """Align a labels CSV with the store on ``key``: (embeddings, {column: values}, keys) in CSV order.

        ``missing="error"`` refuses CSV keys absent from the store (listing some); ``"drop"`` skips them.
        """
        from ..data.manifest import read_csv_rows

        if missing not in ("error", "drop"):
            raise InputError(f"missing={missing!r} is not one of error, drop")
        header, rows = read_csv_rows(labels_csv)
        if key not in header:
            raise InputError(f"{labels_csv}: no key column {key!r} (columns: {', '.join(header)})")
        wanted = [c for c in header if c != key] if columns is None else list(columns)
        absent = [c for c in wanted if c not in header]
        if absent:
            raise InputError(f"{labels_csv}: no column(s) {', '.join(absent)} (columns: {', '.join(header)})")
        k = header.index(key)
        csv_keys = [_normalise_key(row[k], key) for row in rows]
        stored = {value: i for i, value in enumerate(self.column(key))}
        if len(stored) != len(self) and key != "path":
            raise InputError(f"{self.directory}: store column {key!r} is not unique; join on 'path'")
        dupes = _first_duplicates(csv_keys)
        if dupes:
            raise InputError(f"{labels_csv}: duplicate {key} value(s) {', '.join(dupes)}")
        rows_idx = [stored.get(value, -1) for value in csv_keys]
        unmatched = [value for value, i in zip(csv_keys, rows_idx) if i < 0]
        if unmatched and missing == "error":
            raise InputError(f"{labels_csv}: {len(unmatched)} of {len(csv_keys)} {key} value(s) are not in store "
                             f"{self.directory}, e.g. {', '.join(unmatched[:5])}"
                             f"{_hint(unmatched[0], self.paths) if key == 'path' else ''}")
        keep = [j for j, i in enumerate(rows_idx) if i >= 0]
        index = np.asarray([rows_idx[j] for j in keep], dtype=np.int64)
        labels = {c: [rows[j][header.index(c)] for j in keep] for c in wanted}
        return self.embeddings()[index], labels, [csv_keys[j] for j in keep]

    def neighbors(self, vectors: np.ndarray, k: int = 10, metric: str = "cosine",
                  exclude: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest stored rows of each vector: (indices (Q, k) int64, distances (Q, k) float32).

        ``exclude`` gives, per query, one store row to leave out (the query itself), or -1.
        """
        from .neighbors import knn

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.shape[-1] != self.dim:
            raise MismatchError(f"query vectors have dimension {vectors.shape[-1]}, "
                                f"store {self.directory} has {self.dim}")
        return knn(vectors, self.embeddings(), k, metric=metric, exclude=exclude)

    def info(self) -> dict:
        """Counts, encoder, dimension, parts and metadata columns (for ``hemoembed store info``)."""
        table = self.table()
        parts = self.part_files()
        return {
            "directory": str(self.directory), "rows": table.num_rows,
            "unique_images": len(set(table.column("sha256").to_pylist())) if table.num_rows else 0,
            "fingerprint": self.fingerprint, "dim": self.dim, "dtype": self.header.dtype,
            "record": self.header.record, "parts": len(parts),
            "part_rows": {p.name: _parquet_rows(p) for p in parts},
            "metadata_columns": self.metadata_columns if table.num_rows else [],
            "format_version": self.header.format_version, "hemoembed_version": self.header.hemoembed_version,
            "created": self.header.created,
        }

    # ----------------------------------------------------------------------------------- writing
    def append(self, table) -> Path:
        """Commit ``table`` (built by :func:`make_part_table`) as the next immutable part; returns its path."""
        import pyarrow.parquet as pq

        if table.num_rows == 0:
            raise InputError("refusing to write an empty store part")
        emb = table.schema.field("embedding").type
        if getattr(emb, "list_size", None) != self.dim:
            raise MismatchError(f"{self.directory}: part embeddings have size {getattr(emb, 'list_size', '?')}, "
                                f"store has {self.dim}")
        tmp = self.directory / f".part.tmp-{os.getpid()}-{id(table)}.parquet"
        # embeddings barely compress and nested levels dominate decoding: fast LZ4, no dictionaries
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False,
                       write_statistics=[c for c in table.column_names if c != "embedding"])
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            while True:
                target = self.directory / f"part-{self._next_part_number():05d}.parquet"
                try:
                    os.link(tmp, target)  # atomic, and never replaces a part a concurrent writer made
                    break
                except FileExistsError:
                    continue
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self.refresh()
        return target

    def _next_part_number(self) -> int:
        numbers = [int(_PART_RE.match(p.name).group(1)) for p in self.part_files()]
        return max(numbers, default=-1) + 1

    def remove_stale_temporaries(self) -> int:
        """Delete temporary part files left by writers that are no longer running."""
        removed = 0
        for tmp in self.directory.glob(".part.tmp-*.parquet"):
            pid = int(tmp.name.split("-")[1]) if tmp.name.split("-")[1].isdigit() else -1
            if pid != os.getpid() and not _alive(pid):
                tmp.unlink(missing_ok=True)
                removed += 1
        return removed


def make_part_table(paths: Sequence[str], sha256: Sequence[str], widths: Sequence[int], heights: Sequence[int],
                    embeddings: np.ndarray, metadata: dict[str, Sequence[str]] | None = None):
    """Build one part's Arrow table: base columns, fixed-size float32 ``embedding``, string metadata."""
    import pyarrow as pa

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(paths):
        raise InputError(f"embeddings of shape {embeddings.shape} do not match {len(paths)} paths")
    columns = {
        "path": pa.array(list(paths), pa.string()),
        "sha256": pa.array(list(sha256), pa.string()),
        "width": pa.array(list(widths), pa.int32()),
        "height": pa.array(list(heights), pa.int32()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1]),
    }
    for name, values in (metadata or {}).items():
        if name in columns:
            raise InputError(f"metadata column {name!r} clashes with a store column")
        columns[name] = pa.array([str(v) for v in values], pa.string())
    return pa.table(columns)


def _normalise_key(value: str, key: str) -> str:
    value = value.strip()
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


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
