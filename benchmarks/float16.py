"""Benchmark: what float16 storage costs downstream. Prints JSON.

A float32 store is converted to float16 (``hemoembed store convert``: the values ``embed --dtype float16``
would store for the same images), then ``fit-svm`` runs on both with the same labels, split, solver and seed,
and the two sets of test predictions are compared per column: macro-F1 of each, how many predictions are
identical, and a paired bootstrap of the macro-F1 difference (float16 − float32; the same resampled test rows
for both). Also the stores' size on disk and their embedding matrices in memory.

Usage (from the repository root; a few CPU minutes, run under /work/bin/heavy on the shared machine):
    .venv/bin/python benchmarks/float16.py --store /work/runs/qfull/stores/pbc --out /work/runs/store3/float16 \\
        --labels ../shared/data/wbcatt/pbc_attr_v1_train.csv --labels ../shared/data/wbcatt/pbc_attr_v1_val.csv \\
        --test ../shared/data/wbcatt/pbc_attr_v1_test.csv --columns label
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's hemoembed, also in-process (not the one pip installed)


def fit(store: Path, out: Path, labels: list[str], test: str, columns: str, extra: list[str]) -> dict:
    """``hemoembed fit-svm`` as its own process; wall and CPU seconds."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    args = [sys.executable, "-m", "hemoembed", "fit-svm", str(store),
            *[a for path in labels for a in ("--labels", path)],
            "--test", test, "--columns", columns, *extra, "--out", str(out), "--overwrite"]
    subprocess.run(args, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.perf_counter() - started, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)}


def predictions(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(folder / "test_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    key = next(iter(rows[0]))
    return [r[key] for r in rows], np.asarray([r["true"] for r in rows]), np.asarray([r["predicted"] for r in rows])


def paired(folder32: Path, folder16: Path, n_bootstrap: int, seed: int) -> dict:
    """Macro-F1 of both, identical predictions, paired bootstrap of the difference (same resampled rows)."""
    from hemoembed.tasks.common.metrics import confusion, scores_from_confusion

    keys32, truth, pred32 = predictions(folder32)
    keys16, truth16, pred16 = predictions(folder16)
    if keys16 != keys32 or not np.array_equal(truth, truth16):
        raise SystemExit(f"{folder16}: test rows differ from {folder32}")
    classes = sorted(set(truth) | set(pred32) | set(pred16))
    code = {c: i for i, c in enumerate(classes)}
    t, a, b = (np.asarray([code[v] for v in x]) for x in (truth, pred32, pred16))

    def f1(rows: np.ndarray, pred: np.ndarray) -> float:
        return float(scores_from_confusion(confusion(t[rows], pred[rows], len(classes)))["f1"].mean())

    everything = np.arange(len(t))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_bootstrap)
    for i in range(n_bootstrap):
        rows = rng.integers(0, len(t), len(t))
        diffs[i] = f1(rows, b) - f1(rows, a)
    f32, f16 = f1(everything, a), f1(everything, b)
    return {"test_rows": len(t), "macro_f1_float32": round(f32, 4), "macro_f1_float16": round(f16, 4),
            "difference": round(f16 - f32, 4),
            "difference_ci95": [round(float(v), 4) for v in np.percentile(diffs, [2.5, 97.5])],
            "identical_predictions": int(np.sum(a == b)), "n_bootstrap": n_bootstrap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="A float32 store (read only).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", action="append", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--columns", default="label")
    parser.add_argument("--solver", default="liblinear")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from hemoembed.store.convert import convert_store
    from hemoembed.store.store import EmbeddingStore

    args.out.mkdir(parents=True, exist_ok=True)
    half_dir = args.out / "store_float16"
    started = time.perf_counter()
    half = EmbeddingStore.open(half_dir) if (half_dir / "store.json").is_file() else convert_store(
        args.store, half_dir, "float16")
    convert_s = time.perf_counter() - started
    full = EmbeddingStore.open(args.store)
    extra = ["--solver", args.solver, "--cv", "0", "--seed", str(args.seed)]
    result: dict = {"store": str(args.store), "columns": args.columns, "solver": args.solver,
                    "convert_s": round(convert_s, 1), "sizes": {}, "fit": {}, "columns_compared": {}}
    for name, store in (("float32", full), ("float16", half)):
        info = store.info()
        result["sizes"][name] = {"rows": info["rows"], "bytes_on_disk": info["bytes"],
                                 "matrix_bytes": info["rows"] * store.dim * np.dtype(name).itemsize}
        result["fit"][name] = fit(store.directory, args.out / f"svm_{name}", args.labels, args.test, args.columns,
                                  extra)
    for folder in sorted(p.parent for p in (args.out / "svm_float32").glob("*/test_predictions.csv")):
        result["columns_compared"][folder.name] = paired(folder, args.out / "svm_float16" / folder.name,
                                                         args.bootstrap, args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
