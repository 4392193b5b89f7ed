"""The real labelling loop: query a batch, let an expert label it, teach, repeat; never lose a label.

A session is a folder bound to one embedding store: its encoder fingerprint and, for stores of format 2, its
``store_id`` (another store of the same encoder is refused), and every taught path must be in the store:

- ``session.json``: :class:`SessionConfig` (classes, batch, strategy, C, the store and its id);
- ``labels.csv``: every label taught so far, ``path,label``; the single source of truth, replaced
  atomically *before* anything else is written, so a crash at any point keeps every taught label;
- ``model.npz``: the fitted SVM (plain arrays, no pickle) and the hash of the ``labels.csv`` it was
  trained on: a stale model (crash after the labels were saved) is simply retrained;
- ``history.json``: one entry per teach (new and relabelled counts, cross-validated macro-F1, the hash of
  the ``labels.csv`` it produced); a teach killed after saving its labels is recorded when the session is
  next opened (``"recovered": true``);
- ``to_label.csv``: the current query, ``path,prediction,probability,uncertainty,label``;
- ``standardiser.npz``: the feature mean and scale of the store when the session started, so a store that
  grows later (the review app appends uploaded cells) never shifts the features a saved model reads.

Labels are taught from a filled CSV (:meth:`LabellingSession.teach`) or from a mapping
(:meth:`LabellingSession.teach_labels`, used by ``hemoembed serve``); both run the same validation and
retraining. A class can be added after the start (:meth:`LabellingSession.add_class`): it is never
predicted until it has labels.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import atomic_write_bytes, atomic_write_text, load_config, save_config
from ...errors import InputError, MismatchError
from .estimator import IncrementalLinearSVM, PoolRows, pool_standardiser, rows_in_front, standardise
from .strategies import STRATEGIES, initial_indices, query_strategy

CONFIG, LABELS, MODEL, HISTORY, QUERY = "session.json", "labels.csv", "model.npz", "history.json", "to_label.csv"
STANDARDISER = "standardiser.npz"


@dataclass
class SessionConfig:
    """Settings fixed when a session is created."""

    store: str = ""
    store_fingerprint: str = ""
    store_id: str = ""  # the store's own id (format 2 stores); "" for sessions and stores from before
    classes: list[str] = field(default_factory=list)
    column: str = "label"
    batch: int = 90
    strategy: str = "uncertainty"
    C: float = 1.0
    cv: int = 5
    seed: int = 0


class LabellingSession:
    """One session folder over one store: ``paths``, ``fingerprint``, and its rows read with
    ``rows_embeddings(rows)`` and ``iter_embeddings()`` (an embedding store; the review app's pool of two), or
    with ``embeddings()`` alone (one matrix)."""

    def __init__(self, directory: Path, store: Any, config: SessionConfig) -> None:
        self.directory = directory
        self.store = store
        self.config = config
        self._index = {p: i for i, p in enumerate(store.paths)}
        self._X: np.ndarray | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, directory: str | Path, store: Any, new: SessionConfig | None = None) -> LabellingSession:
        """Open the session in ``directory``; create it from ``new`` when there is none yet."""
        directory = Path(directory)
        if (directory / CONFIG).is_file():
            config = load_config(SessionConfig, directory / CONFIG)
            if config.store_fingerprint != store.fingerprint:
                raise MismatchError(f"{directory}: session was started on store fingerprint "
                                    f"{config.store_fingerprint[:16]}…, this store has {store.fingerprint[:16]}…")
            session = cls(directory, store, config)
            session._check_bound()
            session._recover_history()
            return session
        if new is None or not new.classes:
            raise InputError(f"{directory}: no labelling session here yet; start one with --classes A,B,C")
        if len(set(new.classes)) != len(new.classes) or len(new.classes) < 2 or any(not c for c in new.classes):
            raise InputError(f"--classes {','.join(new.classes)}: need at least 2 distinct, non-empty class names")
        if new.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {new.strategy!r} (choose from {', '.join(STRATEGIES)})")
        if int(new.batch) < 1 or not (np.isfinite(new.C) and new.C > 0) or int(new.cv) < 0:
            raise InputError(f"session batch {new.batch} must be at least 1, C {new.C} positive, cv {new.cv} >= 0")
        new.store_fingerprint, new.store_id = store.fingerprint, _store_id(store)
        save_config(new, directory / CONFIG)
        session = cls(directory, store, new)
        session.standardiser()  # fixed now, over the store as it is at the start
        return session

    def check_settings(self, asked: dict[str, Any]) -> None:
        """Refuse an option (a :class:`SessionConfig` field and the value asked for) that differs from the
        session's own rather than ignore it: a session keeps the settings it was started with."""
        for name, value in asked.items():
            mine = getattr(self.config, name)
            if (list(value) if name == "classes" else value) != mine:
                raise InputError(f"--{name} {_as_option(value)} differs from the {_as_option(mine)} that the "
                                 f"session in {self.directory} was started with; leave the option out, or start "
                                 "another session in another folder")

    def _check_bound(self) -> None:
        """Refuse a store other than the session's (same encoder, other images); bind an old session."""
        here = _store_id(self.store)
        if self.config.store_id and here and here != self.config.store_id:
            raise MismatchError(f"{self.directory}: session belongs to store {self.config.store} (id "
                                f"{self.config.store_id[:12]}), not to {_store_name(self.store)} (id {here[:12]}), "
                                "although the same encoder built both; open it with its own store")
        foreign = [p for p in self.labels() if p not in self._index]
        if foreign:
            raise MismatchError(f"{self.directory}: {len(foreign)} taught path(s) are not in "
                                f"{_store_name(self.store)}, e.g. {foreign[0]!r}: the session belongs to store "
                                f"{self.config.store}; open it with that store")
        if here and not self.config.store_id:  # a session from before store ids: bind it now
            self.config.store_id = here
            save_config(self.config, self.directory / CONFIG)

    def _recover_history(self) -> None:
        """Record a teach whose labels were saved but that was killed before ``history.json`` was written."""
        path = self.directory / LABELS
        labels = self.labels()
        if not labels:
            return
        history = self.history()
        last = history[-1] if history else {}
        digest = self._labels_hash(labels)
        if last.get("labels_sha256", digest if last.get("n_labels") == len(labels) else None) == digest:
            return
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime)),
                 "file": "(a teach interrupted after saving its labels)",
                 "added": len(labels) - last.get("n_labels", 0), "relabelled": None, "n_labels": len(labels),
                 "cv_macro_f1": None, "recovered": True, "labels_sha256": digest}
        atomic_write_text(self.directory / HISTORY, json.dumps(history + [event], indent=2) + "\n")

    # ------------------------------------------------------------------ labels
    def labels(self) -> dict[str, str]:
        """Every label taught so far (path → class), in teaching order."""
        from ...data.manifest import read_csv_rows

        path = self.directory / LABELS
        if not path.is_file():
            return {}
        header, rows = read_csv_rows(path)
        return {row[0]: row[1] for row in rows}

    def _labels_text(self, labels: dict[str, str]) -> str:
        from ...config import csv_text

        return csv_text([["path", self.config.column], *([p, c] for p, c in labels.items())])

    def read_labelled_file(self, csv_path: str | Path) -> dict[str, str]:
        """Validate a filled ``to_label.csv`` completely (nothing is taught when any row is wrong)."""
        from ...data.manifest import label_value, read_csv_rows

        header, rows = read_csv_rows(csv_path)
        column = self.config.column
        for needed in ("path", column):
            if needed not in header:
                raise InputError(f"{csv_path}: no {needed!r} column (columns: {', '.join(header)})")
        if not rows:
            raise InputError(f"{csv_path}: no rows to teach")
        p_col, l_col = header.index("path"), header.index(column)
        out: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            path, label = row[p_col], label_value(row[l_col])
            self._check_label(path, label, f"{csv_path}:{line}")
            if out.get(path, label) != label:
                raise InputError(f"{csv_path}:{line}: {path} is labelled both {out[path]!r} and {label!r}")
            out[path] = label
        return out

    def _check_label(self, path: str, label: str, where: str) -> None:
        """One label to teach: a stored path and one of the session's classes."""
        if path not in self._index:
            raise InputError(f"{where}: path {path!r} is not in the store {self.config.store}")
        if not label:
            raise InputError(f"{where}: empty {self.config.column!r} for {path} (fill it in or delete the row); "
                             "nothing was taught")
        if label not in self.config.classes:
            raise InputError(f"{where}: label {label!r} for {path} is not one of the session's "
                             f"classes ({', '.join(self.config.classes)}); nothing was taught")

    def teach(self, csv_path: str | Path) -> dict[str, Any]:
        """Ingest a labelled file all-or-nothing, save the labels first, then retrain and record."""
        return self.teach_labels(self.read_labelled_file(csv_path), str(csv_path))

    def teach_labels(self, new: dict[str, str], source: str = "labels") -> dict[str, Any]:
        """Teach ``path → class`` labels all-or-nothing (validated like a filled CSV); ``source`` is recorded.

        The labels file is replaced first, so a crash during retraining loses no label."""
        for path, label in new.items():
            self._check_label(str(path).strip(), str(label).strip(), source)
        new = {str(p).strip(): str(c).strip() for p, c in new.items()}
        labels = self.labels()
        relabelled = sum(1 for p, c in new.items() if p in labels and labels[p] != c)
        added = sum(1 for p in new if p not in labels)
        labels.update(new)
        atomic_write_text(self.directory / LABELS, self._labels_text(labels))  # from here on nothing is lost
        model = self._retrain(labels)
        event = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "file": source, "added": added,
                 "relabelled": relabelled, "n_labels": len(labels), "cv_macro_f1": model["cv_macro_f1"],
                 "labels_sha256": self._labels_hash(labels)}
        history = self.history() + [event]
        atomic_write_text(self.directory / HISTORY, json.dumps(history, indent=2) + "\n")
        return event

    def add_class(self, name: str) -> None:
        """Define a new class after the start (saved at once); it is predicted once it has labels."""
        name = str(name).strip()
        if not name or "," in name or name != " ".join(name.split()) or not name.isprintable():
            raise InputError(f"new class {name!r}: a class name must be non-empty and printable, without commas "
                             "or leading/trailing/double spaces")
        same = [c for c in self.config.classes if c.casefold() == name.casefold()]
        if same:  # "Neutrophil" beside "neutrophil" would split one class in two
            shown = "" if same[0] == name else f" as {same[0]!r}"
            raise InputError(f"class {name!r} already exists{shown} ({', '.join(self.config.classes)})")
        self.config.classes = [*self.config.classes, name]
        save_config(self.config, self.directory / CONFIG)

    def history(self) -> list[dict[str, Any]]:
        path = self.directory / HISTORY
        return json.loads(path.read_text()) if path.is_file() else []

    # ------------------------------------------------------------------ model
    def _features(self) -> np.ndarray:
        """Every row of the store, standardised: one float32 matrix of the session's own, standardised in
        place (the store's cached matrix is never read beside it)."""
        if self._X is None:
            X = self._raw()
            self._X = standardise(X, *self.standardiser(X), copy=False)
        return self._X

    def _raw(self) -> np.ndarray:
        """Every row of the store as a float32 matrix of the session's own: read part by part
        (``rows_embeddings``) when the store can, else copied from its ``embeddings()`` matrix."""
        read = getattr(self.store, "rows_embeddings", None)
        if read is None:
            return np.array(self.store.embeddings(), dtype=np.float32)
        return read(np.arange(len(self._index)))

    def _blocks(self) -> Iterator[np.ndarray]:
        """The store's rows in order, a block at a time, not copied: its ``iter_embeddings()`` stream (the
        review app's pool: the reference rows, then the uploaded ones), else its ``embeddings()`` matrix."""
        stream = getattr(self.store, "iter_embeddings", None)
        return iter([self.store.embeddings()]) if stream is None else (block for _, block in stream())

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        """Standardised features of some rows (a teach never copies the whole matrix): read from the store
        (``rows_embeddings``, else its ``embeddings()`` matrix), or from :meth:`_features` once built."""
        if self._X is None:
            read = getattr(self.store, "rows_embeddings", None)
            raw = read(rows) if read is not None else self.store.embeddings()[rows]
            return standardise(raw, *self.standardiser(), copy=False)
        return self._features()[rows]

    def standardiser(self, X: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Feature mean and scale, fixed when first needed (the whole store then, read a block at a time, or
        its raw rows ``X``) and kept in the session."""
        path = self.directory / STANDARDISER
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                return data["mean"], data["scale"]
        mean, scale = pool_standardiser(self._blocks if X is None else X)  # read, not written
        buffer = io.BytesIO()
        np.savez(buffer, mean=mean, scale=scale)
        atomic_write_bytes(path, buffer.getvalue())
        return mean, scale

    def predict_proba(self, vectors: np.ndarray, current: dict[str, Any] | None = None
                      ) -> tuple[list[str], np.ndarray] | None:
        """Class probabilities of raw embedding ``vectors`` (stored or not) from ``current`` (a
        :meth:`model` result, loaded again when None): (classes, (N, K) probabilities), or None untaught."""
        current = current or self.model()
        if current is None:
            return None
        model = current["model"]
        proba = model.predict_proba(standardise(np.asarray(vectors, np.float32), *self.standardiser()))
        return [str(c) for c in model.classes_], proba

    def _labels_hash(self, labels: dict[str, str]) -> str:
        return hashlib.sha256(self._labels_text(labels).encode()).hexdigest()

    def _retrain(self, labels: dict[str, str]) -> dict[str, Any]:
        """Fit on every label, estimate macro-F1 by stratified cross-validation, save ``model.npz``."""
        from ..common.metrics import macro_f1
        from ..common.splits import cv_splits

        X = self._rows(np.array([self._index[p] for p in labels], dtype=np.int64))  # the labelled rows only
        y = np.array(list(labels.values()))
        classes = self.config.classes
        model = IncrementalLinearSVM(classes=classes, C=self.config.C).fit(X, y)
        scores = []
        if len(set(y)) >= 2:
            for train, test in cv_splits(y, self.config.cv, seed=self.config.seed):
                fold = IncrementalLinearSVM(classes=classes, C=self.config.C).fit(X[train], y[train])
                seen = sorted(set(y))
                scores.append(macro_f1(y[test], fold.predict(X[test]), seen))
        cv = float(np.mean(scores)) if scores else None
        buffer = io.BytesIO()
        np.savez(buffer, **model.state(), labels_sha256=np.asarray(self._labels_hash(labels)),
                 cv_macro_f1=np.asarray(np.nan if cv is None else cv), cv_folds=np.asarray(len(scores)))
        atomic_write_bytes(self.directory / MODEL, buffer.getvalue())
        return {"model": model, "cv_macro_f1": cv, "cv_folds": len(scores)}

    def model(self) -> dict[str, Any] | None:
        """The current model (retrained when ``model.npz`` is missing or older than ``labels.csv``)."""
        labels = self.labels()
        if not labels:
            return None
        path = self.directory / MODEL
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                state = {k: data[k] for k in data.files}
            if str(state["labels_sha256"]) == self._labels_hash(labels):
                cv = float(state["cv_macro_f1"])
                return {"model": IncrementalLinearSVM.from_state(state, C=self.config.C),
                        "cv_macro_f1": None if np.isnan(cv) else cv, "cv_folds": int(state["cv_folds"])}
        return self._retrain(labels)

    # ------------------------------------------------------------------ query / status
    def query(self, batch: int | None = None, overwrite: bool = False) -> Path:
        """Write ``to_label.csv``: the next ``batch`` unlabelled images, most informative first."""
        from ...config import csv_text

        target = self.directory / QUERY
        pending = self._pending_filled(target)
        if pending and not overwrite:
            raise InputError(f"{target}: {pending} filled label(s) not taught yet; run --teach {target} first "
                             "(or --overwrite to discard them)")
        batch = int(self.config.batch if batch is None else batch)
        if batch < 1:
            raise InputError(f"batch {batch}: query at least 1 image")
        labels = self.labels()
        pool = np.array([i for p, i in self._index.items() if p not in labels], dtype=np.int64)
        if len(pool) == 0:
            raise InputError(f"{self.directory}: every image of the store is labelled; nothing to query")
        features = self._features()
        current = self.model()
        take = min(batch, len(pool))
        paths = self.store.paths  # once: a store builds the list on each call (1M strings)
        if current is None or len(set(labels.values())) < 2:
            # cold start: cover the space (k-means over the unlabelled rows, moved to the front of the
            # session's matrix for it: never a copy of them)
            with rows_in_front(features, pool) as unlabelled:
                chosen = initial_indices(unlabelled, None, take, "kmeans", self.config.seed)
            rows = [[paths[pool[i]], "", "", "", ""] for i in chosen]
        else:
            model = current["model"]
            X = PoolRows(features, pool)  # the unlabelled rows, not copied (scored a block at a time)
            chosen, proba = self.rank(model, X, take, len(labels))
            rows = [[paths[pool[i]], model.classes_[p.argmax()], f"{p.max():.4f}", f"{1.0 - p.max():.4f}",
                     ""] for i, p in zip(chosen, proba)]
        atomic_write_text(target, csv_text([["path", "prediction", "probability", "uncertainty",
                                             self.config.column], *rows]))
        return target

    def rank(self, model: Any, X: np.ndarray, n: int | None = None, n_labels: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
        """The rows of ``X`` to label next, most informative first, as :meth:`query` picks them: the
        session's strategy (modAL) chooses ``n`` rows (all by default) with ``model`` (anything with
        ``predict_proba``), listed by uncertainty (1 − max p), highest first. Returns (row indices, their
        probabilities). ``hemoembed serve`` orders its "needs review" list with this."""
        if len(X) == 0:
            return np.zeros(0, np.int64), np.zeros((0, 0))
        take = len(X) if n is None else min(n, len(X))
        rng = np.random.default_rng([self.config.seed, n_labels])
        np.random.seed(self.config.seed)
        chosen, _ = query_strategy(self.config.strategy, rng)(model, X, n_instances=take)
        chosen = np.asarray(chosen, np.int64)
        proba = np.asarray(model.predict_proba(X[chosen]))
        order = np.argsort(-(1.0 - proba.max(axis=1)), kind="stable")
        return chosen[order], proba[order]

    def _pending_filled(self, target: Path) -> int:
        """Rows of an existing ``to_label.csv`` with a label that was never taught."""
        if not target.is_file():
            return 0
        from ...data.manifest import read_csv_rows

        header, rows = read_csv_rows(target)
        if self.config.column not in header:
            return 0
        labels = self.labels()
        p, c = header.index("path"), header.index(self.config.column)
        return sum(1 for row in rows if row[c].strip() and labels.get(row[p].strip()) != row[c].strip())

    def status(self) -> dict[str, Any]:
        """Progress: labels per class, images left, teach rounds and the cross-validated macro-F1."""
        labels = self.labels()
        current = self.model()
        counts = Counter(labels.values())
        return {"session": str(self.directory), "store": self.config.store, "n_images": len(self._index),
                "n_labelled": len(labels), "n_unlabelled": len(self._index) - len(labels),
                "per_class": {c: counts.get(c, 0) for c in self.config.classes},
                "teach_rounds": len(self.history()),
                "cv_macro_f1": None if current is None else current["cv_macro_f1"],
                "cv_folds": 0 if current is None else current["cv_folds"],
                "pending_query": str(self.directory / QUERY) if (self.directory / QUERY).is_file() else None}


def _as_option(value: Any) -> str:
    """A setting as it is written on the command line: classes comma-separated, 3.0 as 3."""
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _store_id(store: Any) -> str:
    header = getattr(store, "header", None)
    return str(getattr(header, "store_id", "") or "")


def _store_name(store: Any) -> str:
    return str(getattr(store, "directory", "this store"))
