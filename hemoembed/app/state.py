"""The review app's durable state: one SQLite database (WAL, full sync) under ``--data``.

Tables: ``cells`` (one per accepted upload, content-addressed image, status queued/done/error, the latest
prediction), ``rejects`` (files refused at upload, with the reason), ``corrections`` (one per cell: the
reviewer's label, when, how long the review took), ``classes`` (the model's, then any defined in the app),
``versions`` (model versions: 0 is the ``--model`` SVM, later ones come from retraining) and ``meta``.
Every write is one transaction, so a crash leaves either the old or the new state.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, filename TEXT NOT NULL, image TEXT NOT NULL,
    format TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
    batch INTEGER NOT NULL REFERENCES batches(id), uploaded REAL NOT NULL, status TEXT NOT NULL,
    error TEXT, version INTEGER, label TEXT, confidence REAL, uncertainty REAL, probabilities TEXT,
    map_x REAL, map_y REAL);
CREATE INDEX IF NOT EXISTS cells_batch ON cells(batch);
CREATE TABLE IF NOT EXISTS rejects (id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, filename TEXT NOT NULL,
    reason TEXT NOT NULL, time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS corrections (cell INTEGER PRIMARY KEY REFERENCES cells(id), label TEXT NOT NULL,
    reviewer TEXT NOT NULL, seconds REAL, time REAL NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS classes (name TEXT PRIMARY KEY, origin TEXT NOT NULL, added REAL NOT NULL,
    position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS versions (version INTEGER PRIMARY KEY, status TEXT NOT NULL, started REAL NOT NULL,
    finished REAL, correction_seq INTEGER NOT NULL, n_labels INTEGER, n_corrections INTEGER,
    cv_macro_f1 REAL, seconds REAL, error TEXT);
"""
CELL_COLUMNS = ("id", "sha256", "filename", "image", "format", "width", "height", "size_bytes", "batch",
                "uploaded", "status", "error", "version", "label", "confidence", "uncertainty", "probabilities",
                "map_x", "map_y")


class State:
    """Thread-safe access to the database (one connection, one lock: SQLite serialises writers anyway)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    # ------------------------------------------------------------------ plumbing
    def transaction(self):
        """``with state.transaction() as db:`` — one atomic write (BEGIN IMMEDIATE ... COMMIT)."""
        return _Transaction(self)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ classes
    def classes(self) -> list[str]:
        return [r["name"] for r in self.query("SELECT name FROM classes ORDER BY position")]

    def add_classes(self, names: Iterable[str], origin: str) -> None:
        with self.transaction() as db:
            start = db.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM classes").fetchone()[0]
            for offset, name in enumerate(names):
                db.execute("INSERT OR IGNORE INTO classes VALUES (?, ?, ?, ?)", (name, origin, time.time(),
                                                                                 start + offset))

    # ------------------------------------------------------------------ batches, cells, rejects
    def new_batch(self, name: str) -> int:
        with self.transaction() as db:
            return int(db.execute("INSERT INTO batches (name, created) VALUES (?, ?)", (name, time.time())).lastrowid)

    def batches(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT b.id, b.name, b.created, COUNT(c.id) AS cells FROM batches b "
                          "LEFT JOIN cells c ON c.batch = b.id GROUP BY b.id ORDER BY b.id")
        return [dict(r) for r in rows]

    def batch_exists(self, batch: int) -> bool:
        return bool(self.query("SELECT 1 FROM batches WHERE id = ?", (batch,)))

    def cell_by_sha(self, sha256: str) -> int | None:
        rows = self.query("SELECT id FROM cells WHERE sha256 = ?", (sha256,))
        return int(rows[0]["id"]) if rows else None

    def add_uploads(self, batch: int, cells: Sequence[dict[str, Any]],
                    rejects: Callable[[list[int]], Sequence[tuple[str, str]]]) -> list[int]:
        """Record one upload request in one transaction: new cells (``sha256``, ``filename``, ``image``,
        ``fmt``, ``width``, ``height``, ``size_bytes``) as queued, then the refused files ``(filename,
        reason)`` that ``rejects(ids)`` gives once the new cells' ids are known; the new cells' ids in order."""
        now = time.time()
        with self.transaction() as db:
            ids = [int(db.execute("INSERT INTO cells (sha256, filename, image, format, width, height, size_bytes, "
                                  "batch, uploaded, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')",
                                  (c["sha256"], c["filename"], c["image"], c["fmt"], c["width"], c["height"],
                                   c["size_bytes"], batch, now)).lastrowid) for c in cells]
            db.executemany("INSERT INTO rejects (batch, filename, reason, time) VALUES (?, ?, ?, ?)",
                           [(batch, name, reason, now) for name, reason in rejects(ids)])
        return ids

    def rejects(self, batch: int | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE batch = ?", (batch,)) if batch is not None else ("", ())
        return [dict(r) for r in self.query(f"SELECT * FROM rejects {where} ORDER BY id", params)]

    def cells(self, ids: Sequence[int] | None = None, *, batch: int | None = None,
              status: str | None = None) -> list[dict[str, Any]]:
        """Cells with their prediction and correction (``corrected``, ``reviewer``, ``seconds``, ``corrected_at``)."""
        clauses, params = [], []
        if ids is not None:
            if not ids:
                return []
            clauses.append(f"c.id IN ({','.join('?' * len(ids))})")
            params += list(ids)
        if batch is not None:
            clauses.append("c.batch = ?")
            params.append(batch)
        if status is not None:
            clauses.append("c.status = ?")
            params.append(status)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.query("SELECT c.*, k.label AS corrected, k.reviewer, k.seconds, k.time AS corrected_at, k.seq "
                          f"FROM cells c LEFT JOIN corrections k ON k.cell = c.id {where} ORDER BY c.id", params)
        return [_cell(r) for r in rows]

    def batch_counts(self, batch: int) -> dict[str, int]:
        """A batch's cells per status (``cells``, ``queued``, ``done``, ``error``) and its ``rejected`` files."""
        rows = self.query("SELECT status, COUNT(*) AS n FROM cells WHERE batch = ? GROUP BY status", (batch,))
        counts = {"queued": 0, "done": 0, "error": 0, **{r["status"]: int(r["n"]) for r in rows}}
        rejected = self.query("SELECT COUNT(*) AS n FROM rejects WHERE batch = ?", (batch,))[0]["n"]
        return {"cells": sum(counts.values()), **counts, "rejected": int(rejected)}

    def queued(self) -> list[int]:
        return [int(r["id"]) for r in self.query("SELECT id FROM cells WHERE status = 'queued' ORDER BY id")]

    def finish_cells(self, done: Sequence[tuple[int, int, str, float, float, dict[str, float]]],
                     failed: Sequence[tuple[int, str]]) -> None:
        """Record predictions ``(id, version, label, confidence, uncertainty, probabilities)`` and failures."""
        with self.transaction() as db:
            db.executemany("UPDATE cells SET status = 'done', error = NULL, version = ?, label = ?, confidence = ?, "
                           "uncertainty = ?, probabilities = ? WHERE id = ?",
                           [(v, lab, conf, unc, json.dumps(p), i) for i, v, lab, conf, unc, p in done])
            db.executemany("UPDATE cells SET status = 'error', error = ? WHERE id = ?", [(e, i) for i, e in failed])

    def set_placements(self, placed: Sequence[tuple[int, float, float]]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE cells SET map_x = ?, map_y = ? WHERE id = ?", [(x, y, i) for i, x, y in placed])

    def unplaced(self, limit: int) -> list[int]:
        rows = self.query("SELECT id FROM cells WHERE status = 'done' AND map_x IS NULL ORDER BY id LIMIT ?", (limit,))
        return [int(r["id"]) for r in rows]

    # ------------------------------------------------------------------ corrections
    def correct(self, cell: int, label: str, reviewer: str, seconds: float | None) -> int:
        """Store (or replace) the reviewer's label of ``cell`` at once; returns its sequence number."""
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM corrections").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?, ?)",
                       (cell, label, reviewer, seconds, time.time(), seq))
            return int(seq)

    def corrections(self) -> dict[int, str]:
        return {int(r["cell"]): r["label"] for r in self.query("SELECT cell, label FROM corrections")}

    def correction_seq(self) -> int:
        return int(self.query("SELECT COALESCE(MAX(seq), 0) AS s FROM corrections")[0]["s"])

    def pending_corrections(self, since_seq: int) -> int:
        return int(self.query("SELECT COUNT(*) AS n FROM corrections WHERE seq > ?", (since_seq,))[0]["n"])

    # ------------------------------------------------------------------ model versions
    def versions(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM versions ORDER BY version")]

    def current_version(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM versions WHERE status = 'ready' ORDER BY version DESC LIMIT 1")
        return dict(rows[0]) if rows else None

    def start_version(self, version: int | None = None, status: str = "training") -> int:
        with self.transaction() as db:
            if version is None:
                version = db.execute("SELECT COALESCE(MAX(version), -1) + 1 FROM versions").fetchone()[0]
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM corrections").fetchone()[0]
            db.execute("INSERT INTO versions (version, status, started, correction_seq) VALUES (?, ?, ?, ?)",
                       (version, status, time.time(), seq))
            return int(version)

    def finish_version(self, version: int, *, status: str, n_labels: int | None = None,
                       n_corrections: int | None = None, cv_macro_f1: float | None = None,
                       seconds: float | None = None, error: str | None = None,
                       predictions: Sequence[tuple[int, int, str, float, float, dict[str, float]]] = ()) -> None:
        """Close a version and, in the same transaction, replace the predictions it refreshed."""
        with self.transaction() as db:
            db.execute("UPDATE versions SET status = ?, finished = ?, n_labels = ?, n_corrections = ?, "
                       "cv_macro_f1 = ?, seconds = ?, error = ? WHERE version = ?",
                       (status, time.time(), n_labels, n_corrections, cv_macro_f1, seconds, error, version))
            db.executemany("UPDATE cells SET version = ?, label = ?, confidence = ?, uncertainty = ?, "
                           "probabilities = ? WHERE id = ?",
                           [(v, lab, conf, unc, json.dumps(p), i) for i, v, lab, conf, unc, p in predictions])

    def unfinished_versions(self) -> list[int]:
        return [int(r["version"]) for r in self.query("SELECT version FROM versions WHERE status = 'training'")]


class _Transaction:
    def __init__(self, state: State) -> None:
        self.state = state

    def __enter__(self) -> sqlite3.Connection:
        self.state._lock.acquire()
        self.state._db.execute("BEGIN IMMEDIATE")
        return self.state._db

    def __exit__(self, kind, value, tb) -> None:
        try:
            self.state._db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.state._lock.release()


def _cell(row: sqlite3.Row) -> dict[str, Any]:
    cell = dict(row)
    cell["probabilities"] = json.loads(cell["probabilities"]) if cell["probabilities"] else None
    return cell
