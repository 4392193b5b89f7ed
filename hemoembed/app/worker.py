"""The inference worker: one thread that embeds queued cells in batches and records their predictions.

It gathers up to ``batch_size`` queued cells (while more keep arriving: until none came for
``gather_seconds`` or ``gather_max_seconds`` passed since the first, so an upload sent in many small
requests is embedded in full batches, and a lone request waits only ``gather_seconds``), embeds
them with the record's preprocessing steps, the ones ``hemoembed embed``'s input pipeline runs (files were
checked when they were accepted, so they are not probed again), appends them to the per-server query store
as one part and records their predictions in one transaction. The encoder runs on steps of ``step``
images, each one call of a graph traced once per server (decode and preprocess every file of the step in
parallel, the batch step, the encoder): a ``tf.data`` pipeline built and iterated for every small upload
batch cost more CPU than embedding it. After each step the in-memory progress
(:meth:`InferenceWorker.progress`) counts the files embedded so far, so the page can show per-file
progress while a batch is being embedded. Finished work lives in the database and the query
store only; the progress is a view of the work in hand.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import lib
from .state import State


class InferenceWorker:
    """Embeds and classifies queued cells in a thread of its own (:meth:`submit` queues a cell id)."""

    def __init__(self, state: State, data_dir: Path, model, record, query_store, vectors: dict[str, np.ndarray],
                 finish: Callable[[list[dict], list[tuple[int, str]]], None], model_lock: threading.Lock, *,
                 batch_size: int = 64, step: int = 64, gather_seconds: float = 0.1, gather_max_seconds: float = 0.5,
                 on_batch: Callable[[], None] = lambda: None) -> None:
        self.state, self.data, self.model, self.record = state, Path(data_dir), model, record
        self.query_store, self.vectors, self.finish, self.model_lock = query_store, vectors, finish, model_lock
        self.batch_size, self.step, self.gather_seconds, self.on_batch = batch_size, step, gather_seconds, on_batch
        self.gather_max_seconds = gather_max_seconds
        self._queue: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cells: dict[int, int] = {}  # the batch in hand: cell id → its upload batch
        self._embedded = 0  # files of the batch in hand embedded so far
        self.last_work = 0.0  # time.monotonic() when a batch was last finished
        self._thread: threading.Thread | None = None
        self._traced = None  # the embedding graph (traced on first use)

    # ------------------------------------------------------------------ lifecycle
    def start(self, queued: list[int]) -> None:
        for cell in queued:
            self._queue.put(cell)
        self._thread = threading.Thread(target=self._run, name="hemoembed-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, cell: int) -> None:
        self._queue.put(cell)

    @property
    def busy(self) -> bool:
        """A batch is in hand or cells are waiting."""
        return bool(self._cells) or not self._queue.empty()

    def waiting(self) -> int:
        return self._queue.qsize()

    def progress(self, batch: int | None = None) -> dict[str, Any]:
        """The batch in hand: its cells (those of upload ``batch`` only, when given) and the files of the
        whole batch in hand embedded so far."""
        with self._lock:
            ids = sorted(i for i, b in self._cells.items() if batch is None or b == batch)
            return {"cells": ids, "embedded": self._embedded, "of": len(self._cells)}

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

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                return
            ids = self._gather(first)
            try:
                self.process(ids)
            except Exception as exc:  # noqa: BLE001 - a worker must survive; the cells say why
                self.state.finish_cells([], [(i, f"internal error while embedding ({lib.one_line(exc)[:200]})")
                                             for i in ids])
            self.last_work = time.monotonic()
            with self._done:
                self._done.notify_all()
            self.on_batch()

    def _gather(self, first: int) -> list[int]:
        """``first`` and the cells queued after it, up to ``batch_size``: while cells keep arriving (none
        missing for ``gather_seconds``), at most ``gather_max_seconds`` after the first."""
        ids, now = [first], time.monotonic()
        last = now + self.gather_max_seconds
        while len(ids) < self.batch_size:
            try:
                nxt = self._queue.get(timeout=max(0.0, min(now + self.gather_seconds, last) - now))
            except queue.Empty:
                break
            if nxt is None:
                self._stop.set()
                break
            ids.append(nxt)
            now = time.monotonic()
        return ids

    def process(self, ids: list[int]) -> None:
        """Embed, store and classify the queued cells among ``ids`` (one store part, one transaction); they
        are the batch in hand (:meth:`progress`) until their predictions are recorded."""
        cells = [c for c in self.state.cells(ids) if c["status"] == "queued"]
        todo = [c for c in cells if c["image"] not in self.vectors]  # after a restart some may be stored
        self._hand(cells)
        try:
            failed: list[tuple[int, str]] = []
            if todo:
                with self.model_lock:
                    vectors, ok = self._embed([str(self.data / c["image"]) for c in todo])
                embedded = [todo[i] for i in ok]
                if embedded:
                    self.query_store.append(lib.make_part_table(
                        [c["image"] for c in embedded], [c["sha256"] for c in embedded],
                        [c["width"] for c in embedded], [c["height"] for c in embedded], vectors))
                    self.vectors.update(zip([c["image"] for c in embedded], vectors))
                done_ids = {c["id"] for c in embedded}
                failed = [(c["id"], lib.UNDECODABLE) for c in todo if c["id"] not in done_ids]
            self.finish([c for c in cells if c["image"] in self.vectors], failed)
        finally:
            self._hand(())

    def warm_up(self, image: Path) -> None:
        """Trace the embedding graph once (on any image file, e.g. a reference cell) at start-up, so the first
        upload does not pay seconds of tracing."""
        with self.model_lock:
            self._embed([str(image)] * 2, advance=False)

    def _graph(self):
        """Encoded files (a string vector of any length) → embeddings: the record's per-image step on every
        file (in parallel), its batch step, the encoder; one signature, so it is traced once."""
        if self._traced is None:
            import tensorflow as tf

            model, record = self.model, self.record
            side = int(record.image_size)

            def embed(data):
                images = tf.map_fn(lambda one: lib.prepare_bytes_tf(one, record), data, parallel_iterations=16,
                                   fn_output_signature=tf.TensorSpec((side, side, 3), tf.float32))
                return model(lib.finish_batch_tf(images, record), training=False)

            self._traced = tf.function(embed, input_signature=[tf.TensorSpec((None,), tf.string)])
        return self._traced

    def _embed(self, paths: list[str], advance: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, indices into ``paths`` of the files that decoded), ``step`` files per graph call; a
        step with a file that does not decode is embedded again file by file, leaving that one out."""
        dim = int(self.model.output_shape[-1])
        vectors, indices = [np.zeros((0, dim), np.float32)], [np.zeros(0, np.int64)]
        for at in range(0, len(paths), self.step):
            step = list(range(at, min(at + self.step, len(paths))))
            emb, ok = self._call(paths, step)
            if len(ok) < len(step):
                pairs = [self._call(paths, [i]) for i in step]
                emb, ok = np.concatenate([e for e, _ in pairs]), [i for _, found in pairs for i in found]
            vectors.append(emb)
            indices.append(np.asarray(ok, np.int64))
            if advance:
                self.advance(len(step))
        return np.concatenate(vectors), np.concatenate(indices)

    def _call(self, paths: list[str], step: list[int]) -> tuple[np.ndarray, list[int]]:
        """Embed the files ``step`` (indices into ``paths``) in one graph call: all of them, or none when one
        cannot be read or decoded."""
        import tensorflow as tf

        try:
            data = [Path(paths[i]).read_bytes() for i in step]
            return np.asarray(self._graph()(tf.constant(data)), np.float32), step
        except (OSError, tf.errors.OpError):
            return np.zeros((0, int(self.model.output_shape[-1])), np.float32), []

    def advance(self, files: int) -> None:
        """``files`` more files of the batch in hand are embedded."""
        with self._lock:
            self._embedded += files

    def _hand(self, cells) -> None:
        with self._lock:
            self._cells = {c["id"]: c["batch"] for c in cells}
            self._embedded = 0
