"""The review app's neighbour search on a large reference store: exact (streamed) vs the store's index.

Prints JSON. Opens the reference as ``hemoembed serve`` does (:func:`hemoembed.app.reference.open_reference`:
store, SVM, labels, and the store's approximate index when it has a current one), then asks for the ``-k``
nearest reference cells of ``--queries`` stored rows (seeded), one query at a time as the detail view does,
and reports latency p50/p95 (and the first query's: exact search reads the matrix then), the search the app
chose, recall@k of the app's answers against exact search on the first ``--exact-queries`` of them, and peak RSS.
``--exact`` ignores the index (the app before it used one).

    .venv/bin/python benchmarks/app_neighbours.py /work/runs/nbr1m/store --model SVM_DIR --queries 200
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--model", type=Path, required=True, help="fit-svm output trained on STORE")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=5, help="queries also answered exactly (recall)")
    parser.add_argument("--exact", action="store_true", help="search exactly even when the store has an index")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hemoembed.app.reference import open_reference

    load_before = os.getloadavg()
    started = time.perf_counter()
    reference = open_reference(args.store, args.model)
    open_s = time.perf_counter() - started
    if args.exact:
        reference.index, reference.neighbour_search = None, "exact (--exact)"
    store = reference.store
    rows = np.sort(np.random.default_rng(args.seed).choice(len(store), args.queries, replace=False))
    vectors = store.rows_embeddings(rows)
    latencies, answers = [], []
    for vector in vectors:
        started = time.perf_counter()
        answers.append([n["row"] for n in reference.neighbours(vector, args.k)])
        latencies.append(time.perf_counter() - started)
    exact_n = min(args.exact_queries, len(vectors))
    exact, _ = store.neighbours(vectors[:exact_n], k=args.k)
    recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(answers[:exact_n], exact.tolist())]))
    ms = 1000 * np.asarray(latencies)
    print(json.dumps({
        "benchmark": "app_neighbours", "machine": platform.node(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"), "store": str(args.store), "rows": len(store),
        "search": reference.neighbour_search, "open_reference_s": round(open_s, 2), "queries": len(vectors),
        "k": args.k, "first_ms": round(float(ms[0]), 2), "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "recall_at_k_vs_exact": round(recall, 4), "recall_queries": exact_n,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }, indent=1))


if __name__ == "__main__":
    main()
