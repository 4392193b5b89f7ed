"""Benchmark: every store command at 10k, 100k and 1M rows; time, CPU seconds and peak RSS. Prints JSON.

Usage (from the repository root; CPU-heavy, run under /work/bin/heavy on the shared machine):
    .venv/bin/python benchmarks/scale.py build --out /work/runs/scale --sizes 10000,100000,1000000
    .venv/bin/python benchmarks/scale.py run --out /work/runs/scale --sizes 10000,100000 > scale.json
    .venv/bin/python benchmarks/scale.py latency STORE     # 10-NN latency and recall@10 of the saved index

``build`` writes stores through the store's own writer (``EmbeddingStore.create`` + ``append``, parts of
2,048 rows as ``embed`` writes them) with the fingerprint of a real 64-px encoder (``build_encoder``,
``--weights none``, saved as OUT/encoder.keras). The rows are synthetic embeddings with class structure:
8 classes, a shared 64-dimensional within-class subspace with a decaying spectrum, a little isotropic noise,
L2-normalised. Their statistics were matched to a real 64-px PBC store (the nearest-neighbour to median
cosine distance ratio 0.28 here vs 0.38 there, 96% of the variance in 64 dimensions vs 95%, a linear
classifier's macro-F1 0.96). Rows are generated in blocks seeded by their position, so the first 10,000
rows of every store are the same cells: the 10k store is a sample of the 1M store.

Stores written by this hemoembed record their row counts in each part's footer, so ``store info`` reads
no rows (stores built before are counted the slow way). ``--dtype float16`` builds and runs the float16
stores (``store_<n>_float16``); ``hemoembed store convert`` makes one from a float32 store without generating
the rows again.

``run`` starts each command as its own process (``python -m hemoembed ...``) and reads that process's
resource usage (``wait4``): wall seconds, user+system CPU seconds, peak RSS.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's hemoembed, also in-process (not the one pip installed)
CLASSES = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
DIM, RANK, PART = 1280, 64, 2048
AL_LABELS = 125_000  # active learning: labels of 125k rows, 20% test -> a pool of 100k


def synthetic_rows(n: int, seed: int = 0, block: int = PART, sep: float = 0.5,
                   noise: float = 0.01) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first row, (m, 1280) float32 unit rows, (m,) class indices)`` blocks of a structured embedding."""
    base = np.random.default_rng(seed)
    basis = np.linalg.qr(base.normal(size=(DIM, RANK)))[0].astype(np.float32)
    spectrum = (np.arange(1, RANK + 1) ** -0.75).astype(np.float32)
    mean = base.normal(size=DIM).astype(np.float32)
    mean *= 2.5 / np.linalg.norm(mean)
    centres = mean + sep * (base.normal(size=(len(CLASSES), RANK)).astype(np.float32) * spectrum) @ basis.T
    for start in range(0, n, block):
        rng = np.random.default_rng([seed, start])
        m = min(block, n - start)
        labels = rng.integers(0, len(CLASSES), size=m)
        z = rng.normal(size=(m, RANK)).astype(np.float32) * spectrum
        X = centres[labels] + z @ basis.T + noise * rng.normal(size=(m, DIM)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        yield start, X, labels


def row_path(i: int, label: int) -> str:
    return f"synthetic/{CLASSES[label]}/cell_{i:07d}.png"


def encoder(out: Path):
    """The benchmark's real encoder (64 px, random weights), built once and saved."""
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder, load_encoder, save_encoder

    path = out / "encoder.keras"
    if not path.is_file():
        import keras

        keras.utils.set_random_seed(0)
        save_encoder(build_encoder(PreprocessingRecord(image_size=64), weights="none"), path)
    return load_encoder(path)[0]


def build(out: Path, n: int, dtype: str = "float32") -> dict:
    """Write the n-row store ``store_<n>[_float16]`` and ``labels_<n>.csv`` (path, label of every row)."""
    import hashlib

    from hemoembed.model.encoder import fingerprint, preprocessing_record
    from hemoembed.store.store import EmbeddingStore, make_part_table

    model = encoder(out)
    directory = out / (f"store_{n}" + ("" if dtype == "float32" else f"_{dtype}"))
    if (directory / "store.json").is_file():
        return {"store": str(directory), "rows": len(EmbeddingStore.open(directory)), "built": False}
    started = time.perf_counter()
    store = EmbeddingStore.create(directory, fingerprint(model), preprocessing_record(model), DIM, dtype=dtype)
    labels_csv = out / f"labels_{n}.csv"
    with open(labels_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for start, X, labels in synthetic_rows(n):
            paths = [row_path(start + j, int(c)) for j, c in enumerate(labels)]
            shas = [hashlib.sha256(p.encode()).hexdigest() for p in paths]
            store.append(make_part_table(paths, shas, [64] * len(paths), [64] * len(paths), X, dtype=dtype))
            writer.writerows((p, CLASSES[int(c)]) for p, c in zip(paths, labels))
    with open(labels_csv) as source, open(out / f"labels_al_{n}.csv", "w") as target:
        for i, line in enumerate(source):
            if i > AL_LABELS:
                break
            target.write(line)
    return {"store": str(directory), "rows": n, "built": True, "seconds": round(time.perf_counter() - started, 1),
            "bytes": sum(p.stat().st_size for p in store.part_files())}


def measure(args: list[str], log: Path, rss_limit_gib: float, time_limit_s: float) -> dict:
    """Run one command as a child process: wall s, CPU s (user + system), peak RSS (MiB), exit code. The
    child is killed past ``rss_limit_gib`` resident (the machine is shared) or ``time_limit_s``."""
    started = time.perf_counter()
    killed = ""
    with open(log, "w") as handle:
        child = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if _rss_gib(child.pid) > rss_limit_gib and not killed:
                killed = f"over {rss_limit_gib} GiB resident"
                child.kill()
            elif time.perf_counter() - started > time_limit_s and not killed:
                killed = f"over {time_limit_s:.0f} s"
                child.kill()
            time.sleep(0.2)
    return {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "rc": os.waitstatus_to_exitcode(status),
            "killed": killed, "log": str(log)}


def _rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def commands(out: Path, n: int, suffix: str = "") -> dict[str, list[str]]:
    """The command lines measured for the n-row store."""
    hem = [sys.executable, "-m", "hemoembed"]
    store = str(out / f"store_{n}{suffix}")
    work = out / f"work_{n}{suffix}"
    query = row_path(7, int(next(synthetic_rows(PART))[2][7]))
    sample = str(out / "store_10000")  # the first 10,000 rows of every store: t-SNE fits its map there
    return {
        "store info": [*hem, "store", "info", store, "--json"],
        "neighbours exact": [*hem, "neighbours", store, "--path", query, "-k", "10", "--out", str(work / "nn.csv"),
                             "--overwrite"],
        "store index": [*hem, "store", "index", store],
        "neighbours approximate": [*hem, "neighbours", store, "--path", query, "-k", "10", "--approximate",
                                   "--out", str(work / "nn_approx.csv"), "--overwrite"],
        "index latency": [sys.executable, str(REPO / "benchmarks" / "scale.py"), "latency", store],
        "fit-svm sgd": [*hem, "fit-svm", store, "--labels", str(out / f"labels_{n}.csv"), "--columns", "label",
                        "--solver", "sgd", "--cv", "0", "--bootstrap", "200", "--out", str(work / "svm"),
                        "--overwrite"],
        "predict": [*hem, "predict", str(work / "svm"), "--store", store, "--out", str(work / "predictions.csv"),
                    "--overwrite"],
        "active-learn simulate": [*hem, "active-learn", store, "--simulate", "--labels",
                                  str(out / f"labels_al_{n}.csv"), "--column", "label", "--batch", "90", "--init",
                                  "90", "--strategy", "uncertainty", "--max-labels", "900", "--out",
                                  str(work / "al"), "--overwrite"],
        "tsne fit (10k sample)": [*hem, "tsne", sample, "--out", str(out / "map_10000"), "--overwrite"],
        "tsne place (all rows)": [*hem, "tsne", "--map", str(out / "map_10000"), "--query", store, "--out",
                                  str(work / "placed"), "--overwrite"],
    }


def latency(store_dir: str, queries: int = 200, k: int = 10) -> dict:
    """p50/p95 of one 10-NN query through the saved index (queries one at a time) and recall@10 vs exact."""
    from hemoembed.store.index import NeighbourIndex
    from hemoembed.store.neighbors import knn_blocks
    from hemoembed.store.store import EmbeddingStore

    store = EmbeddingStore.open(store_dir)
    started = time.perf_counter()
    index = NeighbourIndex.load(store, "cosine")
    load_s = time.perf_counter() - started
    rows = np.sort(np.random.default_rng(1).choice(len(store), size=queries, replace=False))
    vectors = store.rows_embeddings(rows)
    times, found = [], []
    for q in range(queries):
        t0 = time.perf_counter()
        idx, _ = index.search(vectors[q:q + 1], k, exclude=rows[q:q + 1])
        times.append(time.perf_counter() - t0)
        found.append(idx[0])
    t0 = time.process_time()
    exact, _ = knn_blocks(vectors, store.iter_embeddings(), len(store), k, "cosine", exclude=rows)
    exact_cpu = time.process_time() - t0
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))
    ms = np.asarray(times) * 1000
    return {"rows": len(store), "index_load_s": round(load_s, 2), "p50_ms": round(float(np.median(ms)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2), "recall_at_10": round(recall, 4),
            "queries": queries, "nprobe": index.info.nprobe, "nlist": index.info.nlist,
            "exact_cpu_s_per_query": round(exact_cpu / queries, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["build", "run", "latency"])
    parser.add_argument("store", nargs="?", help="latency: the store")
    parser.add_argument("--out", type=Path, default=Path("/work/runs/scale"))
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--only", default="", help="run: comma-separated command names (default: all)")
    parser.add_argument("--rss-limit", type=float, default=18.0, help="run: kill a command past this many GiB")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="run: kill a command past this many s")
    args = parser.parse_args()
    if args.action == "latency":
        print(json.dumps(latency(args.store)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    if args.action == "build":
        print(json.dumps({"machine": machine, "built": [build(args.out, n, args.dtype) for n in sizes]}, indent=1))
        return
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    results = []
    for n in sizes:
        (args.out / f"work_{n}{suffix}").mkdir(exist_ok=True)
        for name, command in commands(args.out, n, suffix).items():
            if only and name not in only:
                continue
            load_before = open("/proc/loadavg").read().split()[:3]
            result = {"rows": n, "dtype": args.dtype, "command": name, "load_before": load_before,
                      **measure(command, args.out / f"work_{n}{suffix}" / f"{name.replace(' ', '_')}.log",
                                args.rss_limit, args.time_limit)}
            if name == "index latency" and result["rc"] == 0:
                result["latency"] = json.loads(Path(result["log"]).read_text().strip().splitlines()[-1])
            result["load_after"] = open("/proc/loadavg").read().split()[:3]
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    print(json.dumps({"machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
