"""Benchmark: a full t-SNE map of all 17,092 PBC images, and placing the 351 BCCD crops onto it. Prints JSON.

Usage (from the repository root):
    .venv/bin/python benchmarks/tsne.py                       # pixel features of ../shared/data
    .venv/bin/python benchmarks/tsne.py --store STORE --query-store STORE2   # a real embedding store

Without a store the points are 24x24 RGB thumbnails (1,728-d, decoded by the project's pipeline):
t-SNE's cost depends on the number of points and, after PCA to 50 dimensions, hardly on what the vectors
are, so this measures the map at the real size without first embedding 17,092 images on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


def thumbnails(folder: Path, size: int = 24) -> tuple[np.ndarray, list[str]]:
    """(N, size*size*3) float32 thumbnails of every image under ``folder``, via the tf.data decoding path."""
    import tensorflow as tf

    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.pipeline import decoded_dataset

    manifest = load_manifest(folder)
    ds = decoded_dataset(manifest.absolute()).map(
        lambda image, index: (tf.reshape(tf.image.resize(tf.cast(image, tf.float32), (size, size),
                                                         antialias=True), [-1]) / 255.0, index),
        num_parallel_calls=tf.data.AUTOTUNE).batch(512)
    vectors, indices = [], []
    for batch, index in ds:
        vectors.append(batch.numpy())
        indices.append(index.numpy())
    return np.concatenate(vectors), [manifest.paths[i] for i in np.concatenate(indices)]


def store_vectors(directory: str) -> tuple[np.ndarray, list[str]]:
    from hemoembed.store.store import EmbeddingStore

    store = EmbeddingStore.open(directory)
    return np.asarray(store.embeddings()), store.paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="embedding store for the map (default: PBC thumbnails)")
    parser.add_argument("--query-store", help="embedding store to place onto the map (default: BCCD thumbnails)")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--gradient", choices=["bh", "fft"], default="bh")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hemoembed.explain.tsne import TsneConfig, TsneMap

    t0 = time.perf_counter()
    if args.store:
        vectors, keys = store_vectors(args.store)
    else:
        vectors, keys = thumbnails(DATA / "pbc256")
    queries = (store_vectors(args.query_store) if args.query_store else thumbnails(DATA / "bccd"))[0]
    features_s = time.perf_counter() - t0

    config = TsneConfig(n_jobs=args.n_jobs, gradient=args.gradient)
    t1, c1 = time.perf_counter(), time.process_time()
    tsne_map = TsneMap.fit(vectors, keys, config)
    fit_s, fit_cpu = time.perf_counter() - t1, time.process_time() - c1
    t2 = time.perf_counter()
    placed = tsne_map.transform(queries)
    transform_s = time.perf_counter() - t2
    print(json.dumps({
        "benchmark": "tsne", "points": len(keys), "input_dim": int(vectors.shape[1]),
        "features": "store embeddings" if args.store else "24x24 RGB thumbnails",
        "pca_dims": config.pca_dims, "perplexity": config.perplexity, "gradient": config.gradient,
        "early_exaggeration_iter": config.early_exaggeration_iter, "n_iter": config.n_iter,
        "total_iterations": config.total_iterations, "kl_divergence": round(tsne_map.kl_divergence, 4),
        "fit_seconds": round(fit_s, 1), "target_seconds": 120, "meets_target": fit_s <= 120,
        "fit_cpu_seconds": round(fit_cpu, 1), "load_average_1min": round(os.getloadavg()[0], 1),
        "queries": len(placed), "transform_seconds": round(transform_s, 1),
        "feature_extraction_seconds": round(features_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}",
        "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()
