"""The HTTP layer: a FastAPI app over an :class:`~hemoembed.app.engine.Engine` (JSON API + the browser UI).

Stable contract (documented in the README and at ``/docs``, served without any CDN):
``GET /health`` → ``{"status": "ok", "model_version": N}``; ``POST /api/predict`` (multipart ``files``) →
``{"results": [{"filename", "id", "label", "probabilities", "error"}, ...]}`` in upload order, a bad file
getting a one-sentence ``error`` while the others succeed. With a token every ``/api/...`` call needs
``Authorization: Bearer TOKEN`` (401 otherwise). The richer ``/api/...`` endpoints serve the UI.
``/label-studio/...`` is a Label Studio ML backend (:mod:`~hemoembed.app.labelstudio`) under the same
token rule, HTTP Basic auth with the token as password accepted too (what Label Studio can send).
"""
from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from .._version import __version__
from . import lib
from .engine import CellNotFound
from .hosts import is_loopback
from .labelstudio import PREFIX as LABEL_STUDIO
from .labelstudio import label_studio_router
from .report import export_csv, summary
from .uploads import RequestTooLarge, too_large, upload_files

STATIC = Path(__file__).parent / "static"
UI_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                               "style-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
}
PLACES = {"path": "path parameter", "query": "query parameter", "header": "header", "cookie": "cookie",
          "body": "body field"}
SQLITE_MAX = 2**63 - 1  # ids are SQLite integers: a larger one from a client is a 422, not an OverflowError
Id = Annotated[int, PathParam(ge=0, le=SQLITE_MAX)]
BatchFilter = Annotated[int | None, Query(ge=0, le=SQLITE_MAX)]


class Correction(BaseModel):
    label: str = Field(max_length=200)
    reviewer: str = Field(default="", max_length=200)
    seconds: float | None = None


class NewClass(BaseModel):
    name: str = Field(max_length=100)


class NewBatch(BaseModel):
    name: str = Field(default="", max_length=200)


class ErrorDetail(BaseModel):
    """Every error's body: one line saying what was wrong and where."""

    detail: str


def create_app(engine, token: str | None = None, loopback_only: bool = True, predict_timeout: float = 600.0,
               label_studio_roots: Sequence[Path] = ()):
    """The ASGI app. ``loopback_only``: refuse requests whose Host is not a loopback name (DNS rebinding);
    ``label_studio_roots``: folders the Label Studio backend may read task images from."""
    app = FastAPIOffline(title="hemoembed review app", version=__version__, redoc_url=None,
                         swagger_ui_parameters={"validatorUrl": None},
                         responses={422: {"model": ErrorDetail, "description": "Invalid parameter or body"}},
                         description="Upload leukocyte crops, review predictions, correct labels, retrain.")
    limits = engine.limits

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        host = _host_name(request.headers.get("host") or "")
        if loopback_only and not is_loopback(host):
            return JSONResponse({"detail": f"host {host!r} refused: the server only answers on loopback"}, 403)
        label_studio = path == LABEL_STUDIO or path.startswith(LABEL_STUDIO + "/")
        if path.startswith("/api/") or label_studio:
            if token is not None and not _authorised(request, token, basic=label_studio):
                hint = " or HTTP Basic auth with the token as password" if label_studio else ""
                return JSONResponse({"detail": f"missing or wrong access token (send Authorization: Bearer TOKEN"
                                               f"{hint})"}, 401, headers={"WWW-Authenticate": "Bearer"})
            origin = request.headers.get("origin")
            if request.method not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != request.headers.get(
                    "host"):
                return JSONResponse({"detail": f"cross-site request from {origin} refused"}, 403)
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limits.request_bytes:
                return JSONResponse({"detail": too_large(int(length), limits)}, 413)
        response = await call_next(request)
        if not path.startswith(("/docs", "/static-offline-docs")):
            response.headers.update(UI_HEADERS)
        return response

    @app.exception_handler(lib.HemoembedError)
    async def user_error(request: Request, exc: lib.HemoembedError):
        return JSONResponse({"detail": lib.one_line(str(exc))}, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": validation_message(exc.errors())}, 422)

    @app.exception_handler(RequestTooLarge)
    async def request_too_large(request: Request, exc: RequestTooLarge):
        return JSONResponse({"detail": str(exc)}, 413)

    @app.exception_handler(CellNotFound)
    async def not_found(request: Request, exc: CellNotFound):
        return JSONResponse({"detail": str(exc)}, 404)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/health", tags=["contract"])
    def health() -> dict[str, Any]:
        """Liveness and the model version (Label Studio's ML backends answer ``/health`` the same way)."""
        return {"status": "ok", "model_version": engine.classifier.version, "hemoembed": __version__}

    @app.post("/api/predict", tags=["contract"])
    async def predict(request: Request) -> dict[str, Any]:
        """Classify images now: per file in upload order its cell id, label and probabilities, or an error."""
        async with upload_files(request, limits) as files:
            batch = await run_in_threadpool(engine.api_batch)
            results = await run_in_threadpool(engine.ingest, files, batch)
        await run_in_threadpool(engine.complete, results, predict_timeout)
        return {"results": results}

    app.include_router(label_studio_router(engine, label_studio_roots, predict_timeout))

    @app.post("/api/batches")
    def new_batch(body: NewBatch) -> dict[str, Any]:
        return {"id": engine.state.new_batch(lib.one_line(body.name)[:200] or "batch")}

    @app.get("/api/batches")
    def batches() -> list[dict[str, Any]]:
        return engine.state.batches()

    @app.post("/api/batches/{batch}/files")
    async def upload(batch: Id, request: Request) -> dict[str, Any]:
        """Add files to a batch; they are classified in the background (poll ``/api/cells``)."""
        async with upload_files(request, limits) as files:
            return {"results": await run_in_threadpool(engine.ingest, files, batch)}

    @app.get("/api/batches/{batch}/progress")
    def batch_progress(batch: Id) -> dict[str, Any]:
        """Per-file progress of a batch, cheap enough to poll: its cells per status (``queued``, ``done``,
        ``error``), ``rejected`` files, the ids of its cells being embedded now (``embedding``) and how many
        files of the worker's current batch are embedded (``embedded`` of ``embedding_of``)."""
        return engine.progress(batch)

    @app.get("/api/batches/{batch}/summary")
    def batch_summary(batch: Id) -> dict[str, Any]:
        return {**summary(engine.state.cells(batch=batch), engine.state.classes()),
                "rejects": engine.state.rejects(batch)}

    @app.get("/api/batches/{batch}/export.csv")
    def export(batch: Id) -> PlainTextResponse:
        text = export_csv(engine.state.cells(batch=batch), engine.state.classes())
        return PlainTextResponse(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="hemoembed_batch_{batch}.csv"'})

    @app.get("/api/cells")
    def cells(batch: BatchFilter = None, order: Literal["id", "review"] = "id") -> list[dict[str, Any]]:
        """A batch's cells (all without ``batch``); ``order=review``: "needs review" first, in the labelling
        session's query order (``review_rank`` 0, 1, ...), then the reviewed ones."""
        found = engine.state.cells(batch=batch)
        return engine.review_order(found) if order == "review" else found

    @app.get("/api/cells/{cell}")
    async def cell_detail(cell: Id) -> dict[str, Any]:
        return await run_in_threadpool(engine.detail, cell)

    @app.get("/api/cells/{cell}/image")
    async def cell_image(cell: Id) -> Response:
        data, kind = await run_in_threadpool(engine.image, cell)
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/cells/{cell}/gradcam")
    async def cell_gradcam(cell: Id) -> Response:
        return Response(await run_in_threadpool(engine.gradcam, cell), media_type="image/png")

    @app.post("/api/cells/{cell}/correction")
    def correct(cell: Id, body: Correction) -> dict[str, Any]:
        return engine.correct(cell, body.label, body.reviewer, body.seconds)

    @app.get("/api/classes")
    def classes() -> list[str]:
        return engine.state.classes()

    @app.post("/api/classes")
    def add_class(body: NewClass) -> list[str]:
        return engine.add_class(body.name)

    @app.get("/api/reference/{row}/image")
    async def reference_image(row: Id) -> Response:
        path = engine.reference.image_file(row)
        data, kind = await run_in_threadpool(engine.browser_image, path, _format_of(path), f"ref_{row}")
        return Response(data, media_type=kind, headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/api/map")
    def reference_map() -> dict[str, Any]:
        return engine.map_points()

    @app.get("/api/model")
    def model() -> dict[str, Any]:
        return engine.model_status()

    @app.post("/api/retrain")
    def retrain() -> dict[str, Any]:
        return {"version": engine.retrain(), "status": "training"}

    return app


def validation_message(errors: Sequence[Any]) -> str:
    """One line for FastAPI's validation errors: where the first is (parameter or body field) and what was
    wrong, and how many more there are ("path parameter cell: input should be a valid integer, ...")."""
    first = errors[0] if errors else {}
    source, *names = first.get("loc") or ("request",)
    if first.get("type") == "json_invalid":
        reason = lib.one_line(str((first.get("ctx") or {}).get("error", "")))
        text = f"the request body is not valid JSON ({reason} at character {names[0] if names else 0})"
    else:
        name = "".join(f"[{n}]" if isinstance(n, int) else f".{n}" for n in names).lstrip(".")
        where = f"{PLACES.get(source, source)} {name}" if name else ("request body" if source == "body" else source)
        what = lib.one_line(str(first.get("msg") or "invalid value"))
        text = f"{where}: {what[:1].lower()}{what[1:]}"
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else "")


def _host_name(header: str) -> str:
    """The name or address of a Host header, lower-case, without port or IPv6 brackets ("" if malformed)."""
    try:
        return urlsplit(f"//{header}").hostname or ""
    except ValueError:
        return ""


def _authorised(request: Request, token: str, basic: bool = False) -> bool:
    """``Authorization: Bearer TOKEN``; with ``basic`` also HTTP Basic auth whose password is the token (any
    user name): what Label Studio sends for an ML backend set to Basic Authentication."""
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if basic and scheme.lower() == "basic":
        try:
            given = base64.b64decode(given.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
        scheme = "bearer"
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _format_of(path: Path) -> str | None:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF"}.get(path.suffix.lower())
