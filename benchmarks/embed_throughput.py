"""Embedding throughput: ``embed`` end to end from JPEG files vs the encoder's forward pass on in-memory tensors.

Prints JSON. ``ratio`` = end-to-end images/s ÷ forward-only images/s (goal ≥ 0.9): below it, hashing,
decoding or Parquet writing, not the model, limits ``hemoembed embed``. Both are measured in the same
process, after one warm-up batch (tracing), best of ``--repeats``. ``cpu_ratio`` = forward CPU time per
image ÷ end-to-end CPU time per image: the same question answered without the noise of other processes
sharing the cores (on an otherwise idle machine, ratio ≈ cpu_ratio). ``peak_rss_mb``: this process's peak.

    .venv/bin/python benchmarks/embed_throughput.py ../shared/data/pbc256 --sizes 224 128 --n 512 \
        --store /work/runs/stores/pbc64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Clock:
    """Wall and process-CPU seconds of a block: under background load the CPU cost is the stable figure."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def forward_only(model, size: int, n: int, batch: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of the compiled forward pass on an in-memory tensor (the upper limit)."""
    import tensorflow as tf

    from hemoembed.store.embed import make_forward

    forward = make_forward(model)
    images = tf.random.uniform((batch, size, size, 3), 0.0, 255.0, seed=0)
    forward(images).numpy()  # trace
    count = max(1, n // batch)
    with _Clock() as clock:
        for _ in range(count):
            forward(images).numpy()
    return count * batch / clock.wall, 1000 * clock.cpu / (count * batch)


def end_to_end(model, record, manifest, batch: int, workdir: Path) -> tuple[float, float]:
    """(images/s, CPU ms per image) of a full embed run (hash, decode, preprocess, infer, write) into a new store."""
    from hemoembed.model.encoder import fingerprint
    from hemoembed.store.embed import run_embed
    from hemoembed.store.store import EmbeddingStore

    store = EmbeddingStore.create(Path(tempfile.mkdtemp(dir=workdir)) / "store", fingerprint(model), record,
                                  int(model.output_shape[-1]))
    with _Clock() as clock:
        result = run_embed(model, record, store, manifest, batch_size=batch)
    if result.embedded + result.reused != len(manifest):
        raise SystemExit(f"expected {len(manifest)} images, embedded {result.embedded} ({result.rejects[:3]})")
    return len(manifest) / clock.wall, 1000 * clock.cpu / len(manifest)


def measure(manifest, size: int, batch: int, repeats: int, workdir: Path) -> dict:
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder
    from hemoembed.store.embed import embed_images

    record = PreprocessingRecord(image_size=size)
    model = build_encoder(record, weights="none")
    embed_images(model, record, manifest.absolute()[:batch], batch)  # warm-up: trace, fill caches
    fwd, e2e = [], []
    for _ in range(repeats):  # interleaved, so background load hits both alike
        fwd.append(forward_only(model, size, len(manifest), batch))
        e2e.append(end_to_end(model, record, manifest, batch, workdir))
    best_f, best_e = max(f[0] for f in fwd), max(e[0] for e in e2e)
    cpu_f, cpu_e = min(f[1] for f in fwd), min(e[1] for e in e2e)
    return {"image_size": size, "images": len(manifest), "batch_size": batch,
            "forward_images_per_s": round(best_f, 2), "embed_images_per_s": round(best_e, 2),
            "ratio": round(best_e / best_f, 3),
            "forward_cpu_ms_per_image": round(cpu_f, 2), "embed_cpu_ms_per_image": round(cpu_e, 2),
            "cpu_ratio": round(cpu_f / cpu_e, 3),
            "all_forward_images_per_s": [round(f[0], 2) for f in fwd],
            "all_embed_images_per_s": [round(e[0], 2) for e in e2e]}


def store_reading(directory: Path, queries: int = 100, k: int = 10) -> dict:
    """Wall and CPU seconds to open a store and load (N, D) embeddings, and for exact k-NN of stored rows."""
    from hemoembed.store.store import EmbeddingStore

    loads = []
    for _ in range(2):  # the first includes importing pyarrow and a cold page cache
        with _Clock() as load:
            store = EmbeddingStore.open(directory)
            matrix = store.embeddings()
        loads.append(load)
    with _Clock() as search:
        store.neighbours(matrix[:queries], k)
    return {"store": str(directory), "rows": int(matrix.shape[0]), "dim": int(matrix.shape[1]),
            "first_load_wall_s": round(loads[0].wall, 3), "first_load_cpu_s": round(loads[0].cpu, 3),
            "load_wall_s": round(loads[1].wall, 3), "load_cpu_s": round(loads[1].cpu, 3),
            f"knn_{queries}_queries_k{k}_wall_s": round(search.wall, 3),
            f"knn_{queries}_queries_k{k}_cpu_s": round(search.cpu, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="Folder of images (e.g. ../shared/data/pbc256)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--n", type=int, default=256, help="Images per measurement (a seeded sample).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, default=None,
                        help="Also time loading this store's embeddings and a 100-query exact k-NN.")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from hemoembed.data.manifest import load_manifest

    full = load_manifest(args.images)
    pick = np.sort(np.random.default_rng(args.seed).choice(len(full), min(args.n, len(full)), replace=False))
    manifest = full.subset(pick.tolist())
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(manifest, size, args.batch_size, args.repeats, Path(tmp)) for size in args.sizes]
    reading = store_reading(args.store) if args.store is not None else None
    print(json.dumps({
        "benchmark": "embed_throughput", "machine": platform.node(), "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")), "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results, "store_reading": reading,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
