"""A saved SVM's ``model.json``: found, read and checked without scikit-learn (a wrong model folder is
refused before scikit-learn and skops load; :mod:`.estimator` loads the model itself)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...config import read_json_object
from ...errors import InputError, MismatchError

Solver = Literal["sgd", "libsvm", "liblinear"]
SOLVERS: tuple[str, ...] = ("sgd", "libsvm", "liblinear")
DEFAULT_SOLVER: Solver = "liblinear"
MODEL_FILE, META_FILE, FORMAT = "model.skops", "model.json", "hemoembed-svm/1"
# The keys of model.json that loading relies on, with their JSON types (checked by read_meta).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "column": (str,), "classes": (list,), "solver": (str,), "C": (int, float), "calibration_folds": (int,),
    "random_state": (int,), "dim": (int,), "store_fingerprint": (str,)}


def read_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``model.json`` of a saved SVM folder."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise InputError(f"{folder}: not a saved SVM (no {META_FILE})")
    meta = read_json_object(path, "model metadata")
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: format {meta.get('format')!r} is not {FORMAT}")
    for key, kinds in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise InputError(f"{path}: {key!r} is {value!r:.40} (expected "
                             f"{' or '.join(k.__name__ for k in kinds)}); the file is damaged")
    classes = meta["classes"]
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{path}: 'classes' must list at least 2 distinct class names")
    if meta["solver"] not in SOLVERS or not (np.isfinite(meta["C"]) and meta["C"] > 0) or meta["dim"] < 1:
        raise InputError(f"{path}: solver {meta['solver']!r}, C {meta['C']!r} or dim {meta['dim']!r} is invalid")
    return meta


def check_fingerprint(meta: dict[str, Any], fingerprint: str, where: str) -> None:
    """Refuse a store (or encoder) whose fingerprint is not the one the model was trained on."""
    if meta["store_fingerprint"] != fingerprint:
        raise MismatchError(f"model for column {meta['column']!r} was trained on store fingerprint "
                            f"{meta['store_fingerprint'][:16]}…, but {where} has fingerprint {fingerprint[:16]}…; "
                            "refit the SVM on this store (a model fitted on a store of format 1, before the "
                            "fingerprint covered architecture and preprocessing, needs a store rebuilt by embed)")


def model_folders(model_dir: str | os.PathLike) -> list[Path]:
    """A saved SVM folder, or a ``fit-svm`` output holding one sub-folder per column."""
    model_dir = Path(model_dir)
    if (model_dir / META_FILE).is_file():
        return [model_dir]
    found = sorted(p.parent for p in model_dir.glob(f"*/{META_FILE}")) if model_dir.is_dir() else []
    if not found:
        raise InputError(f"{model_dir}: no saved SVM here ({META_FILE} in the folder or its sub-folders)")
    return found


def column_folder(model_dir: str | os.PathLike, column: str | None = None) -> Path:
    """The one saved SVM of ``model_dir`` (a model folder, or a fit-svm output narrowed by ``column``)."""
    folders = model_folders(model_dir)
    if column is not None:
        folders = [f for f in folders if read_meta(f)["column"] == column]
    if len(folders) != 1:
        names = ", ".join(read_meta(f)["column"] for f in model_folders(model_dir))
        raise InputError(f"{model_dir}: choose one model with --column (columns: {names})")
    return folders[0]
