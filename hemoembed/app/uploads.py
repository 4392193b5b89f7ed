"""Reading an upload request with its limits applied while the body streams in, not after it was stored.

Starlette's own ``request.form()`` spools every file part to a temporary file whatever its size and only
then lets the app look at it. Here the same parser (Starlette's ``MultiPartParser`` over python-multipart)
is fed through two caps: a file part stops being written once it holds one byte more than the per-file
limit (the rest of its bytes are read and dropped, and the file gets its per-file "larger than" error),
and the request body is cut off with 413 as soon as it passes the per-request limit (a request without
``Content-Length``, or one that lies about it, included). The count of files is capped by the parser.

python-multipart refuses a part whose header line passes 4,224 bytes by default, and this Starlette gives no
way to change that: a 5,000-character file name then failed the whole request as "Invalid multipart data".
:meth:`CappedParser.parse` therefore runs Starlette's parser loop itself with a header line of up to
``HEADER_BYTES``, so a long name reaches the app and becomes that file's error (see ``intake``); a header
past even that stops the parser (it cannot resume mid-header) and refuses the request with one line naming
the limit.
"""
from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from inspect import signature
from typing import TYPE_CHECKING, BinaryIO

import python_multipart
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
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
HEADER_BYTES = 64 * 1024  # one header line of a part (python-multipart's default: 4,224 bytes)
# older python-multipart has no header limits and takes no such argument
HEADER_LIMIT = ({"max_header_size": HEADER_BYTES}
                if "max_header_size" in signature(python_multipart.MultipartParser).parameters else {})


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

    async def parse(self) -> FormData:
        """The parts of the body, as Starlette's ``parse`` reads them but with header lines of up to
        ``HEADER_BYTES``; a malformed body raises ``MultiPartException`` with a one-line reason."""
        _, params = parse_options_header(self.headers["Content-Type"])
        if b"boundary" not in params:
            raise MultiPartException("Missing boundary in multipart.")
        charset = params.get(b"charset", b"utf-8")
        try:
            self._charset = codecs.lookup(charset.decode("latin-1")).name
        except LookupError:
            self._charset = "latin-1"
        callbacks = {name: getattr(self, name) for name in (
            "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_end")}
        parser = python_multipart.MultipartParser(params[b"boundary"], callbacks, **HEADER_LIMIT)
        try:
            async for chunk in self.stream:
                parser.write(chunk)
                for part, data in self._file_parts_to_write:  # written here: UploadFile writes in a thread
                    await part.file.write(data)
                for part in self._file_parts_to_finish:
                    await part.file.seek(0)
                self._file_parts_to_write.clear()
                self._file_parts_to_finish.clear()
            parser.finalize()
        except BaseException as exc:
            for file in self._files_to_close_on_error:
                file.close()
            if isinstance(exc, FormParserError):
                raise MultiPartException(_reason(exc)) from exc
            raise
        return FormData(self.items)


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
        count = f" (at most {limits.max_files} files per request)" if "files" in exc.message else ""
        raise lib.InputError(f"upload refused: {lib.one_line(exc.message)}{count}") from None
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


def _reason(exc: FormParserError) -> str:
    """The one-line reason of a parse error: python-multipart's message, the limit named where one was hit."""
    message = lib.one_line(str(exc))
    if "header size" in message:
        return f"a part's header line is longer than {HEADER_BYTES // 1024} KiB (a file name that long?)"
    if "header count" in message:
        return f"a part has more than {python_multipart.multipart.DEFAULT_MAX_HEADER_COUNT} header lines"
    return f"invalid multipart data ({message})"


async def _capped(stream: AsyncIterator[bytes], limits: Limits) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limits.request_bytes:
            raise RequestTooLarge(too_large(total, limits))
        yield chunk
