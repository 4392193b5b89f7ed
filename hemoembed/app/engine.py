"""The server's work: accept uploads, embed them in batches, predict, place on the map, retrain.

One encoder is loaded per server. Accepted files are checked with the library's probe (size, pixel
count before any decoding, full decode for truncation), written content-addressed under
``DATA/images`` (atomic rename), recorded as ``queued`` and handed to the inference worker thread, which
gathers up to ``batch_size`` queued cells, embeds them through the same pipeline as ``hemoembed embed``,
appends them to the per-server query store (``DATA/query_store``; the reference store is never written)
and records their predictions. On restart, queued cells are queued again (an image already in the query
store is not embedded twice). Map placement runs in a thread of its own, or on demand for a detail view.
"""
from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import lib
from .models import Classifier, Versions, initial_classifier
from .state import State

FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif"}
BROWSER_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp",
                   "GIF": "image/gif"}
MIN_SIDE = 16
PLACE_AFTER_IDLE = 2.0  # seconds without classification work before the map thread places cells


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


class Engine:
    """Everything behind the HTTP API (thread-safe; the web layer only translates)."""

    def __init__(self, reference, model, record, data_dir: Path, *, limits: Limits = Limits(), k: int = 10,
                 batch_size: int = 64, retrain_cv: int = 3, gather_seconds: float = 0.05) -> None:
        self.reference, self.model, self.record = reference, model, record
        self.data = Path(data_dir)
        self.limits, self.k, self.batch_size, self.gather_seconds = limits, k, batch_size, gather_seconds
        for sub in ("images", "tmp", "cache"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        self.state = State(self.data / "state.sqlite")
        self._bind_data_dir()
        self.query_store = lib.EmbeddingStore.open_or_create(self.data / "query_store", reference.fingerprint,
                                                             record, reference.store.dim)
        self.query_store.remove_stale_temporaries()
        self._vectors = dict(zip(self.query_store.paths, self.query_store.embeddings()))
        initial = initial_classifier(reference)
        self.state.add_classes(initial.classes, "model")
        self.versions = Versions(self.data / "session", reference, self.query_store, self.state.classes(), retrain_cv)
        if not self.state.versions():
            self.state.start_version(0, status="ready")
        current = self.state.current_version()
        self.classifier: Classifier = initial
        if current and current["version"] > 0:
            self.classifier = self.versions.classifier(current["version"]) or initial
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self._model_lock = threading.Lock()  # the encoder: inference batches and GradCAM
        self._predict_lock = threading.Lock()  # finishing a batch vs swapping the classifier
        self._map_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._stop = threading.Event()
        self._placeable = threading.Event()  # cells were classified: the map thread has work
        self._working = False  # the inference worker is embedding a batch
        self._last_work = 0.0  # time.monotonic() when the worker last finished a batch
        self._threads: list[threading.Thread] = []
        self.training: int | None = None

    def _bind_data_dir(self) -> None:
        """A data folder belongs to one reference store (fingerprint) and SVM column for ever."""
        bound = self.state.get_meta("store_fingerprint")
        if bound is None:
            self.state.set_meta("store_fingerprint", self.reference.fingerprint)
            self.state.set_meta("column", self.reference.column)
        elif bound != self.reference.fingerprint:
            raise lib.MismatchError(f"{self.data}: this data folder belongs to a store of encoder {lib.short(bound)}, "
                                    f"not {lib.short(self.reference.fingerprint)}; use another --data")
        elif self.state.get_meta("column") != self.reference.column:
            raise lib.MismatchError(f"{self.data}: this data folder reviews column {self.state.get_meta('column')!r}, "
                                    f"not {self.reference.column!r}; use another --data")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for cell in self.state.queued():
            self._queue.put(cell)
        self._threads = [threading.Thread(target=self._work, name="hemoembed-inference", daemon=True),
                         threading.Thread(target=self._place_loop, name="hemoembed-map", daemon=True)]
        for thread in self._threads:
            thread.start()
        for version in self.state.unfinished_versions():  # a retrain was interrupted: finish it
            self._launch_retrain(version)

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._placeable.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.state.close()

    # ------------------------------------------------------------------ uploads
    def ingest(self, files: list[tuple[str, bytes | BinaryIO | None]], batch: int) -> list[dict[str, Any]]:
        """Check and store files (bytes or an open file, read one at a time; ``None``: over the size limit);
        per file its cell id or an error.

        A rejected file is recorded with its reason; a duplicate names the cell that already holds it."""
        if not self.state.batch_exists(batch):
            raise lib.InputError(f"batch {batch} does not exist")
        results: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        with self._ingest_lock:
            for raw_name, data in files:
                name = clean_filename(raw_name)
                if data is not None and not isinstance(data, bytes):
                    data = data.read()
                cell, new, error = self._accept(name, data, seen, batch)
                if error is not None:
                    self.state.add_reject(batch, name, error)
                if new:
                    self._queue.put(cell)
                results.append({"filename": name, "id": cell, "error": error})
        return results

    def _accept(self, name: str, data: bytes | None, seen: dict[str, int],
                batch: int) -> tuple[int | None, bool, str | None]:
        """(cell id, newly stored, error) for one file."""
        if data is None:
            return None, False, f"file is larger than the {self.limits.max_file_bytes / 2**20:g} MB limit"
        if not data:
            return None, False, "empty file"
        sha = hashlib.sha256(data).hexdigest()
        earlier = seen.get(sha) or self.state.cell_by_sha(sha)
        if earlier is not None:
            return earlier, False, f"duplicate: identical to cell {earlier}, uploaded earlier"
        tmp = self.data / "tmp" / f"{sha}.{os.getpid()}"
        tmp.write_bytes(data)
        try:
            info = lib.probe(tmp, max_pixels=self.limits.max_pixels, full=True)
            error = info.error or _format_error(info)
            if error:
                return None, False, error
            image = f"images/{sha[:2]}/{sha}{FORMATS[info.format]}"
            target = self.data / image
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        cell = self.state.add_cell(sha256=sha, filename=name, image=image, fmt=info.format, width=info.width,
                                   height=info.height, size_bytes=len(data), batch=batch)
        seen[sha] = cell
        return cell, True, None

    def api_batch(self) -> int:
        """The batch ``/api/predict`` uploads go to (one, created on first use)."""
        with self._ingest_lock:
            value = self.state.get_meta("api_batch")
            if value is None:
                value = str(self.state.new_batch("API uploads"))
                self.state.set_meta("api_batch", value)
            return int(value)

    def wait(self, ids: list[int], timeout: float) -> None:
        """Block until none of ``ids`` is queued (or ``timeout`` seconds pass)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while True:
                pending = [c for c in self.state.cells(ids) if c["status"] == "queued"]
                left = deadline - time.monotonic()
                if not pending or left <= 0:
                    return
                self._done.wait(min(left, 1.0))

    # ------------------------------------------------------------------ inference worker
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                return
            self._working = True
            ids, deadline = [first], time.monotonic() + self.gather_seconds
            while len(ids) < self.batch_size:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                ids.append(nxt)
            try:
                self._process(ids)
            except Exception as exc:  # noqa: BLE001 - a worker must survive; the cells say why
                self.state.finish_cells([], [(i, f"internal error while embedding ({lib.one_line(exc)[:200]})")
                                             for i in ids])
            self._working, self._last_work = False, time.monotonic()
            with self._done:
                self._done.notify_all()
            self._placeable.set()

    def _process(self, ids: list[int]) -> None:
        cells = [c for c in self.state.cells(ids) if c["status"] == "queued"]
        todo = [c for c in cells if c["image"] not in self._vectors]
        failed: list[tuple[int, str]] = []
        if todo:
            with self._model_lock:
                vectors, ok = lib.embed_images(self.model, self.record, [str(self.data / c["image"]) for c in todo],
                                               batch_size=self.batch_size)
            embedded = [todo[i] for i in ok]
            if embedded:
                self.query_store.append(lib.make_part_table(
                    [c["image"] for c in embedded], [c["sha256"] for c in embedded], [c["width"] for c in embedded],
                    [c["height"] for c in embedded], vectors))
                self._vectors.update(zip([c["image"] for c in embedded], vectors))
            done_ids = {c["id"] for c in embedded}
            failed = [(c["id"], lib.UNDECODABLE) for c in todo if c["id"] not in done_ids]
        ready = [c for c in cells if c["image"] in self._vectors]
        with self._predict_lock:
            self.state.finish_cells(self._predictions(ready, self.classifier), failed)

    def _predictions(self, cells: list[dict], classifier: Classifier) -> list[tuple]:
        vectors = np.stack([self._vectors[c["image"]] for c in cells]) if cells else np.zeros((0, 1))
        return [(c["id"], classifier.version, *p) for c, p in zip(cells, classifier.predict(vectors))]

    def vector(self, cell: dict) -> np.ndarray:
        if cell["image"] not in self._vectors:
            raise lib.InputError(f"cell {cell['id']} is not embedded ({cell['status']}: {cell['error'] or 'queued'})")
        return self._vectors[cell["image"]]

    # ------------------------------------------------------------------ map placement
    def _place_loop(self, limit: int = 64) -> None:
        """Place classified cells on the map in their own thread (a placement takes seconds on a large map;
        the inference worker never waits for it), up to ``limit`` cells per openTSNE call, once no upload
        has waited to be classified for ``PLACE_AFTER_IDLE`` seconds (an upload in progress goes first)."""
        while not self._stop.is_set():
            self._placeable.wait(timeout=5.0)
            if self._working or not self._queue.empty() or time.monotonic() - self._last_work < PLACE_AFTER_IDLE:
                time.sleep(0.2)
                continue
            self._placeable.clear()
            if self.reference.map is None or self._stop.is_set():
                continue
            try:
                ids = self.state.unplaced(limit)
                if ids:
                    self.place(self.state.cells(ids))
                    self._placeable.set()  # maybe more
            except Exception:  # noqa: BLE001 - the detail view places on demand and reports the error
                time.sleep(1.0)

    def place(self, cells: list[dict]) -> dict[int, tuple[float, float]]:
        """Place cells onto the reference map (openTSNE transform against the fixed map) and store it; cells
        placed meanwhile (by the other thread) are not placed twice."""
        with self._map_lock:
            known = self.state.cells([c["id"] for c in cells])
            placed = {c["id"]: (c["map_x"], c["map_y"]) for c in known if c["map_x"] is not None}
            todo = [c for c in cells if c["id"] not in placed]
            if todo:
                xy = self.reference.map.transform(np.stack([self.vector(c) for c in todo]))
                rows = [(c["id"], float(x), float(y)) for c, (x, y) in zip(todo, xy)]
                self.state.set_placements(rows)
                placed.update({i: (x, y) for i, x, y in rows})
        return placed

    def map_points(self) -> dict[str, Any]:
        """The reference map for the UI: coordinates, store rows and label indices into ``classes``."""
        tsne_map = self.reference.map
        if tsne_map is None:
            return {"available": False}
        labels = [self.reference.row_labels[r] for r in self.reference.map_rows]
        classes = sorted(set(labels) - {""})
        index = {c: i for i, c in enumerate(classes)}
        return {"available": True, "classes": classes, "x": np.round(tsne_map.coords[:, 0], 3).tolist(),
                "y": np.round(tsne_map.coords[:, 1], 3).tolist(), "rows": self.reference.map_rows.tolist(),
                "label": [index.get(label, -1) for label in labels]}

    # ------------------------------------------------------------------ review
    def cell(self, cell_id: int) -> dict[str, Any]:
        found = self.state.cells([cell_id])
        if not found:
            raise KeyError(cell_id)
        return found[0]

    def detail(self, cell_id: int) -> dict[str, Any]:
        """A cell with ranked probabilities, its nearest reference cells and its place on the map."""
        cell = self.cell(cell_id)
        if cell["status"] != "done":
            return cell
        vector = self.vector(cell)
        cell["neighbours"] = self.reference.neighbours(vector, self.k)
        if self.reference.map is not None and cell["map_x"] is None:
            cell["map_x"], cell["map_y"] = self.place([cell])[cell_id]
        cell["ranked"] = sorted(cell["probabilities"].items(), key=lambda kv: -kv[1])
        return cell

    def review_order(self, cells: list[dict]) -> list[dict]:
        """``cells`` in "needs review" order: those classified and not yet corrected first, ranked by the
        labelling session's query under the current version (the code of ``active-learn --session``), then
        the corrected ones, then the rest (queued or failed), each group by id."""
        todo = [c for c in cells if c["status"] == "done" and not c["corrected"] and c["image"] in self._vectors]
        if todo:
            order = self.versions.review_order(self.classifier, np.stack([self._vectors[c["image"]] for c in todo]))
            todo = [todo[i] for i in order]
        first = {c["id"] for c in todo}
        rest = sorted((c for c in cells if c["id"] not in first), key=lambda c: (not c["corrected"], c["id"]))
        for rank, cell in enumerate(todo):
            cell["review_rank"] = rank
        return todo + rest

    def correct(self, cell_id: int, label: str, reviewer: str, seconds: float | None) -> dict[str, Any]:
        """Store a reviewer's label at once; only known classes (new ones through :meth:`add_class`)."""
        cell = self.cell(cell_id)
        classes = self.state.classes()
        if label not in classes:
            raise lib.InputError(f"label {label!r} is not a class ({', '.join(classes)}); define a new class first")
        if cell["status"] != "done":
            raise lib.InputError(f"cell {cell_id} cannot be labelled: {cell['error'] or cell['status']}")
        reviewer = clean_filename(reviewer or "")[:80] or "anonymous"
        seconds = None if seconds is None or not np.isfinite(seconds) or seconds < 0 else min(float(seconds), 86400.0)
        self.state.correct(cell_id, label, reviewer, seconds)
        return self.cell(cell_id)

    def add_class(self, name: str) -> list[str]:
        with self._retrain_lock:
            self.versions.add_class(name)  # the session validates the name and keeps it
            self.state.add_classes([self.versions.session.config.classes[-1]], "new")
        return self.state.classes()

    def gradcam(self, cell_id: int) -> bytes:
        """PNG: GradCAM++ of the current version's decision for the cell's predicted class over the cell."""
        from PIL import Image

        cell = self.cell(cell_id)
        classifier = self.classifier
        if cell["status"] != "done":
            raise lib.InputError(f"cell {cell_id} has no prediction to explain")
        label = cell["label"] if cell["label"] in classifier.classes else classifier.predict(
            self.vector(cell)[None, :])[0][0]
        cache = self.data / "cache" / f"gradcam_{cell_id}_v{classifier.version}_{_safe(label)}.png"
        if cache.is_file():
            return cache.read_bytes()
        decision = classifier.decision()
        with self._model_lock:
            result = lib.explain_class(self.model, lib.load_inputs([self.data / cell["image"]], self.record),
                                       decision, label)
        buffer = io.BytesIO()
        Image.fromarray(lib.overlay(result.images[0], result.upsampled()[0])).save(buffer, format="PNG")
        lib.atomic_write_bytes(cache, buffer.getvalue())
        return buffer.getvalue()

    def image(self, cell_id: int) -> tuple[bytes, str]:
        """The cell's image as the browser can show it (TIFF is converted to PNG once, through the decoder)."""
        cell = self.cell(cell_id)
        return self.browser_image(self.data / cell["image"], cell["format"], f"cell_{cell_id}")

    def browser_image(self, path: Path, fmt: str | None, key: str) -> tuple[bytes, str]:
        if fmt in BROWSER_FORMATS:
            return path.read_bytes(), BROWSER_FORMATS[fmt]
        cache = self.data / "cache" / f"{_safe(key)}.png"
        if not cache.is_file():
            from PIL import Image

            buffer = io.BytesIO()
            Image.fromarray(lib.decode_image(path)).save(buffer, format="PNG")
            lib.atomic_write_bytes(cache, buffer.getvalue())
        return cache.read_bytes(), "image/png"

    # ------------------------------------------------------------------ retraining
    def retrain(self) -> int:
        """Start a retrain in the background; returns its version (refused while one runs)."""
        if self.training is not None:
            raise lib.InputError(f"version {self.training} is still training; wait for it")
        version = self.state.start_version()
        self._launch_retrain(version)
        return version

    def _launch_retrain(self, version: int) -> None:
        self.training = version
        thread = threading.Thread(target=self._retrain, args=(version,), name=f"hemoembed-retrain-{version}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _retrain(self, version: int) -> None:
        start = time.monotonic()
        try:
            self.wait(self.state.queued(), timeout=3600.0)  # after a restart: uploads first
            with self._retrain_lock:
                corrections = self.state.corrections()
                images = {c["id"]: c["image"] for c in self.state.cells(list(corrections))
                          if c["image"] in self._vectors}
                corrections = {i: label for i, label in corrections.items() if i in images}
                self.versions.sync_classes(self.state.classes())
                event = self.versions.teach({images[i]: label for i, label in corrections.items()},
                                            f"hemoembed serve: version {version}")
                classifier = self.versions.classifier(version)
            with self._predict_lock:
                done = self.state.cells(status="done")
                refreshed = self._predictions([c for c in done if c["image"] in self._vectors], classifier)
                self.state.finish_version(version, status="ready", n_labels=event["n_labels"],
                                          n_corrections=len(corrections), cv_macro_f1=event["cv_macro_f1"],
                                          seconds=time.monotonic() - start, predictions=refreshed)
                self.classifier = classifier
        except Exception as exc:  # noqa: BLE001 - reported in the version row and the UI
            self.state.finish_version(version, status="failed", error=lib.one_line(f"{type(exc).__name__}: {exc}"),
                                      seconds=time.monotonic() - start)
        finally:
            self.training = None

    def model_status(self) -> dict[str, Any]:
        current = self.state.current_version() or {"version": 0, "correction_seq": 0}
        return {"version": self.classifier.version, "training": self.training, "classes": self.state.classes(),
                "pending_corrections": self.state.pending_corrections(current["correction_seq"]),
                "versions": self.state.versions(), "queued": self._queue.qsize()}


def clean_filename(name: str) -> str:
    """A client's file name for display only: last path component, printable, at most 200 characters."""
    name = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    return name[:200] or "unnamed"


def _format_error(info) -> str | None:
    if info.format not in FORMATS:
        return f"{info.format or 'unknown'} images are not accepted (JPEG, PNG, BMP, TIFF or GIF)"
    if min(info.width, info.height) < MIN_SIDE:
        return f"image too small ({info.width}x{info.height}; at least {MIN_SIDE} px a side)"
    return None


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]
