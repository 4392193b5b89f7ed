"""The server's work: accept uploads, embed them in batches, predict, place on the map, retrain.

One encoder is loaded per server. Uploads are checked and stored by :class:`~hemoembed.app.intake.Intake`
(content-addressed under ``DATA/images``, one transaction per request) and queued for the
:class:`~hemoembed.app.worker.InferenceWorker`, which embeds them in batches with the record's
preprocessing steps, the ones ``hemoembed embed``'s pipeline runs (the same vectors), appends them to the
per-server query store (``DATA/query_store``; the reference store is never written), records their
predictions and reports per-file progress. On restart, queued cells are queued again (an image already in
the query store is not embedded twice). Map placement runs in a thread of its own, or on demand for a
detail view.
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import lib
from .intake import Intake, Limits, clean_filename
from .models import Classifier, Versions, initial_classifier
from .state import State
from .worker import InferenceWorker

BROWSER_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp",
                   "GIF": "image/gif"}
PLACE_AFTER_IDLE = 2.0  # seconds without classification work before the map thread places cells


class CellNotFound(LookupError):
    """No cell has the id asked for (the server answers 404)."""


class Engine:
    """Everything behind the HTTP API (thread-safe; the web layer only translates)."""

    def __init__(self, reference, model, record, data_dir: Path, *, limits: Limits = Limits(), k: int = 10,
                 batch_size: int = 64, step: int = 64, retrain_cv: int = 3, gather_seconds: float = 0.1) -> None:
        self.reference, self.model, self.record = reference, model, record
        self.data = Path(data_dir)
        self.limits, self.k = limits, k
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
            self.classifier = self.versions.load(current["version"]) or initial
        self._model_lock = threading.Lock()  # the encoder: inference batches and GradCAM
        self._predict_lock = threading.Lock()  # finishing a batch vs swapping the classifier
        self._map_lock = threading.Lock()
        self._retrain_lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._stop = threading.Event()
        self._placeable = threading.Event()  # cells were classified: the map thread has work
        self.intake = Intake(self.state, self.data, limits)
        self.worker = InferenceWorker(self.state, self.data, model, record, self.query_store, self._vectors,
                                      self._finish, self._model_lock, batch_size=batch_size, step=step,
                                      gather_seconds=gather_seconds, on_batch=self._placeable.set)
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
        try:
            self.worker.warm_up(self.reference.image_file(0))
        except (lib.HemoembedError, OSError):  # no reference image here: the first upload traces instead
            pass
        self.worker.start(self.state.queued())
        self._threads = [threading.Thread(target=self._place_loop, name="hemoembed-map", daemon=True)]
        for thread in self._threads:
            thread.start()
        for version in self.state.unfinished_versions():  # a retrain was interrupted: finish it
            self._launch_retrain(version)

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()
        self._placeable.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.intake.close()
        self.state.close()

    # ------------------------------------------------------------------ uploads
    def ingest(self, files: list[tuple[str, bytes | BinaryIO | None]], batch: int) -> list[dict[str, Any]]:
        """Check and store files (see :meth:`Intake.accept`) and queue the new cells; per file its
        ``filename``, cell ``id`` and ``error``."""
        results = self.intake.accept(files, batch)
        for result in results:
            if result.pop("new"):
                self.worker.submit(result["id"])
        return results

    def progress(self, batch: int) -> dict[str, Any]:
        """Per-file progress of an upload batch: its cells per status, its refused files, and the cells of
        it the worker is embedding now (with the files of the worker's batch embedded so far)."""
        if not self.state.batch_exists(batch):
            raise lib.InputError(f"batch {batch} does not exist")
        work = self.worker.progress(batch)
        counts = self.state.batch_counts(batch)
        # the worker records a batch's predictions before it lets go of its cells: name only those still
        # queued, read after the counts, so a poll never shows a cell both finished and being embedded
        embedding = [c["id"] for c in self.state.cells(work["cells"]) if c["status"] == "queued"]
        return {"batch": batch, **counts, "embedding": embedding, "embedded": work["embedded"],
                "embedding_of": work["of"], "waiting": self.worker.waiting(), "model_version": self.classifier.version}

    def api_batch(self, name: str = "API uploads") -> int:
        """The batch named ``name`` that synchronous predictions go to (one per name, created on first use):
        ``/api/predict``'s uploads, or Label Studio's tasks."""
        key = "api_batch" if name == "API uploads" else f"api_batch:{name}"
        with self._ingest_lock:
            value = self.state.get_meta(key)
            if value is None:
                value = str(self.state.new_batch(name))
                self.state.set_meta(key, value)
            return int(value)

    def wait(self, ids: list[int], timeout: float) -> None:
        """Block until none of ``ids`` is queued (or ``timeout`` seconds pass)."""
        self.worker.wait(ids, timeout)

    def complete(self, results: list[dict[str, Any]], timeout: float, reuse_duplicates: bool = False) -> None:
        """Wait for :meth:`ingest`'s ``results`` to be classified and add each one's ``label``,
        ``probabilities``, ``score`` (its confidence) and ``model_version``, or an ``error``. With
        ``reuse_duplicates`` a file identical to a stored cell gets that cell's prediction instead of the
        "duplicate" error (what a labelling tool asking again about the same image needs)."""
        wanted = [r["id"] is not None and (reuse_duplicates or r["error"] is None) for r in results]
        ids = [r["id"] for r, w in zip(results, wanted) if w]
        self.wait(ids, timeout)
        cells = {c["id"]: c for c in self.state.cells(ids)}
        for result, want in zip(results, wanted):
            cell = cells.get(result["id"]) if want else None
            result.update(label=None, probabilities=None, score=None, model_version=None)
            if cell is not None and cell["status"] == "done":
                result.update(label=cell["label"], probabilities=cell["probabilities"], score=cell["confidence"],
                              model_version=cell["version"], error=None)
            elif cell is not None:
                result["error"] = cell["error"] or f"still being classified; see /api/cells/{cell['id']}"

    def _finish(self, ready: list[dict], failed: list[tuple[int, str]]) -> None:
        """The worker's last step: record predictions by the current version and failures."""
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
            if self.worker.busy or time.monotonic() - self.worker.last_work < PLACE_AFTER_IDLE:
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
            raise CellNotFound(f"no cell {cell_id}")
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
                classifier = self.versions.save(version)
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
                "versions": self.state.versions(), "queued": self.worker.waiting()}


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]
