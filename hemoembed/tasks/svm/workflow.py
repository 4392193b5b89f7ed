"""``hemoembed fit-svm``: cross-validated linear SVMs per label column, evaluated, saved, with learning curves."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import atomic_write_text, csv_text, safe_name
from ...errors import InputError
from ...progress import ProgressFactory, stage
from ..common.labels import Labelled, check_trainable, load_labelled
from ..common.metrics import macro_f1, top_two
from .estimator import DEFAULT_C, DEFAULT_SOLVER, SOLVER_WORDS, EmbeddingSVM


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
    C: list[float] = field(default_factory=lambda: [DEFAULT_C])
    cv: int = 5
    support: list[str] = field(default_factory=list)
    repeats: int = 3
    n_bootstrap: int = 1000
    seed: int = 0



def split_data(config: FitSVMConfig, store, data: Labelled) -> tuple[Labelled, Labelled]:
    """(train, test): the ``--test`` CSV (refusing overlap) or a stratified ``--test-fraction`` split."""
    from ..common.splits import refuse_overlap, stratified_test_split

    if config.test:
        test = load_labelled(store, [config.test], config.key, list(data.columns), lazy=lazy_rows(config))
        refuse_overlap(data.keys, test.keys, config.test, config.key)
        return data, test
    first = config.columns[0]
    check_trainable([v for v in data.columns[first] if v.strip()], first)
    groups = data.columns[config.group_column] if config.group_column else None
    train, test = stratified_test_split(data.columns[first], config.test_fraction, seed=config.seed, groups=groups)
    return data.take(train), data.take(test)


def fit_column(config: FitSVMConfig, train: Labelled, test: Labelled, column: str, out_dir: Path,
               advance: Callable[[int], None]) -> dict[str, Any]:
    """Cross-validate C on training rows, fit, evaluate on test rows, save model, report and learning curve."""
    from ..common.metrics import evaluate
    from ..common.reports import write_report
    from ..common.splits import cv_splits
    from .support_curve import support_curve, write_support_curve

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
    write_report(report, out_dir, y_test, proba,
                 subject=f"Linear SVM on the embedding (fitted by {SOLVER_WORDS[config.solver]})")
    first, second = top_two(proba, model.classes_)
    atomic_write_text(out_dir / "test_predictions.csv", csv_text(
        [[config.key, "true", "predicted", "probability", "second"]]
        + [[k, t, f, float(p), s] for k, t, f, p, s in zip(test_keys, y_test, first, proba.max(axis=1), second)]))
    model.save(out_dir, fingerprint=config.store_fingerprint, column=column,
               extra={"n_train": len(y), "store": config.store})
    if config.support:
        from .support_curve import parse_sizes

        rows = support_curve(lambda: EmbeddingSVM(config.solver, C=best_C, random_state=config.seed),
                              X, y, X_test, y_test, parse_sizes(",".join(config.support)),
                              repeats=config.repeats, seed=config.seed, progress=advance)
        write_support_curve(rows, out_dir, f"Linear SVM on the embedding: '{column}' with few labels")
    return report


def run(config: FitSVMConfig, out_dir: str | os.PathLike,
        progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Run ``fit-svm``: one model folder per column under ``out_dir`` plus ``summary.{json,csv}``."""
    from ...config import save_config
    from ...store.store import EmbeddingStore
    from ..common.reports import summarize, write_summary
    from .support_curve import parse_sizes

    out = Path(out_dir)
    store = EmbeddingStore.open(config.store)
    config.store_fingerprint = store.fingerprint
    if config.support:
        parse_sizes(",".join(config.support))
    wanted = None if not config.columns or config.columns == ["all"] else list(config.columns)
    if wanted and config.group_column and config.group_column not in wanted:
        wanted.append(config.group_column)
    data = load_labelled(store, config.labels, config.key, wanted, lazy=lazy_rows(config))
    if not config.columns or config.columns == ["all"]:
        config.columns = [c for c in data.columns if c != config.group_column and not _identifier(data.columns[c])]
    if not config.columns:
        raise InputError(f"{config.labels or config.store}: no label columns to fit")
    train, test = split_data(config, store, data)
    del data
    if not lazy_rows(config):
        store.refresh()  # the split copied its rows: the store's matrix is not kept while the SVMs train
    save_config(config, out / "fit_svm_config.json")
    steps = len(config.columns) * (1 + len(config.C) * max(config.cv, 0) + len(config.support) * config.repeats)
    reports = {}
    with stage(progress, steps, "fitting") as advance:
        for column in config.columns:
            folder = out / (safe_name(column, "-_.") or "column")
            reports[column] = fit_column(config, train, test, column, folder, advance)
    summary = summarize(reports, main_column=config.columns[0])
    write_summary(summary, out)
    return summary


def lazy_rows(config: FitSVMConfig) -> bool:
    """Whether the SVMs read the store's rows part by part instead of holding the labelled rows' matrix:
    ``sgd`` streams (:mod:`.streaming`); the other solvers need the rows in memory."""
    return config.solver == "sgd"


def _identifier(values: Sequence[str]) -> bool:
    """A column whose every value differs (an image name): never a label."""
    return len(values) > 20 and len(set(values)) == len(values)

