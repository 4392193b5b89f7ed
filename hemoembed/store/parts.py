"""The parts of a store on disk: immutable Parquet files ``part-NNNNN.parquet``, read column by column or
by footer with one-line errors, and committed atomically: written to a hidden temporary name, fsynced, then
hard-linked to the next free number (never replacing a part a concurrent writer made), so after a crash at
any moment the store is valid."""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError

PART_GLOB = "part-*.parquet"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")


def part_files(directory: Path) -> list[Path]:
    """Committed parts in write order (temporary files are hidden and never listed)."""
    return sorted(p for p in directory.glob(PART_GLOB) if PART_RE.match(p.name))


def next_part_number(directory: Path) -> int:
    """The number the next part gets: one past the highest committed."""
    numbers = [int(PART_RE.match(p.name).group(1)) for p in part_files(directory)]
    return max(numbers, default=-1) + 1


def write_part(directory: Path, table, before_visible: Callable[[], None]) -> Path:
    """Commit ``table`` as the next part of ``directory``; ``before_visible`` runs (and may refuse) just
    before the part gets its name. Returns the part's path."""
    import pyarrow.parquet as pq

    tmp = directory / f".part.tmp-{os.getpid()}-{id(table)}.parquet"
    try:
        # embeddings barely compress and nested levels dominate decoding: fast LZ4, no dictionaries
        pq.write_table(table, tmp, compression="lz4", use_dictionary=False,
                       write_statistics=[c for c in table.column_names if c != "embedding"])
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        before_visible()  # again, just before the part becomes visible
        while True:
            target = directory / f"part-{next_part_number(directory):05d}.parquet"
            try:
                os.link(tmp, target)  # atomic, and never replaces a part a concurrent writer made
                break
            except FileExistsError:
                continue
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)
    return target


def remove_stale_temporaries(directory: Path) -> int:
    """Delete temporary part files left by writers that are no longer running."""
    removed = 0
    for tmp in directory.glob(".part.tmp-*.parquet"):
        pid = int(tmp.name.split("-")[1]) if tmp.name.split("-")[1].isdigit() else -1
        if pid != os.getpid() and not _alive(pid):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def parquet_metadata(path: Path):
    """A part's Parquet footer (row count, schema); a one-line error when the file is not readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read store part ({exc})") from None


def read_part(path: Path, columns: Sequence[str]):
    """Some columns of one part as an Arrow table (no schema metadata); a one-line error when the file is
    not readable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # ParquetFile, not read_table: that imports pyarrow.dataset and pandas (a quarter second); one thread,
        # so every buffer the read used is freed when it returns (worker threads free theirs a moment later)
        with pq.ParquetFile(path, memory_map=True) as handle:
            table = handle.read(columns=list(columns), use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: cannot read store part ({exc})") from None
    missing = [name for name in columns if name not in table.column_names]  # ParquetFile skips them silently
    if missing:
        raise InputError(f"{path}: store part has no {missing[0]!r} column")
    return table.replace_schema_metadata(None)  # the writer's counts (:mod:`.summary`) are the footer's


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
