"""Linear SVMs on the embedding: standardised inputs, one-vs-rest linear SVM, calibrated probabilities.

The paper used ``StandardScaler`` then ``SVC(kernel="linear", probability=True)``; ``probability=True`` is
deprecated in scikit-learn 1.9, and its equivalent ``CalibratedClassifierCV(SVC(kernel="linear"),
ensemble=False)`` is kept as ``solver="libsvm"``. ``solver="liblinear"`` (``LinearSVC``, the same linear SVM
objective up to a squared hinge, one-vs-rest, same sigmoid calibration) with ``C = 0.1`` is the default:
on trained embeddings (WBCAtt official split, an encoder pretrained from scratch) it scores cell type
0.942 macro-F1 where hinge-loss SGD reaches 0.910, chromatin density 0.832 vs 0.692, cytoplasm colour
0.699 vs 0.620 — SGD does not converge on these ill-conditioned standardised 1280-d inputs — and C = 0.1
matches C = 1 (0.946, 0.823, 0.699) at 3–5x less CPU (``benchmarks/RESULTS.md``, "Which SVM").
``solver="sgd"`` stays for stores of hundreds of thousands of rows, where it is the only one that scales: it
streams the rows (a store's one part at a time) through ``partial_fit`` and holds no copy of them
(:mod:`.streaming`).
The predicted class is by construction the argmax of :meth:`EmbeddingSVM.predict_proba`.

A saved model is a folder: ``model.skops`` (the fitted scikit-learn pipeline, skops format, no pickle)
and ``model.json`` (column, classes, solver, the store fingerprint it was trained on).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ...config import atomic_write_bytes, atomic_write_text
from ...errors import InputError, MismatchError
from ...store.matrix import BLOCK_ROWS, StoreRows, as_embeddings, row_blocks, row_groups
from ..common.labels import check_trainable
from .meta import DEFAULT_SOLVER, FORMAT, META_FILE, MODEL_FILE, SOLVERS, Solver, check_fingerprint, read_meta

DEFAULT_C = 0.1  # equal macro-F1 to C = 1 on trained embeddings, 3-5x faster (see the module docstring)
# How figures and reports name each solver (a reader knows "linear SVM", not "sgd").
SOLVER_WORDS = {"sgd": "hinge-loss SGD", "libsvm": "libsvm, as in the paper", "liblinear": "liblinear"}
SGD_EPOCHS = 50  # for fit(); the streamed path (.streaming) calls partial_fit a fixed number of passes
# Every type a saved pipeline may contain; anything else in a model file is refused before loading.
_TRUSTED = (
    "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration", "sklearn.svm._classes.SVC", "sklearn.svm._classes.LinearSVC",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.model_selection._split.StratifiedKFold", "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._label.LabelBinarizer", "sklearn.frozen._frozen.FrozenEstimator",
)
# Below this many images in the smallest class, held-out calibration folds hold one or two images per class
# and the fitted sigmoids are noise (argmax can fall below chance); the sigmoids are then fitted on the
# training scores instead (macro-F1 on WBCAtt cell type, pretrained store: 0.546 -> 0.651 at 2 per class,
# 0.495 -> 0.617 at 3, 0.704 -> 0.724 at 5, 0.729 -> 0.743 at 10; 5 seeded draws each).
CV_CALIBRATION_MIN = 10


class EmbeddingSVM(ClassifierMixin, BaseEstimator):
    """Standardise → linear SVM (one-vs-rest scores) → sigmoid calibration; string class labels.

    ``calibration_folds`` stratified folds fit the calibration (fewer when a class is smaller); with fewer
    than ``CV_CALIBRATION_MIN`` images in some class the sigmoids are fitted on the training scores.
    """

    def __init__(self, solver: Solver = DEFAULT_SOLVER, C: float = DEFAULT_C, calibration_folds: int = 5,
                 max_iter: int = 5000, random_state: int = 0):
        self.solver = solver
        self.C = C
        self.calibration_folds = calibration_folds
        self.max_iter = max_iter
        self.random_state = random_state

    def _base(self, n_samples: int):
        from sklearn.linear_model import SGDClassifier
        from sklearn.svm import SVC, LinearSVC

        if self.solver == "libsvm":
            base = SVC(kernel="linear", C=self.C, decision_function_shape="ovr")
        elif self.solver == "liblinear":
            base = LinearSVC(C=self.C, max_iter=self.max_iter, random_state=self.random_state)
        elif self.solver == "sgd":  # hinge loss = linear SVM; alpha = 1 / (C · n) is the same objective
            base = SGDClassifier(loss="hinge", alpha=1.0 / (self.C * n_samples), max_iter=SGD_EPOCHS,
                                 tol=1e-3, random_state=self.random_state)
        else:
            raise InputError(f"solver {self.solver!r} is not one of {', '.join(SOLVERS)}")
        return base

    def _fit_pipeline(self, X: np.ndarray, y: np.ndarray):
        """Scaler + calibrated SVM: cross-validated sigmoids, or training-score sigmoids for tiny classes.

        The scaler is fitted and applied block by block, so the standardised float32 matrix is the one copy
        of ``X`` made (float16 rows included); ``sgd`` streams instead and makes none (:mod:`.streaming`).
        """
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        from .streaming import calibrate_frozen, fit_streamed

        smallest = min(Counter(y.tolist()).values())
        if self.solver == "sgd":
            return fit_streamed(self._base, X, y, folds=self.calibration_folds, seed=self.random_state,
                                held_out=smallest >= CV_CALIBRATION_MIN)
        X = np.asarray(X)
        scale = StandardScaler()
        for _, block in row_blocks(X):
            scale.partial_fit(block)
        scaled = np.empty(X.shape, np.float32)
        for start, block in row_blocks(X):
            scaled[start:start + len(block)] = scale.transform(block)
        if smallest >= CV_CALIBRATION_MIN:
            folds = StratifiedKFold(int(min(self.calibration_folds, smallest)), shuffle=True,
                                    random_state=self.random_state)
            calibrated = CalibratedClassifierCV(self._base(len(y)), method="sigmoid", cv=folds, ensemble=False)
            return Pipeline([("scale", scale), ("svm", calibrated.fit(scaled, y))])
        calibrated = calibrate_frozen(self._base(len(y)).fit(scaled, y), scaled, y)
        return Pipeline([("scale", scale), ("svm", calibrated)])

    def fit(self, X: np.ndarray | StoreRows, y: Sequence[str], column: str = "label") -> EmbeddingSVM:
        """Fit on embeddings ``X`` (N, D), or a store's rows read part by part, and string labels ``y``."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        if not isinstance(X, StoreRows) or len(X) <= BLOCK_ROWS:  # a few rows: read at once, not per pass
            X = np.asarray(X)  # checked block by block: a float16 matrix is never converted whole
        y = np.asarray([str(v) for v in y])
        if len(y) != len(X):
            raise InputError(f"column {column!r}: {len(y)} labels for {len(X)} embeddings")
        check_trainable(y, column)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline = self._fit_pipeline(X, y)
        self._set_fitted(pipeline)
        return self

    def _set_fitted(self, pipeline) -> None:
        self.pipeline_ = pipeline
        self.classes_ = np.asarray([str(c) for c in pipeline.classes_])
        self.n_features_in_ = int(pipeline.named_steps["scale"].n_features_in_)

    def _checked(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise InputError("EmbeddingSVM is not fitted yet")
        X = as_embeddings(X)
        if X.shape[1] != self.n_features_in_:
            raise MismatchError(f"embeddings have {X.shape[1]} dimensions, the SVM was trained on "
                                f"{self.n_features_in_}")
        return X

    def predict_proba(self, X: np.ndarray | StoreRows) -> np.ndarray:
        """Calibrated class probabilities (N, K), columns in the order of ``classes_``; rows sum to 1.

        Computed in row blocks (a store's rows part by part): memory beyond ``X`` stays small however many
        rows there are."""
        if not hasattr(self, "pipeline_"):
            raise InputError("EmbeddingSVM is not fitted yet")
        proba = np.empty((len(X), len(self.classes_))) if np.ndim(X) == 2 else None
        for positions, block in row_groups(X):
            proba[positions] = self.pipeline_.predict_proba(self._checked(block))
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray | StoreRows) -> np.ndarray:
        """Class names: always the argmax of :meth:`predict_proba`."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw SVM scores on standardised inputs (one-vs-rest shape)."""
        X = self._checked(X)
        scaled = self.pipeline_.named_steps["scale"].transform(X)
        return self._svm().decision_function(scaled)

    def _svm(self):
        """The fitted linear SVM inside the calibration (unwrapped when it was frozen for tiny classes)."""
        from sklearn.frozen import FrozenEstimator

        svm = self.pipeline_.named_steps["svm"].calibrated_classifiers_[0].estimator
        return svm.estimator if isinstance(svm, FrozenEstimator) else svm

    def linear_model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
        """The fitted SVM as arrays ``(mean, scale, coef, intercept, pairwise)``: its scores are
        ``((x - mean) / scale) @ coef.T + intercept``, one row per class (one-vs-rest), or per class pair
        (0, 1), (0, 2), ... (1, 2), ... when ``pairwise`` (libsvm's one-vs-one with more than two classes)."""
        from sklearn.svm import SVC

        if not hasattr(self, "pipeline_"):
            raise InputError("EmbeddingSVM is not fitted yet")
        scaler, svm = self.pipeline_.named_steps["scale"], self._svm()
        return (np.asarray(scaler.mean_), np.asarray(scaler.scale_), np.asarray(svm.coef_, np.float64),
                np.asarray(svm.intercept_, np.float64), isinstance(svm, SVC) and len(self.classes_) > 2)

    def save(self, folder: str | os.PathLike, *, fingerprint: str, column: str,
             extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.skops`` + ``model.json`` (fingerprint of the store the model was trained on)."""
        import sklearn
        import skops.io as sio

        if not hasattr(self, "pipeline_"):
            raise InputError("EmbeddingSVM is not fitted yet")
        folder = Path(folder)
        atomic_write_bytes(folder / MODEL_FILE, sio.dumps(self.pipeline_))
        meta = {"format": FORMAT, "column": column, "classes": self.classes_.tolist(), "solver": self.solver,
                "C": float(self.C), "calibration_folds": int(self.calibration_folds),
                "random_state": int(self.random_state), "dim": self.n_features_in_,
                "store_fingerprint": fingerprint, "sklearn_version": sklearn.__version__, **(extra or {})}
        atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
        return folder



def load_svm(folder: str | os.PathLike, fingerprint: str | None = None,
             where: str = "the store") -> tuple[EmbeddingSVM, dict[str, Any]]:
    """Load a saved SVM; with ``fingerprint``, refuse a model trained on another store."""
    import skops.io as sio

    meta = read_meta(folder)
    if fingerprint is not None:
        check_fingerprint(meta, fingerprint, where)
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise InputError(f"{folder}: {MODEL_FILE} is missing")
    try:
        untrusted = sio.get_untrusted_types(file=path)
        unexpected = sorted(set(untrusted) - set(_TRUSTED))
        if unexpected:
            raise InputError(f"{path}: refusing to load unexpected type(s) {', '.join(unexpected[:3])}")
        pipeline = sio.load(path, trusted=list(untrusted))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - skops raises many types for a damaged file
        raise InputError(f"{path}: cannot load model ({type(exc).__name__}: {str(exc)[:160]})") from None
    model = EmbeddingSVM(solver=meta["solver"], C=meta["C"], calibration_folds=meta["calibration_folds"],
                         random_state=meta["random_state"])
    model._set_fitted(pipeline)
    if model.classes_.tolist() != list(meta["classes"]):
        raise MismatchError(f"{folder}: {MODEL_FILE} classes do not match {META_FILE}")
    return model, meta
