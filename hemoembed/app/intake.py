"""Accepting uploaded files: check each in memory, store the good ones content-addressed, record a request
in one transaction.

A file is checked with the library's probe on its bytes (hash, format, pixel count from the header before
any decoding, then a decode of all its data for truncation, a JPEG's at 1/8 scale), so nothing is written
for a bad file and nothing is read back. A good file is written to a temporary file at once (one file's
bytes in memory at a time); once the request's files are all checked, the temporary files are fsynced
together (in parallel threads, so the file system commits them in a few journal transactions instead of one
per file: about 10 times less wall time here) and renamed to ``DATA/images/<sha[:2]>/<sha>.<ext>`` before
the database names them; the cells and refusals of one request are then recorded in one SQLite transaction
(one commit per request, not per file). A crash before the commit leaves at most image files (or temporary
files, removed at the next start) that no cell names yet, which the next upload of the same bytes simply
rewrites.
"""
from __future__ import annotations

import os
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import lib
from .state import State

SYNC_THREADS = 8  # temporary files fsynced at once
MAX_NAME_BYTES = 255  # a file name's longest on common file systems; a longer one is refused
FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}


@dataclass(frozen=True)
class Limits:
    """Upload limits (per file and per request), applied while a request streams in (files over the size
    limit are never stored whole) and before anything is decoded (pixels from the image header)."""

    max_file_bytes: int = 20 * 2**20
    max_pixels: int = 25_000_000
    max_files: int = 500
    max_request_bytes: int = 1024 * 2**20

    @property
    def request_bytes(self) -> int:
        """Most bytes one request may send: the request limit, or every file at its limit when that is less."""
        return min(self.max_request_bytes, self.max_files * (self.max_file_bytes + 4096))


class Intake:
    """Checks and stores the files of upload requests, one request at a time (thread-safe)."""

    def __init__(self, state: State, data_dir: Path, limits: Limits) -> None:
        self.state, self.data, self.limits = state, Path(data_dir), limits
        self._lock = threading.Lock()
        self._sync = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="hemoembed-sync")  # threads kept
        for stale in (self.data / "tmp").glob("*"):  # files of a request a crash cut short
            if stale.is_file():
                stale.unlink()

    def accept(self, files: list[tuple[str, bytes | BinaryIO | None]], batch: int) -> list[dict[str, Any]]:
        """Per file (bytes or an open file, read one at a time; ``None``: over the size limit) its
        ``filename``, cell ``id``, ``error`` and whether it is ``new`` (stored now, to be classified).

        A rejected file is recorded with its reason; a duplicate (of a stored cell or of an earlier file of
        the same request) names the cell that holds it, and its ``id`` is that cell's."""
        if not self.state.batch_exists(batch):
            raise lib.InputError(f"batch {batch} does not exist")
        with self._lock:
            staged: list[tuple[Path, Path]] = []  # (temporary file, its place) of each new image
            try:
                return self._accept(files, batch, staged)
            finally:
                for tmp, _ in staged:
                    tmp.unlink(missing_ok=True)

    def _accept(self, files: list[tuple[str, bytes | BinaryIO | None]], batch: int,
                staged: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        new: list[dict[str, Any]] = []
        first: dict[str, dict[str, Any]] = {}  # sha256 → the result that stores it or names its cell
        for raw_name, data in files:
            name = clean_filename(raw_name)
            if data is not None and not isinstance(data, bytes):
                data = data.read()
            result = {"filename": name, "id": None, "error": None, "new": False}
            results.append(result)
            info, result["error"] = self._check(raw_name, data)
            if result["error"] is not None:
                continue
            if info.sha256 in first:
                result["same_as"] = first[info.sha256]  # its id and error once the request is recorded
                continue
            first[info.sha256] = result
            cell = self.state.cell_by_sha(info.sha256)
            if cell is not None:
                result.update(id=cell, error=_duplicate(cell))
                continue
            image = f"images/{info.sha256[:2]}/{info.sha256}{FORMATS[info.format]}"
            staged.append(self._stage(image, data))
            result["new"] = True
            new.append(dict(sha256=info.sha256, filename=name, image=image, fmt=info.format, width=info.width,
                            height=info.height, size_bytes=len(data)))

        def refused(ids: list[int]) -> list[tuple[str, str]]:
            for result, cell in zip([r for r in results if r["new"]], ids):
                result["id"] = cell
            for result in results:
                if "same_as" in result:
                    result["id"] = result.pop("same_as")["id"]
                    result["error"] = _duplicate(result["id"])
            return [(r["filename"], r["error"]) for r in results if r["error"]]

        self._place(staged)
        self.state.add_uploads(batch, new, refused)
        return results

    def _check(self, raw_name: str, data: bytes | None):
        """``(probe result, error or None)`` of one file's name and bytes."""
        name_bytes = len(_base_name(raw_name).encode())
        if name_bytes > MAX_NAME_BYTES:
            return None, f"file name too long ({name_bytes} bytes; at most {MAX_NAME_BYTES})"
        if data is None:
            return None, f"file is larger than the {self.limits.max_file_bytes / 2**20:g} MB limit"
        info = lib.probe_bytes(data, max_pixels=self.limits.max_pixels, full=True)
        return info, info.error or _format_error(info)

    def close(self) -> None:
        self._sync.shutdown()

    def _stage(self, image: str, data: bytes) -> tuple[Path, Path]:
        """Write an accepted file to a temporary file (not yet synced): (temporary file, its place)."""
        target = self.data / image
        tmp = self.data / "tmp" / f"{target.name}.{os.getpid()}"
        tmp.write_bytes(data)
        return tmp, target

    def _place(self, staged: list[tuple[Path, Path]]) -> None:
        """fsync the request's temporary files (together), then rename each to its content-addressed place."""
        list(self._sync.map(_fsync, [tmp for tmp, _ in staged]))
        for tmp, target in staged:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def clean_filename(name: str) -> str:
    """A client's file name for display only: last path component, printable, at most 255 characters."""
    return _base_name(name)[:MAX_NAME_BYTES] or "unnamed"


def _base_name(name: str) -> str:
    name = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()


def _duplicate(cell: int) -> str:
    return f"duplicate: identical to cell {cell}, uploaded earlier"


def _format_error(info) -> str | None:
    if info.format not in FORMATS:
        return f"{info.format or 'unknown'} images are not accepted (JPEG, PNG, BMP, TIFF or GIF)"
    return None
