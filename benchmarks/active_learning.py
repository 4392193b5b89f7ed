"""Active-learning speed: hemoembed's incremental SVM vs the naive reference, on the same data. Prints JSON.

The study: uncertainty sampling from 90 labels to the whole pool in steps of 90 (~180 refits for a
16,000-image pool of 1280-d embeddings). *Ours*: modAL ``ActiveLearner`` over ``IncrementalLinearSVM``
(libsvm on a Gram matrix grown by the new rows; pool scored through folded weights). *Reference*: modAL
over ``EmbeddingSVM(solver="libsvm")`` = ``StandardScaler`` + ``SVC(kernel="linear")`` + five-fold Platt
(sigmoid) calibration, the paper's ``probability=True``, refitted from scratch at every step.

The reference is far too slow to run to the end here, so it is timed on the first ``--prefix-steps`` steps
(consecutive, its own modAL loop) and on single steps at ``--checkpoints`` label counts (labelled set =
the first n images our run selected, pool = the rest); its whole-curve time is the sum over every curve
step of the step time interpolated (log-log, piecewise linear) between the measured points. Times are CPU seconds
of this process (all threads), so that other work on a shared machine does not distort the ratio. Final
macro-F1 of both is measured on the same held-out test set with every pool label.

    python benchmarks/active_learning.py                      # synthetic 20,000 × 1280 (no store needed)
    python benchmarks/active_learning.py --store /work/runs/stores/pbc --column label --test-fraction 0.06
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np


def _clock() -> float:
    """CPU seconds of this process (all threads): fair on a machine shared with other work."""
    return time.process_time()


def load_data(args) -> tuple[np.ndarray, np.ndarray, str]:
    if args.store:
        from hemoembed.store.store import EmbeddingStore

        store = EmbeddingStore.open(args.store)
        X, y = store.embeddings(), np.asarray([str(v) for v in store.column(args.column)])
        return X, y, f"store {args.store} ({store.fingerprint[:12]}), column {args.column}"
    from hemoembed.data.synthetic_embeddings import structured_embeddings

    X, y = structured_embeddings(args.n, dim=1280, n_classes=8, seed=args.seed, hard_fraction=0.3)
    return X, y, f"synthetic structured embeddings ({args.n} × 1280, 8 classes, 30% hard)"


def run_ours(Xp, yp, Xt, yt, classes, batch, seed):
    from hemoembed.tasks.active import IncrementalLinearSVM, f1_rows, initial_indices, make_learner, query_strategy

    np.random.seed(seed)
    start = _clock()
    order = list(initial_indices(Xp, yp, batch, "stratified", seed))
    remaining = np.setdiff1d(np.arange(len(Xp)), order)
    learner = make_learner(IncrementalLinearSVM(classes=classes), query_strategy("uncertainty", None),
                           Xp[order], yp[order])
    curve, step_times = [], []
    while True:
        curve.append((len(order), f1_rows(yt, learner.predict(Xt), classes)[0]["value"]))
        if len(remaining) == 0:
            break
        t = _clock()
        picked, _ = learner.query(Xp[remaining], n_instances=min(batch, len(remaining)))
        picked = remaining[np.asarray(picked, dtype=int)]
        learner.teach(Xp[picked], yp[picked])
        remaining = np.setdiff1d(remaining, picked, assume_unique=True)
        order += picked.tolist()
        step_times.append((len(order), _clock() - t))
    return {"seconds": _clock() - start, "steps": len(step_times), "curve": curve,
            "step_times": step_times, "final_macro_f1": curve[-1][1]}, np.asarray(order)


def reference_step(X_lab, y_lab, X_pool, classes, batch):
    """One naive step: refit EmbeddingSVM(libsvm, Platt) from scratch, score the pool, pick a batch."""
    from modAL.uncertainty import uncertainty_sampling

    from hemoembed.tasks.active import make_learner
    from hemoembed.tasks.svm import EmbeddingSVM

    t = _clock()
    learner = make_learner(EmbeddingSVM(solver="libsvm"), uncertainty_sampling, X_lab, y_lab)
    if len(X_pool):
        learner.query(X_pool, n_instances=min(batch, len(X_pool)))
    return _clock() - t, learner


def run_reference(Xp, yp, Xt, yt, classes, order, batch, prefix_steps, checkpoints):
    from hemoembed.tasks.active import f1_rows, initial_indices, make_learner, query_strategy
    from hemoembed.tasks.svm import EmbeddingSVM

    measured = []
    # consecutive prefix: the reference's own modAL loop, refitting from scratch at every teach
    labelled = list(initial_indices(Xp, yp, batch, "stratified", 0))
    remaining = np.setdiff1d(np.arange(len(Xp)), labelled)
    learner = make_learner(EmbeddingSVM(solver="libsvm"), query_strategy("uncertainty", None),
                           Xp[labelled], yp[labelled])
    prefix_curve = [(len(labelled), f1_rows(yt, learner.predict(Xt), classes)[0]["value"])]
    for _ in range(prefix_steps):
        t = _clock()
        picked, _ = learner.query(Xp[remaining], n_instances=batch)
        picked = remaining[np.asarray(picked, dtype=int)]
        learner.teach(Xp[picked], yp[picked])
        remaining = np.setdiff1d(remaining, picked, assume_unique=True)
        labelled += picked.tolist()
        measured.append((len(labelled), _clock() - t))
        prefix_curve.append((len(labelled), f1_rows(yt, learner.predict(Xt), classes)[0]["value"]))
    for n in checkpoints:
        n = min(n, len(Xp))
        seconds, learner = reference_step(Xp[order[:n]], yp[order[:n]], Xp[order[n:]], classes, batch)
        measured.append((n, seconds))
        if n == len(Xp):
            final = f1_rows(yt, learner.predict(Xt), classes)[0]["value"]
    return {"measured_steps": sorted(measured), "prefix_curve": prefix_curve, "final_macro_f1": final}


def interpolate_total(measured, curve_ns) -> float:
    ns, ts = np.log([m[0] for m in measured]), np.log([m[1] for m in measured])
    return float(np.sum(np.exp(np.interp(np.log(curve_ns), ns, ts))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="")
    parser.add_argument("--column", default="label")
    parser.add_argument("--n", type=int, default=20000, help="synthetic images (pool + test)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=90)
    parser.add_argument("--prefix-steps", type=int, default=3)
    parser.add_argument("--checkpoints", default="1800,4500,9000,all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from hemoembed.tasks.active import pool_standardiser, standardise
    from hemoembed.tasks.common import stratified_test_split

    started = time.time()
    X, y, source = load_data(args)
    pool, test = stratified_test_split(y, args.test_fraction, seed=args.seed)
    classes = np.unique(y)
    mean, scale = pool_standardiser(X[pool])
    Xp, Xt = standardise(X[pool], mean, scale), standardise(X[test], mean, scale)
    ours, order = run_ours(Xp, y[pool], Xt, y[test], classes, args.batch, args.seed)
    print(json.dumps({"ours_seconds": ours["seconds"], "ours_final": ours["final_macro_f1"]}), flush=True)
    checkpoints = [len(pool) if c == "all" else int(c) for c in args.checkpoints.split(",")]
    # the reference standardises inside its own pipeline: give it the raw embeddings
    ref = run_reference(X[pool], y[pool], X[test], y[test], classes, order, args.batch, args.prefix_steps,
                        checkpoints)
    curve_ns = np.array([n for n, _ in ours["step_times"]])
    ref_total = interpolate_total(ref["measured_steps"], curve_ns)
    ours_on_ref_points = {n: t for n, t in ours["step_times"]}
    result = {
        "benchmark": "active_learning", "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "data": source, "pool": len(pool),
        "test": len(test), "dim": int(X.shape[1]), "batch": args.batch, "strategy": "uncertainty",
        "clock": "process CPU seconds (all threads)", "wall_seconds": round(time.time() - started, 1),
        "ours": {"whole_curve_seconds": round(ours["seconds"], 1), "refits": ours["steps"],
                 "final_macro_f1": round(ours["final_macro_f1"], 4),
                 "step_seconds_at": {str(n): round(ours_on_ref_points.get(n, float("nan")), 2)
                                     for n, _ in ref["measured_steps"]},
                 "curve": [(n, round(f, 4)) for n, f in ours["curve"]]},
        "reference": {"whole_curve_seconds_estimated": round(ref_total, 1),
                      "measured_steps": [(n, round(t, 2)) for n, t in ref["measured_steps"]],
                      "measured_seconds": round(sum(t for _, t in ref["measured_steps"]), 1),
                      "final_macro_f1": round(ref["final_macro_f1"], 4),
                      "prefix_curve": [(n, round(f, 4)) for n, f in ref["prefix_curve"]],
                      "note": "timed on a prefix and checkpoint steps, whole curve interpolated (log-log)"},
        "speedup_whole_curve": round(ref_total / ours["seconds"], 1),
        "final_macro_f1_difference_points": round(100 * (ours["final_macro_f1"] - ref["final_macro_f1"]), 2),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
