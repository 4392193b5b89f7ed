"""Model versions: the ``--model`` SVM is version 0; retraining runs the labelling session.

Retraining is the active-learning loop of ``hemoembed active-learn --session`` with the same code: one
:class:`~hemoembed.tasks.active.LabellingSession` lives in ``DATA/session`` over a pool that holds the
reference store's rows and the uploaded cells (:class:`ReviewPool`); its labels are the reference labels
plus the reviewers' corrections, taught with ``teach_labels`` (labels file first, then the model, then the
history), and a version's predictions come from ``LabellingSession.predict_proba``. New classes are added
with ``LabellingSession.add_class``.

The session keeps only its latest model, so each version's model is also saved on its own
(``DATA/versions/vN.npz``, plain arrays) before the version is recorded as ready: after a crash between a
retrain's teach and its record, the server restarts on the last *recorded* version's model, not on the
unrecorded one the session already holds (that retrain is then run again).
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import lib

UPLOAD_PREFIX = "upload:"  # pool keys of uploaded cells (reference keys are the store's relative paths)


@dataclass
class Classifier:
    """What serves predictions: a version number, its classes and a probability function on embeddings."""

    version: int
    classes: list[str]
    proba: Callable[[np.ndarray], np.ndarray]
    decision: Callable[[], object]  # → gradcam.LinearDecision of this version

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(N, K) probabilities, columns in the order of ``classes`` (what modAL's query strategies read)."""
        return np.asarray(self.proba(np.asarray(vectors, np.float32)), np.float64)

    def predict(self, vectors: np.ndarray) -> list[tuple[str, float, float, dict[str, float]]]:
        """Per vector: (label, confidence, uncertainty = 1 − max p as modAL ranks it, {class: p})."""
        if len(vectors) == 0:
            return []
        proba = self.predict_proba(vectors)
        out = []
        for row in proba:
            best = int(row.argmax())
            out.append((self.classes[best], float(row[best]), float(1.0 - row[best]),
                        {c: round(float(p), 6) for c, p in zip(self.classes, row)}))
        return out


def initial_classifier(reference) -> Classifier:
    """Version 0: the SVM given with ``--model`` (checked against the store's fingerprint)."""
    svm, _ = lib.load_svm(reference.svm_dir, reference.fingerprint, where=f"store {reference.store_dir}")
    return Classifier(0, [str(c) for c in svm.classes_], svm.predict_proba,
                      lambda: lib.LinearDecision.from_svm(reference.svm_dir, reference.fingerprint))


class ReviewPool:
    """The session's store: reference rows, then uploaded cells (keys ``upload:<image>``), one encoder.

    Rows are read from each store as the session asks (a block at a time for its standardiser, the labelled
    rows for a teach), never the two matrices concatenated: each store reads its own matrix when it has it,
    else its parts."""

    def __init__(self, reference_store, query_store) -> None:
        self.fingerprint = reference_store.fingerprint
        self.directory = reference_store.directory
        self._parts = (reference_store, query_store)
        self._first_upload = len(reference_store)  # pool row of the first uploaded cell
        self.paths = list(reference_store.paths) + [UPLOAD_PREFIX + p for p in query_store.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def iter_embeddings(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first pool row, block)``: the reference store's blocks, then the query store's."""
        for offset, store in zip((0, self._first_upload), self._parts):
            for start, block in store.iter_embeddings():
                yield offset + start, block

    def rows_embeddings(self, rows: Sequence[int]) -> np.ndarray:
        """float32 embeddings of pool rows ``rows``: each store reads its own."""
        rows = np.asarray(rows, np.int64).reshape(-1)
        uploaded = rows >= self._first_upload
        out = np.empty((len(rows), self._parts[0].dim), np.float32)
        for store, chosen, offset in zip(self._parts, (~uploaded, uploaded), (0, self._first_upload)):
            if chosen.any():
                out[chosen] = store.rows_embeddings(rows[chosen] - offset)
        return out


class Versions:
    """The labelling session behind retraining, and the classifier of each version."""

    def __init__(self, directory: Path, reference, query_store, classes: list[str], cv: int) -> None:
        self.directory = Path(directory)
        self.reference = reference
        self.query_store = query_store
        new = lib.SessionConfig(store=str(reference.store_dir), classes=list(classes), column=reference.column,
                                cv=cv)
        self.session = lib.LabellingSession.open(self.directory, self._pool(), new)

    def _pool(self) -> ReviewPool:
        self.query_store.refresh()
        return ReviewPool(self.reference.store, self.query_store)

    def add_class(self, name: str) -> None:
        """Validate and save a new class in the session (raises InputError for a bad or known name)."""
        self.session.add_class(name)

    def sync_classes(self, classes: list[str]) -> None:
        for name in classes:
            if name not in self.session.config.classes:
                self.session.add_class(name)

    def review_order(self, classifier: Classifier, vectors: np.ndarray) -> np.ndarray:
        """Indices of ``vectors`` in "needs review" order: the session's query (``active-learn --session``)
        with ``classifier``, most informative first."""
        return self.session.rank(classifier, vectors)[0]

    def teach(self, corrections: dict[str, str], source: str) -> dict:
        """Teach the reference labels plus ``corrections`` (image → label) and retrain; returns the event."""
        self.session = lib.LabellingSession.open(self.directory, self._pool())  # sees the cells uploaded since
        labels = dict(self.reference.labels)
        labels.update({UPLOAD_PREFIX + image: label for image, label in corrections.items()})
        return self.session.teach_labels(labels, source)

    def save(self, version: int) -> Classifier | None:
        """Save the session's current model as version ``version`` and return its classifier (None before the
        session's first teach)."""
        current = self.session.model()
        if current is None:
            return None
        mean, scale = self.session.standardiser()
        buffer = io.BytesIO()
        np.savez(buffer, **current["model"].state(), mean=mean, scale=scale)
        lib.atomic_write_bytes(self._file(version), buffer.getvalue())
        return self._classifier(version, current["model"], mean, scale)

    def load(self, version: int) -> Classifier | None:
        """Version ``version``'s saved model; a data folder from before versions were saved has only the
        session's latest model, which is then used (None before the session's first teach)."""
        path = self._file(version)
        if not path.is_file():
            current = self.session.model()
            return None if current is None else self._classifier(version, current["model"],
                                                                 *self.session.standardiser())
        with np.load(path, allow_pickle=False) as data:
            state = {k: data[k] for k in data.files}
        model = lib.IncrementalLinearSVM.from_state(state, C=self.session.config.C)
        return self._classifier(version, model, state["mean"], state["scale"])

    def _file(self, version: int) -> Path:
        return self.directory.parent / "versions" / f"v{int(version)}.npz"

    def _classifier(self, version: int, model, mean: np.ndarray, scale: np.ndarray) -> Classifier:
        classes = [str(c) for c in model.classes_]
        return Classifier(version, classes, lambda X: self.session.predict_proba(X, {"model": model})[1],
                          lambda: lib.LinearDecision.from_pairs(classes, model.pairs_, model.pair_coef_,
                                                                model.pair_intercept_, mean, scale))
