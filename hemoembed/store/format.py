"""The on-disk format of an embedding store: the ``store.json`` header and the columns of every part.

Both are validated on reading, never trusted: a header field of the wrong type, an unknown format, or a part
whose embedding width differs from the header's ``dim`` is refused with a one-line error.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..config import from_dict, read_json_object
from ..data.preprocess import PreprocessingRecord
from ..errors import InputError, MismatchError

FORMAT_VERSION = 2  # 2: the fingerprint covers architecture, preprocessing record and weights (1: weights only)
STORE_FILE = "store.json"
BASE_COLUMNS = ("path", "sha256", "width", "height", "embedding")
# Embedding storage types: float16 halves the disk and the in-memory matrix (its macro-F1 cost on PBC is in
# benchmarks/RESULTS.md); every computation reads float16 rows as float32.
DTYPES = ("float32", "float16")


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
    store_id: str = ""  # random, set at creation: tells apart two stores of one encoder (format 2 on)


# The JSON type every header field must have (bool is refused where a number is expected).
_HEADER_TYPES = {"format_version": int, "fingerprint": str, "record": dict, "dim": int, "dtype": str,
                 "hemoembed_version": str, "created": str, "store_id": str}
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")


def short(fp: str) -> str:
    """First 12 hex digits of a fingerprint, for messages."""
    return fp[:12]


def read_header(path: Path) -> StoreHeader:
    """Parse and validate ``store.json``: every field of the right type, a valid record, a known format."""
    data = read_json_object(path, "store header")
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise MismatchError(f"{path}: store format {version} is newer than this hemoembed "
                            f"({__version__}) reads (format {FORMAT_VERSION}); upgrade hemoembed")
    for key in ("format_version", "fingerprint", "record", "dim"):
        if key not in data:
            raise InputError(f"{path}: store header has no {key!r}")
    for key, kind in _HEADER_TYPES.items():
        value = data.get(key, kind())
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{path}: store header {key!r} is {value!r:.40}, not a {kind.__name__}")
    if data["format_version"] < 1 or data["dim"] < 1 or not FINGERPRINT_RE.match(data["fingerprint"]):
        raise InputError(f"{path}: store header has an invalid format_version, dim or fingerprint")
    if data.get("dtype", "float32") not in DTYPES:
        raise InputError(f"{path}: store dtype {data['dtype']!r} is not one of {', '.join(DTYPES)}")
    header = from_dict(StoreHeader, data, source=str(path))
    PreprocessingRecord.from_dict(header.record)  # a clear error for a damaged record
    return header


def check_encoder(header: StoreHeader, directory: Path, fingerprint: str, record: PreprocessingRecord | None = None,
                  dim: int | None = None) -> None:
    """Refuse an encoder that did not produce the store ``header`` describes (names both fingerprints)."""
    stored = PreprocessingRecord.from_dict(header.record).to_dict()
    if header.format_version < 2:
        raise MismatchError(f"{directory}: store of format {header.format_version} (before hemoembed "
                            "fingerprinted architecture and preprocessing as well as weights) cannot be matched "
                            "to an encoder; it stays readable (fit-svm, tsne, neighbors --path, predict --store); "
                            "to add images or query it with an encoder, rebuild it: hemoembed embed ENCODER "
                            "IMAGES --store NEW_DIR (or this one with --overwrite)")
    if fingerprint != header.fingerprint:
        differs = record is not None and record.to_dict() != stored
        why = (f"; its preprocessing {record.to_dict()} differs from the store's {stored}"
               if differs else "")
        raise MismatchError(f"{directory}: store was built by encoder {short(header.fingerprint)} but this "
                            f"encoder is {short(fingerprint)}{why} (use a new --store, or --overwrite to rebuild)")
    if record is not None and record.to_dict() != stored:
        raise MismatchError(f"{directory}: store preprocessing {stored} differs from the "
                            f"encoder's {record.to_dict()}")
    if dim is not None and int(dim) != header.dim:
        raise MismatchError(f"{directory}: store dimension {header.dim} differs from the encoder's {dim}")


def arrow_value_type(dtype: str):
    """The Arrow type of one embedding value for a store ``dtype`` (one of :data:`DTYPES`)."""
    import pyarrow as pa

    if dtype not in DTYPES:
        raise InputError(f"embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return pa.float16() if dtype == "float16" else pa.float32()


def check_part_schema(schema, dim: int, part: Path, dtype: str = "float32") -> None:
    """Refuse a part whose columns do not match the header (the reader would reshape garbage)."""
    import pyarrow as pa

    value_type = arrow_value_type(dtype)
    expected = {"path": pa.string(), "sha256": pa.string(), "width": pa.int32(), "height": pa.int32(),
                "embedding": pa.list_(value_type, dim)}
    names = schema.names
    if len(set(names)) != len(names):
        raise InputError(f"{part}: store part has duplicate columns")
    for name, kind in expected.items():
        if name not in names:
            raise InputError(f"{part}: store part has no {name!r} column")
        field_type = schema.field(name).type
        if field_type != kind and not (name == "embedding" and pa.types.is_fixed_size_list(field_type)
                                       and field_type.value_type == value_type
                                       and field_type.list_size == dim):
            raise MismatchError(f"{part}: column {name!r} is {field_type}, the store (dimension {dim}) needs {kind}")
    odd = [n for n in names if n not in expected and schema.field(n).type not in (pa.string(), pa.null())]
    if odd:
        raise InputError(f"{part}: metadata column {odd[0]!r} is {schema.field(odd[0]).type}, not text")


def make_part_table(paths: Sequence[str], sha256: Sequence[str], widths: Sequence[int], heights: Sequence[int],
                    embeddings: np.ndarray, metadata: dict[str, Sequence[str]] | None = None,
                    dtype: str = "float32"):
    """Build one part's Arrow table: base columns, fixed-size ``embedding`` of ``dtype``, string metadata."""
    import pyarrow as pa

    arrow_value_type(dtype)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.dtype(dtype))
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
