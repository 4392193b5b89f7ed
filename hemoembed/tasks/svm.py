"""Linear SVMs on the embedding: standardised inputs, one-vs-rest linear SVM, calibrated probabilities.

The paper used ``StandardScaler`` then ``SVC(kernel="linear", probability=True)``; ``probability=True`` is
deprecated in scikit-learn 1.9, and its equivalent ``CalibratedClassifierCV(SVC(kernel="linear"),
ensemble=False)`` is kept as ``solver="libsvm"``. ``solver="sgd"`` (hinge-loss ``SGDClassifier``, the
same linear SVM objective, one-vs-rest, same sigmoid calibration) is the default: on real embeddings it
fits 20-100x faster than libsvm or liblinear at equal or better accuracy (``benchmarks/svm_solvers.py``,
``benchmarks/RESULTS.md``). ``solver="liblinear"`` (``LinearSVC``) is kept for comparison. The predicted
class is by construction the argmax of :meth:`EmbeddingSVM.predict_proba`.

A saved model is a folder: ``model.skops`` (the fitted scikit-learn pipeline, skops format, no pickle)
and ``model.json`` (column, classes, solver, the store fingerprint it was trained on).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..config import atomic_write_bytes, atomic_write_text
from ..errors import InputError, MismatchError

Solver = Literal["sgd", "libsvm", "liblinear"]
SOLVERS: tuple[str, ...] = ("sgd", "libsvm", "liblinear")
DEFAULT_SOLVER: Solver = "sgd"
SGD_EPOCHS = 50  # at most; stops earlier when the loss improves by less than 1e-3 for 5 epochs
MODEL_FILE, META_FILE, FORMAT = "model.skops", "model.json", "hemoembed-svm/1"
# Every type a saved pipeline may contain; anything else in a model file is refused before loading.
_TRUSTED = (
    "sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
    "sklearn.calibration.CalibratedClassifierCV", "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration", "sklearn.svm._classes.SVC", "sklearn.svm._classes.LinearSVC",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.model_selection._split.StratifiedKFold", "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.preprocessing._label.LabelBinarizer",
)


def check_trainable(labels: Sequence[str], column: str, min_per_class: int = 2) -> None:
    """Refuse a column with fewer than two classes or a class with fewer than ``min_per_class`` images."""
    counts = Counter(map(str, labels))
    if len(counts) < 2:
        raise InputError(f"column {column!r}: needs at least 2 classes to train, found "
                         f"{', '.join(map(repr, counts)) or 'none'}")
    small = sorted((n, c) for c, n in counts.items() if n < min_per_class)
    if small:
        n, cls = small[0]
        raise InputError(f"column {column!r}: class {cls!r} has {n} labelled image{'s' * (n != 1)} for training; "
                         f"each class needs at least {min_per_class} (drop or merge the class)")


class EmbeddingSVM(ClassifierMixin, BaseEstimator):
    """Standardise → linear SVM (one-vs-rest scores) → sigmoid calibration; string class labels.

    ``calibration_folds`` stratified folds fit the calibration (fewer when a class is smaller).
    """

    def __init__(self, solver: Solver = DEFAULT_SOLVER, C: float = 1.0, calibration_folds: int = 5,
                 max_iter: int = 5000, random_state: int = 0):
        self.solver = solver
        self.C = C
        self.calibration_folds = calibration_folds
        self.max_iter = max_iter
        self.random_state = random_state

    def _pipeline(self, n_folds: int, n_samples: int):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.linear_model import SGDClassifier
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
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
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=self.random_state)
        return Pipeline([("scale", StandardScaler()),
                         ("svm", CalibratedClassifierCV(base, method="sigmoid", cv=folds, ensemble=False))])

    def fit(self, X: np.ndarray, y: Sequence[str], column: str = "label") -> EmbeddingSVM:
        """Fit on embeddings ``X`` (N, D) and string labels ``y``."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        X = _as_matrix(X)
        y = np.asarray([str(v) for v in y])
        if len(y) != len(X):
            raise InputError(f"column {column!r}: {len(y)} labels for {len(X)} embeddings")
        check_trainable(y, column)
        n_folds = int(max(2, min(self.calibration_folds, min(Counter(y).values()))))
        pipeline = self._pipeline(n_folds, len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(X, y)
        self._set_fitted(pipeline)
        return self

    def _set_fitted(self, pipeline) -> None:
        self.pipeline_ = pipeline
        self.classes_ = np.asarray([str(c) for c in pipeline.classes_])
        self.n_features_in_ = int(pipeline.named_steps["scale"].n_features_in_)

    def _checked(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "pipeline_"):
            raise InputError("EmbeddingSVM is not fitted yet")
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise MismatchError(f"embeddings have {X.shape[1]} dimensions, the SVM was trained on "
                                f"{self.n_features_in_}")
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (N, K), columns in the order of ``classes_``; rows sum to 1."""
        proba = self.pipeline_.predict_proba(self._checked(X))
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class names: always the argmax of :meth:`predict_proba`."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw SVM scores on standardised inputs (one-vs-rest shape)."""
        X = self._checked(X)
        scaled = self.pipeline_.named_steps["scale"].transform(X)
        return self.pipeline_.named_steps["svm"].calibrated_classifiers_[0].estimator.decision_function(scaled)

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


def _as_matrix(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) == 0:
        raise InputError(f"embeddings must be a non-empty (N, D) matrix, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("embeddings contain NaN or infinite values")
    return X


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``model.json`` of a saved SVM folder."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise InputError(f"{folder}: not a saved SVM (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: unreadable model metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: format {meta.get('format')!r} is not {FORMAT}")
    return meta


def check_fingerprint(meta: dict[str, Any], fingerprint: str, where: str) -> None:
    """Refuse a store (or encoder) whose fingerprint is not the one the model was trained on."""
    if meta["store_fingerprint"] != fingerprint:
        raise MismatchError(f"model for column {meta['column']!r} was trained on store fingerprint "
                            f"{meta['store_fingerprint'][:16]}…, but {where} has fingerprint {fingerprint[:16]}…; "
                            "refit the SVM on this store")


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


def model_folders(model_dir: str | os.PathLike) -> list[Path]:
    """A saved SVM folder, or a ``fit-svm`` output holding one sub-folder per column."""
    model_dir = Path(model_dir)
    if (model_dir / META_FILE).is_file():
        return [model_dir]
    found = sorted(p.parent for p in model_dir.glob(f"*/{META_FILE}")) if model_dir.is_dir() else []
    if not found:
        raise InputError(f"{model_dir}: no saved SVM here ({META_FILE} in the folder or its sub-folders)")
    return found


def prediction_table(folders: Sequence[Path], X: np.ndarray, keys: Sequence[str], fingerprint: str,
                     where: str) -> list[list[Any]]:
    """CSV rows (header first): per image and column the label, its probability, the runner-up and all
    class probabilities. Every model is checked against ``fingerprint`` before anything is predicted."""
    loaded = [load_svm(folder, fingerprint, where) for folder in folders]
    header: list[Any] = ["path"]
    blocks = []
    for model, meta in loaded:
        col = meta["column"]
        proba = model.predict_proba(X)
        first, second = top_two(proba, model.classes_)
        header += [col, f"{col}_probability", f"{col}_second"] + [f"{col}_p_{c}" for c in model.classes_]
        blocks.append((first, proba.max(axis=1), second, proba))
    rows = [header]
    for i, key in enumerate(keys):
        row: list[Any] = [key]
        for first, top, second, proba in blocks:
            row += [first[i], float(top[i]), second[i]] + [float(p) for p in proba[i]]
        rows.append(row)
    return rows


def top_two(proba: np.ndarray, classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """Most and second-most likely class per row (ties broken by class order, like argmax)."""
    order = np.argsort(-np.asarray(proba), axis=1, kind="stable")
    names = np.asarray(classes)
    second = names[order[:, 1]] if proba.shape[1] > 1 else names[order[:, 0]]
    return names[order[:, 0]].tolist(), second.tolist()


# ------------------------------------------------------------------------------------------- fit-svm run
@dataclass
class FitSVMConfig:
    """Settings of one ``hemoembed fit-svm`` run, saved as ``fit_svm_config.json`` next to its outputs."""

    store: str = ""
    store_fingerprint: str = ""
    labels: list[str] = field(default_factory=list)  # empty: the store's own metadata columns
    columns: list[str] = field(default_factory=list)
    key: str = "path"
    test: str = ""
    test_fraction: float = 0.1
    group_column: str = ""
    solver: str = DEFAULT_SOLVER
    C: list[float] = field(default_factory=lambda: [1.0])
    cv: int = 5
    support: list[str] = field(default_factory=list)
    repeats: int = 3
    n_bootstrap: int = 1000
    seed: int = 0


@dataclass
class Labelled:
    """Embeddings with aligned label columns and join keys; ``""`` means no label for that column."""

    X: np.ndarray
    columns: dict[str, list[str]]
    keys: list[str]

    def take(self, idx: np.ndarray) -> Labelled:
        return Labelled(self.X[idx], {c: [v[i] for i in idx] for c, v in self.columns.items()},
                        [self.keys[i] for i in idx])

    def rows_with(self, column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(embeddings, labels, keys) of the rows that have a value for ``column``."""
        values = np.asarray([str(v).strip() for v in self.columns[column]])
        keep = values != ""
        return self.X[keep], values[keep], [k for k, ok in zip(self.keys, keep) if ok]


def load_labelled(store, labels: Sequence[str], key: str, columns: Sequence[str] | None) -> Labelled:
    """Join label CSVs or class folders with the store (several are concatenated), or use its metadata."""
    if not labels:
        wanted = list(store.metadata_columns) if columns is None else list(columns)
        return Labelled(store.embeddings(), {c: [str(v) for v in store.column(c)] for c in wanted},
                        [str(v) for v in store.column(key)])
    parts = [join_labels(store, path, key, columns) for path in labels]
    names = list(parts[0][1])
    return Labelled(np.concatenate([p[0] for p in parts]), {c: [v for p in parts for v in p[1][c]] for c in names},
                    [k for p in parts for k in p[2]])


def join_labels(store, labels: str | Path, key: str = "path", columns: Sequence[str] | None = None):
    """``store.join`` on a CSV, or on a folder-per-class tree (column ``label`` = folder name)."""
    if not Path(labels).is_dir():
        return store.join(labels, key=key, columns=columns)
    import tempfile

    from ..data.manifest import scan_folder

    with tempfile.TemporaryDirectory() as tmp:
        scan_folder(Path(labels)).write_csv(Path(tmp) / "labels.csv")
        return store.join(Path(tmp) / "labels.csv", key=key, columns=columns)


def split_data(config: FitSVMConfig, store, data: Labelled) -> tuple[Labelled, Labelled]:
    """(train, test): the ``--test`` CSV (refusing overlap) or a stratified ``--test-fraction`` split."""
    from .support import stratified_test_split

    if config.test:
        test = load_labelled(store, [config.test], config.key, list(data.columns))
        overlap = set(test.keys) & set(data.keys)
        if overlap:
            raise InputError(f"{config.test}: {len(overlap)} {config.key} value(s) are also in the training labels, "
                             f"e.g. {min(overlap)} (test images must never be trained on)")
        return data, test
    first = config.columns[0]
    check_trainable([v for v in data.columns[first] if v.strip()], first)
    groups = data.columns[config.group_column] if config.group_column else None
    train, test = stratified_test_split(data.columns[first], config.test_fraction, seed=config.seed, groups=groups)
    return data.take(train), data.take(test)


def fit_column(config: FitSVMConfig, train: Labelled, test: Labelled, column: str, out_dir: Path,
               advance: Callable[[int], None]) -> dict[str, Any]:
    """Cross-validate C on training rows, fit, evaluate on test rows, save model, report and learning curve."""
    from .evaluation import csv_text, evaluate, write_report
    from .support import cv_splits, learning_curve, macro_f1, write_learning_curve

    X, y, _ = train.rows_with(column)
    X_test, y_test, test_keys = test.rows_with(column)
    check_trainable(y, column)
    groups = None
    if config.group_column:
        groups = np.asarray(train.columns[config.group_column])[np.asarray(train.columns[column]) != ""]
    folds = cv_splits(y, config.cv, seed=config.seed, groups=groups) if config.cv > 1 else []
    cv_scores: dict[str, list[float]] = {}
    for C in config.C:
        cv_scores[f"{C:g}"] = []
        for fit_idx, val_idx in folds:
            model = EmbeddingSVM(config.solver, C=C, random_state=config.seed).fit(X[fit_idx], y[fit_idx], column)
            cv_scores[f"{C:g}"].append(macro_f1(y[val_idx], model.predict(X[val_idx]), sorted(set(y))))
            advance(1)
    best_C = max(config.C, key=lambda C: np.mean(cv_scores[f"{C:g}"]) if folds else 0.0)
    model = EmbeddingSVM(config.solver, C=best_C, random_state=config.seed).fit(X, y, column)
    advance(1)
    proba = model.predict_proba(X_test)
    report = evaluate(y_test, proba, model.classes_, column=column, seed=config.seed, n_bootstrap=config.n_bootstrap)
    report["model"] = {"solver": config.solver, "C": best_C, "n_train": len(y), "cv_folds": len(folds),
                       "cv_macro_f1": {c: {"mean": float(np.mean(s)), "std": float(np.std(s)), "folds": s}
                                       for c, s in cv_scores.items() if s},
                       "train_class_counts": dict(sorted(Counter(y.tolist()).items()))}
    write_report(report, out_dir, y_test, proba)
    first, second = top_two(proba, model.classes_)
    atomic_write_text(out_dir / "test_predictions.csv", csv_text(
        [[config.key, "true", "predicted", "probability", "second"]]
        + [[k, t, f, float(p), s] for k, t, f, p, s in zip(test_keys, y_test, first, proba.max(axis=1), second)]))
    model.save(out_dir, fingerprint=config.store_fingerprint, column=column,
               extra={"n_train": len(y), "store": config.store})
    if config.support:
        from .support import parse_sizes

        rows = learning_curve(lambda: EmbeddingSVM(config.solver, C=best_C, random_state=config.seed),
                              X, y, X_test, y_test, parse_sizes(",".join(config.support)),
                              repeats=config.repeats, seed=config.seed, progress=advance)
        write_learning_curve(rows, out_dir, f"{column}: {config.solver} SVM on the embedding")
    return report


def fit_svm(config: FitSVMConfig, out_dir: str | os.PathLike, progress=None) -> dict[str, Any]:
    """Run ``fit-svm``: one model folder per column under ``out_dir`` plus ``summary.{json,csv}``."""
    from ..config import save_config
    from ..store.store import EmbeddingStore
    from .evaluation import summarize, write_summary
    from .support import parse_sizes

    out = Path(out_dir)
    store = EmbeddingStore.open(config.store)
    config.store_fingerprint = store.fingerprint
    if config.support:
        parse_sizes(",".join(config.support))
    wanted = None if not config.columns or config.columns == ["all"] else list(config.columns)
    if wanted and config.group_column and config.group_column not in wanted:
        wanted.append(config.group_column)
    data = load_labelled(store, config.labels, config.key, wanted)
    if not config.columns or config.columns == ["all"]:
        config.columns = [c for c in data.columns if c != config.group_column and not _identifier(data.columns[c])]
    if not config.columns:
        raise InputError(f"{config.labels or config.store}: no label columns to fit")
    train, test = split_data(config, store, data)
    save_config(config, out / "fit_svm_config.json")
    steps = len(config.columns) * (1 + len(config.C) * max(config.cv, 0) + len(config.support) * config.repeats)
    progress = progress or (lambda n, label: contextlib.nullcontext(lambda k: None))
    reports = {}
    with progress(steps, "fitting") as advance:
        for column in config.columns:
            reports[column] = fit_column(config, train, test, column, out / _safe(column), advance)
    summary = summarize(reports, main_column=config.columns[0])
    write_summary(summary, out)
    return summary


def _identifier(values: Sequence[str]) -> bool:
    """A column whose every value differs (an image name): never a label."""
    return len(values) > 20 and len(set(values)) == len(values)


def _safe(column: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in column) or "column"
