"""Reading an upload request with its limits applied while the body streams in, not after it was stored.

Starlette's own ``request.form()`` spools every file part to a temporary file whatever its size and only
then lets the app look at it. Here the same parser (Starlette's ``MultiPartParser`` over python-multipart)
is fed through two caps: a file part stops being written once it holds one byte more than the per-file
limit (the rest of its bytes are read and dropped, and the file gets its per-file "larger than" error),
and the request body is cut off with 413 as soon as it passes the per-request limit (a request without
``Content-Length``, or one that lies about it, included). The count of files is capped by the parser.

python-multipart stops at a part whose header line passes 4,224 bytes, and Starlette gives no way to change
that (nor says why it stopped): such a request (a file name of thousands of characters) is refused whole, in
one line that names the likely cause. Names up to that length reach the intake, which refuses a name over 255
bytes as that file's error.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, BinaryIO

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from . import lib

if TYPE_CHECKING:
    from starlette.requests import Request

    from .intake import Limits


class RequestTooLarge(lib.InputError):
    """The whole request is over the limit (answered with 413)."""


def too_large(size: int, limits: Limits) -> str:
    """The one-line 413 message for a request of ``size`` bytes (declared, or read so far)."""
    return (f"request too large ({size / 2**20:.0f} MB; at most {limits.request_bytes / 2**20:g} MB per request,"
            f" {limits.max_files} files of {limits.max_file_bytes / 2**20:g} MB)")


SPOOL_BYTES = 256 * 1024
# Starlette's one message for any body python-multipart cannot parse, a header line over its limit included
UNPARSABLE = "Invalid multipart data"


class CappedParser(MultiPartParser):
    """Starlette's multipart parser that writes at most ``cap`` bytes of each file part (the rest is dropped)."""

    spool_max_size = SPOOL_BYTES  # per file part kept in memory before it rolls over to disk

    def __init__(self, *args, cap: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cap, self.kept = cap, 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self.kept = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            end = min(end, start + max(self.cap - self.kept, 0))
            if end <= start:
                return
            self.kept += end - start
        super().on_part_data(data, start, end)


@asynccontextmanager
async def upload_files(request: Request, limits: Limits) -> AsyncIterator[list[tuple[str, BinaryIO | None]]]:
    """``(client file name, open file)`` of every multipart ``files`` part, in order, while the context
    lasts; ``None`` for a file over ``limits.max_file_bytes`` (never stored beyond that plus one byte).

    The parts are spooled temporary files (in memory up to ``SPOOL_BYTES`` each, on disk beyond), so a
    request is never held in memory whole: the engine reads one file at a time."""
    kind = request.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        raise lib.InputError("no files: send one or more images as multipart form field 'files' "
                             "(Content-Type multipart/form-data)")
    parser = CappedParser(request.headers, _capped(request.stream(), limits), max_files=limits.max_files,
                          max_fields=50, cap=limits.max_file_bytes + 1)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise lib.InputError(f"upload refused: {_reason(exc.message, limits)}") from None
    try:
        files = []
        for name, value in form.multi_items():
            if name == "files" and isinstance(value, UploadFile):
                value.file.seek(0)
                files.append((value.filename or "", None if (value.size or 0) > limits.max_file_bytes else value.file))
        if not files:
            raise lib.InputError("no files: send one or more images as multipart form field 'files'")
        yield files
    finally:
        await form.close()


def _reason(message: str, limits: Limits) -> str:
    """The parser's complaint as one line, with what the user can do about it."""
    if message.startswith(UNPARSABLE):
        return ("the multipart body could not be read (malformed, or a part's header line over 4 KiB, "
                "such as a file name that long)")
    count = f" (at most {limits.max_files} files per request)" if "files" in message else ""
    return f"{lib.one_line(message)}{count}"


async def _capped(stream: AsyncIterator[bytes], limits: Limits) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limits.request_bytes:
            raise RequestTooLarge(too_large(total, limits))
        yield chunk


async def json_body(request: Request, limits: Limits) -> object:
    """A JSON request body, read under the same per-request cap as uploads (413 once it passes it, with or
    without ``Content-Length``); a body that is not JSON is a one-line 400."""
    chunks = [chunk async for chunk in _capped(request.stream(), limits)]
    try:
        return json.loads(b"".join(chunks))
    except json.JSONDecodeError as exc:
        raise lib.InputError(f"the request body is not valid JSON ({exc.msg.lower()} at character {exc.pos})") from None
    except UnicodeDecodeError:
        raise lib.InputError("the request body is not valid JSON (not UTF-8 text)") from None
