"""Fit time and macro-F1 of the two EmbeddingSVM solvers on 17,092 × 1280 embeddings; prints JSON.

With ``--store`` (and ``--labels``: a labels CSV or the class-folder tree) it uses a real embedding store,
e.g. all of PBC; otherwise structured synthetic embeddings of the same shape and class balance (8
Gaussian classes in a 64-d subspace plus isotropic noise, L2-normalised), so it runs anywhere.
A stratified 10% of the rows is the test set. Both solvers are single-threaded, so ``fit_cpu_s`` (process
CPU time) is the fair comparison on a shared machine; ``fit_s`` is wall time.

    .venv/bin/python benchmarks/svm_solvers.py --store /work/runs/stores/pbc_random \\
        --labels ../shared/data/pbc256 --solvers sgd,liblinear,libsvm --n 17092
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

PBC_COUNTS = (1218, 3117, 1551, 2895, 1214, 1420, 3329, 2348)  # 17,092 images in 8 classes


def synthetic(seed: int = 0, dim: int = 1280) -> tuple[np.ndarray, np.ndarray]:
    """PBC-shaped embeddings: overlapping classes so neither solver is trivially perfect."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(PBC_COUNTS)), PBC_COUNTS)
    basis = np.linalg.qr(rng.normal(size=(dim, 64)))[0].T
    centres = rng.normal(size=(len(PBC_COUNTS), 64)) * 0.45
    latent = centres[y] + rng.normal(size=(len(y), 64))
    X = latent @ basis + rng.normal(size=(len(y), dim)) * 0.05
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.array([f"class{k}" for k in y])


def from_store(store_dir: str, labels: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    from hemoembed.store.store import EmbeddingStore
    from hemoembed.tasks.common import load_labelled

    data = load_labelled(EmbeddingStore.open(store_dir), [labels], "path", [column])
    return data.rows_with(column)[:2]


def raw_pixels_wbcatt(data: str, size: int, components: int, seed: int) -> dict:
    """The no-learning reference: PCA of raw 32-px pixels → the same SVM, on the WBCAtt official split."""
    import csv

    from sklearn.decomposition import PCA

    from hemoembed.data.imageio import load_images
    from hemoembed.tasks.common import evaluate

    def rows(split: str) -> list[dict]:
        return list(csv.DictReader(open(f"{data}/wbcatt/pbc_attr_v1_{split}.csv")))

    train, test = rows("train") + rows("val"), rows("test")
    pixels = {}
    for part in (train, test):
        images = load_images([f"{data}/pbc256/{r['path']}" for r in part], size=size)
        pixels[id(part)] = images.reshape(len(part), -1).astype(np.float32) / 255.0
    pca = PCA(components, random_state=seed).fit(pixels[id(train)])
    X_train, X_test = pca.transform(pixels[id(train)]), pca.transform(pixels[id(test)])
    from hemoembed.tasks.svm import EmbeddingSVM

    out = {}
    for column in [c for c in train[0] if c not in ("img_name", "path")]:
        model = EmbeddingSVM("liblinear", random_state=seed).fit(X_train, [r[column] for r in train], column)
        report = evaluate([r[column] for r in test], model.predict_proba(X_test), model.classes_, column=column,
                          n_bootstrap=200)
        out[column] = round(report["macro"]["f1"], 4)
    attrs = [v for k, v in out.items() if k != "label"]
    return {"features": f"raw pixels {size}px, PCA {components}", "macro_f1": out,
            "mean_attribute_macro_f1": round(float(np.mean(attrs)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="")
    parser.add_argument("--labels", default="")
    parser.add_argument("--column", default="label")
    parser.add_argument("--solvers", default="sgd,liblinear,libsvm")
    parser.add_argument("--n", type=int, default=0, help="use a random subsample of this many rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw-pixels-wbcatt", default="", metavar="DATA",
                        help="instead: raw-pixel PCA + SVM on the WBCAtt split (DATA = ../shared/data)")
    args = parser.parse_args()
    if args.raw_pixels_wbcatt:
        print(json.dumps(raw_pixels_wbcatt(args.raw_pixels_wbcatt, 32, 256, args.seed), indent=2))
        return

    from hemoembed.tasks.common import macro_f1, stratified_test_split
    from hemoembed.tasks.svm import EmbeddingSVM

    X, y = from_store(args.store, args.labels, args.column) if args.store else synthetic(args.seed)
    if args.n:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(y), args.n, replace=False))
        X, y = X[keep], y[keep]
    train, test = stratified_test_split(y, 0.1, seed=args.seed)
    results = []
    for solver in args.solvers.split(","):
        start, cpu = time.perf_counter(), time.process_time()
        model = EmbeddingSVM(solver, random_state=args.seed).fit(X[train], y[train])
        fit_s, fit_cpu_s = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        proba = model.predict_proba(X[test])
        predict_s = time.perf_counter() - start
        pred = model.classes_[proba.argmax(axis=1)]
        results.append({"solver": solver, "fit_s": round(fit_s, 2), "fit_cpu_s": round(fit_cpu_s, 2),
                        "predict_s": round(predict_s, 3),
                        "macro_f1": round(macro_f1(y[test], pred, model.classes_), 4),
                        "accuracy": round(float(np.mean(pred == y[test])), 4)})
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"data": args.store or "synthetic PBC-shaped", "n": len(y), "dim": X.shape[1],
                      "n_train": len(train), "n_test": len(test), "classes": len(set(y)),
                      "machine": f"{platform.node()} {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
