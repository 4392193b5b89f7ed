"""A Label Studio ML backend under ``/label-studio``: paste ``http://HOST:PORT/label-studio`` into a project's
Model → Connect model.

Label Studio calls ``GET /health`` (any 2xx JSON; it waits 1 s), ``POST /setup`` (``{"project", "schema",
...}`` → ``{"model_version"}``), ``POST /predict`` (``{"tasks", "label_config", "project", "params"}`` →
``{"results": [one prediction per task, in task order]}``) and ``POST /webhook`` (project events, which
hemoembed acknowledges and ignores: corrections and retraining happen in the review app). A prediction is
``{"result": [{"from_name", "to_name", "type": "choices", "value": {"choices": [label]}}], "score": p,
"model_version": "hemoembed-vN"}`` with the labelling config's Choice for the model's most probable class
among those the config lists (see :mod:`~hemoembed.app.lsconfig`), ``p`` being that class's probability.
A task that cannot be predicted gets ``{"error": "<one sentence>", "model_version": ...}`` and no
``result``, which Label Studio skips (and logs) without storing an empty prediction.

Images go through the same path as ``/api/predict`` (the engine's intake checks and limits, its batching
worker, one encoder), into a batch named "Label Studio" that the review app shows. They are never fetched
from the network: a task's image is a ``data:`` URI, or a Label Studio path resolved under a folder given
with ``--label-studio-root`` — ``/data/upload/P`` as ``ROOT/P`` (ROOT: Label Studio's ``media/upload``
folder) and ``/data/local-files/?d=P`` as ``ROOT/P`` (ROOT: its local-files document root). A path that
leaves its root (``..``, an absolute path, a symbolic link out) is refused.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from .._version import __version__
from . import lib
from .lsconfig import ChoicesTarget, parse_config
from .uploads import json_body

PREFIX = "/label-studio"
BATCH = "Label Studio"


class TaskError(Exception):
    """One task's image cannot be read (its prediction carries the message; the others go on)."""


def model_version(version: int | None) -> str:
    return f"hemoembed-v{version}"


def label_studio_router(engine, roots: Sequence[Path] = (), predict_timeout: float = 600.0) -> APIRouter:
    """The ML-backend endpoints over ``engine``; ``roots``: the folders task paths may be read from."""
    router = APIRouter(prefix=PREFIX, tags=["Label Studio ML backend"])
    roots = [Path(root).resolve() for root in roots]

    @router.get("/health")
    @router.get("/", include_in_schema=False)
    @router.get("", include_in_schema=False)
    def health() -> dict[str, Any]:
        """Label Studio's liveness check."""
        return {"status": "UP", "model_class": "hemoembed", "model_version": model_version(engine.classifier.version),
                "hemoembed": __version__}

    @router.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        """Called on connect: checks the project's labelling config (``schema``) and answers the model version."""
        body = await json_body(request, engine.limits)
        if isinstance(body, dict) and body.get("schema"):
            parse_config(body["schema"], engine.classifier.classes)
        return {"model_version": model_version(engine.classifier.version)}

    @router.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """One prediction (or one error) per task, in task order."""
        body = await json_body(request, engine.limits)
        if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
            raise lib.InputError("send Label Studio's predict request: a JSON object with a list 'tasks' and the "
                                 "project's 'label_config'")
        tasks = body["tasks"]
        if len(tasks) > engine.limits.max_files:
            raise lib.InputError(f"too many tasks ({len(tasks)}; at most {engine.limits.max_files} per request)")
        target = parse_config(body.get("label_config"), engine.classifier.classes)
        return {"results": await run_in_threadpool(predict_tasks, engine, target, tasks, roots, predict_timeout)}

    @router.post("/webhook")
    def webhook() -> dict[str, str]:
        """Project events: acknowledged, not acted on (retraining is the review app's)."""
        return {"status": "ignored",
                "detail": "hemoembed does not train from Label Studio events; correct and retrain in the review app"}

    return router


def predict_tasks(engine, target: ChoicesTarget, tasks: list[Any], roots: Sequence[Path],
                  timeout: float) -> list[dict[str, Any]]:
    """Read each task's image, classify them through the engine together, answer per task."""
    errors: dict[int, str] = {}
    files: list[tuple[str, bytes | None]] = []
    order: list[int] = []
    for i, task in enumerate(tasks):
        try:
            files.append(task_image(task, target.field, roots, engine.limits.max_file_bytes))
            order.append(i)
        except TaskError as exc:
            errors[i] = lib.one_line(str(exc))
    done: dict[int, dict[str, Any]] = {}
    if files:
        results = engine.ingest(files, engine.api_batch(BATCH))
        engine.complete(results, timeout, reuse_duplicates=True)
        done = dict(zip(order, results))
    current = model_version(engine.classifier.version)
    return [_answer(target, done.get(i), errors.get(i), current) for i in range(len(tasks))]


def _answer(target: ChoicesTarget, result: dict[str, Any] | None, error: str | None, current: str) -> dict[str, Any]:
    if result is not None and result["error"] is None:
        probabilities = {c: p for c, p in result["probabilities"].items() if c in target.choices}
        if probabilities:
            label = max(probabilities, key=probabilities.get)
            return {"result": [target.result(label)], "score": float(probabilities[label]),
                    "model_version": model_version(result["model_version"])}
        error = "none of the model's classes is a Choice of the labelling config"
    return {"error": error or (result or {}).get("error") or "not classified", "model_version": current}


def task_image(task: Any, field: str, roots: Sequence[Path], max_bytes: int) -> tuple[str, bytes | None]:
    """``(display name, bytes)`` of a task's image (bytes ``None``: over ``max_bytes``), or :class:`TaskError`."""
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        raise TaskError("the task has no 'data' object")
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"the task has no image reference in data.{field}")
    if value.startswith("data:"):
        return f"label-studio-task-{str(task.get('id'))[:40]}", _data_uri(value, max_bytes)
    try:
        parts = urlsplit(value)
    except ValueError:
        raise TaskError("the image reference is not a valid URL or path") from None
    if parts.scheme or parts.netloc:
        raise TaskError(f"{parts.scheme or 'network'} image URLs are not fetched (hemoembed never downloads "
                        "images); give Label Studio's upload or local-files folder with --label-studio-root, "
                        "or send the image as a data: URI")
    if parts.path.startswith("/data/upload/"):
        relative = unquote(parts.path[len("/data/upload/"):])
    elif parts.path.rstrip("/") == "/data/local-files":
        relative = (parse_qs(parts.query).get("d") or [""])[0]
    else:
        raise TaskError("the image reference is neither a Label Studio path (/data/upload/..., "
                        "/data/local-files/?d=...) nor a data: URI")
    return PurePosixPath(relative).name, _read_under(relative, roots, max_bytes)


def _data_uri(value: str, max_bytes: int) -> bytes | None:
    head, comma, payload = value.partition(",")
    if not comma:
        raise TaskError("the data: URI has no comma before its data")
    if not head.endswith(";base64"):
        data = unquote_to_bytes(payload)
    elif len(payload) > (max_bytes + 2) // 3 * 4 + 4:  # more than max_bytes once decoded: not decoded
        return None
    else:
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise TaskError("the data: URI is not valid base64") from None
    return None if len(data) > max_bytes else data


def _read_under(relative: str, roots: Sequence[Path], max_bytes: int) -> bytes | None:
    """The bytes of ``relative`` under the first root holding it (at most ``max_bytes`` + 1 read)."""
    if not roots:
        raise TaskError("Label Studio paths are not read: start hemoembed serve with --label-studio-root "
                        "(Label Studio's media/upload folder or local-files document root)")
    if not relative or "\x00" in relative:
        raise TaskError("the image path is empty or invalid")
    for root in roots:
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise TaskError("the image path leaves the --label-studio-root folders; refused")
        if path.is_file():
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
            return None if len(data) > max_bytes else data
    shown = relative if len(relative) <= 120 else relative[:117] + "..."
    raise TaskError(f'image "{shown}" not found under the --label-studio-root folders')
