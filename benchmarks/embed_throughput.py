"""Embedding throughput: ``embed`` end to end from JPEG files vs the encoder's compiled forward pass in memory.

Prints JSON. Per image size and preprocessing-record version: ``forward`` is the encoder's compiled
``tf.function`` (what ``embed`` calls; Keras ``predict`` is slower) on an in-memory batch; ``embed`` is
``run_embed`` into a new store (hash, decode, preprocess, infer, write Parquet parts). Fixed per-run costs
(dataset tracing, the first batch) are left out (reported as ``embed_fixed_cpu_s``): the figures are
per-image steady state, hashing included. ``ratio`` = embed images/s ÷ forward images/s (goal ≥ 0.9);
``cpu_ratio`` = forward CPU ms per image ÷ embed CPU ms per image: the same question without the noise of
other processes sharing the cores (on an idle machine whose model saturates every core, ratio ≈
cpu_ratio). ``input_cpu_ms`` breaks the input work down: ``probe`` (read + sha256 + header) and
``pipeline`` (read, decode, preprocess, batch: ``inference_dataset`` alone). Runs are interleaved; best of
``--repeats`` (``cpu_ratio_median``: the median of the repeats' own ratios). ``peak_rss_mb``: this process's peak.

    .venv/bin/python benchmarks/embed_throughput.py ../shared/data/pbc256 --sizes 64 128 224 --n 1024 \\
        --versions 1 2 --store /work/runs/stores/pbc64
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

from hemoembed.model.options import VIEW_AVERAGES  # no TensorFlow: --help stays instant

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


class _Phases:
    """A ``run_embed`` progress factory recording (wall, CPU, images done) at every step of every phase."""

    def __init__(self) -> None:
        self.marks: dict[str, list[tuple[float, float, int]]] = {}

    @contextlib.contextmanager
    def __call__(self, length: int, label: str):
        marks = self.marks.setdefault(label, [])
        done = 0

        def mark() -> None:
            marks.append((time.perf_counter(), time.process_time(), done))

        def advance(n: int) -> None:
            nonlocal done
            done += n
            mark()

        mark()
        yield advance
        mark()

    def per_image(self, label: str, skip_first_step: bool) -> tuple[float, float]:
        """(wall s, CPU s) per image of a phase; ``skip_first_step`` leaves out start-up and the first batch."""
        marks = self.marks[label]
        first, last = marks[1 if skip_first_step else 0], marks[-1]
        images = max(last[2] - first[2], 1)
        return (last[0] - first[0]) / images, (last[1] - first[1]) / images


def end_to_end(model, record, manifest, batch: int, workdir: Path) -> tuple[float, float, float]:
    """Steady-state (images/s, CPU ms per image) of one full ``embed`` run into a new store, and its fixed CPU s.

    Per image: the hashing phase whole, plus the embedding loop from its first batch to its end (decode,
    preprocess, infer, Parquet part written); the first batch and the dataset tracing are the fixed cost.
    """
    from hemoembed.model.encoder import fingerprint
    from hemoembed.store.embed import run_embed
    from hemoembed.store.store import EmbeddingStore

    store = EmbeddingStore.create(Path(tempfile.mkdtemp(dir=workdir)) / "store", fingerprint(model), record,
                                  int(model.output_shape[-1]))
    phases = _Phases()
    with _Clock() as clock:
        result = run_embed(model, record, store, manifest, batch_size=batch, part_size=len(manifest),
                           progress=phases)
    if result.embedded + result.reused != len(manifest):
        raise SystemExit(f"expected {len(manifest)} images, embedded {result.embedded} ({result.rejects[:3]})")
    hash_wall, hash_cpu = phases.per_image("hashing", skip_first_step=False)
    loop_wall, loop_cpu = phases.per_image("embedding", skip_first_step=True)
    per_image_cpu = hash_cpu + loop_cpu
    return 1 / (hash_wall + loop_wall), 1000 * per_image_cpu, clock.cpu - per_image_cpu * len(manifest)


def input_only(record, paths: list[str], batch: int) -> dict:
    """CPU ms per image of hashing/probing and of the input pipeline alone (after its first batch, no model)."""
    from hemoembed.data.imageio import probe_many
    from hemoembed.data.pipeline import inference_dataset

    with _Clock() as probing:
        probe_many(paths)
    batches = iter(inference_dataset(paths, record, batch))
    next(batches)
    with _Clock() as pipeline:
        rest = sum(len(indices) for _, indices in batches)
    return {"probe": round(1000 * probing.cpu / len(paths), 3), "pipeline": round(1000 * pipeline.cpu / rest, 3)}


def measure(manifest, size: int, version: int, batch: int, repeats: int, workdir: Path,
            view_average: str = "none") -> dict:
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder
    from hemoembed.store.embed import embed_images

    record = PreprocessingRecord(image_size=size, version=version)
    model = build_encoder(record, weights="none", view_average=view_average)
    embed_images(model, record, manifest.absolute()[:batch], batch)  # warm-up: trace, fill caches
    fwd, e2e, inputs = [], [], []
    for _ in range(repeats):  # interleaved, so background load hits all alike
        fwd.append(forward_only(model, size, len(manifest), batch))
        e2e.append(end_to_end(model, record, manifest, batch, workdir))
        inputs.append(input_only(record, manifest.absolute(), batch))
    best_f, best_e = max(f[0] for f in fwd), max(e[0] for e in e2e)
    cpu_f, cpu_e = min(f[1] for f in fwd), min(e[1] for e in e2e)
    return {"image_size": size, "record_version": version, "view_average": view_average,
            "images": len(manifest), "batch_size": batch,
            "forward_images_per_s": round(best_f, 2), "embed_images_per_s": round(best_e, 2),
            "ratio": round(best_e / best_f, 3),
            "forward_cpu_ms_per_image": round(cpu_f, 3), "embed_cpu_ms_per_image": round(cpu_e, 3),
            "cpu_ratio": round(cpu_f / cpu_e, 3), "embed_fixed_cpu_s": round(min(e[2] for e in e2e), 2),
            "input_cpu_ms": {k: min(i[k] for i in inputs) for k in inputs[0]},
            "all_forward_images_per_s": [round(f[0], 2) for f in fwd],
            "all_embed_images_per_s": [round(e[0], 2) for e in e2e],
            "cpu_ratio_median": round(statistics.median(f[1] / e[1] for f, e in zip(fwd, e2e)), 3),
            "all_cpu_ratios": [round(f[1] / e[1], 3) for f, e in zip(fwd, e2e)]}


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
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    parser.add_argument("--versions", type=int, nargs="+", default=[2],
                        help="Preprocessing-record versions to measure (1: before #18, 2: current).")
    parser.add_argument("--view-averages", nargs="+", default=["none"], choices=VIEW_AVERAGES,
                        help="Encoders to measure: plain, or averaging the eight dihedral views (eight passes).")
    parser.add_argument("--n", type=int, default=1024, help="Images per measurement (a seeded sample).")
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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(manifest, size, version, args.batch_size, args.repeats, Path(tmp), view_average)
                   for size in args.sizes for version in args.versions for view_average in args.view_averages]
    reading = store_reading(args.store) if args.store is not None else None
    print(json.dumps({
        "benchmark": "embed_throughput", "machine": platform.node(), "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()], "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")), "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results, "store_reading": reading,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
