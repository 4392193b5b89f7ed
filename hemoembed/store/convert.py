"""A store's embeddings in another storage type (``hemoembed store convert``): float32 to float16 halves the
disk and the in-memory matrix without embedding the images again.

The copy keeps the encoder (fingerprint, preprocessing record, dimension), every part with its rows in order
and its metadata columns, so it reads exactly as the source does but for the embedding values: float32 to
float16 rounds each to the nearest half-precision value, which is what ``embed --dtype float16`` stores for
the same images; float16 to float32 is exact. The copy is a new store (its own ``store_id``): parts of two
dtypes never mix in one store, and models fitted on either store apply to the other (one encoder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import save_config
from ..errors import InputError, MismatchError
from ..progress import ProgressFactory, stage
from .embed import clear_store_folder
from .format import DTYPES, arrow_value_type
from .lock import writer_lock
from .parts import read_part
from .store import EmbeddingStore

CONFIG_FILE = "convert_config.json"


@dataclass
class ConvertConfig:
    """Where a converted store came from, saved as ``convert_config.json`` in it."""

    source: str = ""
    source_store_id: str = ""
    source_dtype: str = ""
    dtype: str = ""


def convertible(source: str | os.PathLike, dtype: str) -> EmbeddingStore:
    """The store ``source``, opened, once it is known that it can be converted to ``dtype``."""
    src = EmbeddingStore.open(source)
    if dtype not in DTYPES:
        raise InputError(f"embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == src.dtype:
        raise InputError(f"{source}: store embeddings are already {dtype} (nothing to convert)")
    if src.header.format_version < 2:
        raise MismatchError(f"{source}: store of format {src.header.format_version} has a weights-only fingerprint; "
                            f"rebuild it: hemoembed embed ENCODER IMAGES --store NEW_DIR --dtype {dtype}")
    return src


def convert_store(source: str | os.PathLike, target: str | os.PathLike, dtype: str,
                  progress: ProgressFactory | None = None) -> EmbeddingStore:
    """Copy the store ``source`` into the new store folder ``target`` (absent or empty) with embeddings
    stored as ``dtype``; part by part (memory: one part). Returns the new store."""
    src = convertible(source, dtype)
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(p for p in target.iterdir() if not p.name.startswith("."))):
        raise InputError(f"{target}: exists and is not an empty folder")
    target.mkdir(parents=True, exist_ok=True)
    with writer_lock(target):
        try:
            out = EmbeddingStore.create(target, src.fingerprint, src.record, src.dim, dtype=dtype)
            parts = src.part_files()
            with stage(progress, len(parts), "converting") as advance:
                for part in parts:
                    out.append(_converted(read_part(part, src.footer(part).schema.to_arrow_schema().names), dtype))
                    advance(1)
        except BaseException:
            clear_store_folder(target)  # leave no half-converted store behind
            raise
    save_config(ConvertConfig(str(source), src.header.store_id, src.dtype, dtype), target / CONFIG_FILE)
    return out


def _converted(table, dtype: str):
    """``table`` (one part) with its ``embedding`` column in ``dtype`` (numpy rounding, as the writer's)."""
    import pyarrow as pa

    value_type = arrow_value_type(dtype)
    column = table.column("embedding")
    dim = column.type.list_size
    chunks = [pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(c.flatten()).astype(dtype), value_type), dim)
              for c in column.chunks]
    return table.set_column(table.column_names.index("embedding"), "embedding",
                            pa.chunked_array(chunks, pa.list_(value_type, dim)))
