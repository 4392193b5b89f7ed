"""Pretraining throughput: the real JPEG pipeline vs the same train step fed from memory; forward-only.

Prints JSON. ``ratio`` = pipeline images/s ÷ in-memory images/s (goal ≥ 0.85): below it, the input
pipeline, not the model, limits training. Images/s count distinct images (each gives two views).
``cached_ratio``: the same with ``--cache`` (images decoded and colour-normalised once, as every epoch
after the first of ``hemoembed pretrain --cache`` reads them; augmentation still runs per step).
``in_memory_cpu_s_per_image``: process CPU seconds (all threads) per distinct image of the in-memory step,
the figure that does not depend on what else the machine runs. ``--precision`` and ``--jit`` measure the
same step with a mixed-precision policy or XLA; ``--loss``/``--head`` pick the recipe (default: the
``scratch`` preset's).

    .venv/bin/python benchmarks/pretrain_throughput.py ../shared/data/pbc256 --sizes 64 128 --steps 8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _timed(step, batches, warmup: int, cpu: list | None = None) -> float:
    """Seconds per step over ``batches`` after ``warmup`` untimed steps (tracing, pipeline fill); appends the
    process CPU seconds per step to ``cpu`` when given."""
    it = iter(batches)
    for _ in range(warmup):
        float(step(*next(it)))
    start, start_cpu, n = time.perf_counter(), time.process_time(), 0
    for views, labels in it:
        float(step(views, labels))
        n += 1
    if cpu is not None:
        cpu.append((time.process_time() - start_cpu) / max(n, 1))
    return (time.perf_counter() - start) / max(n, 1)


def measure(paths: list[str], size: int, batch: int, steps: int, warmup: int, options: dict) -> dict:
    from hemoembed.model.distribute import precision_policy
    from hemoembed.model.pretrain import resolve_config

    config = resolve_config(weights="none", image_size=size, batch_size=batch, epochs=1, **options)
    with precision_policy(config.precision):
        return _measure(paths, config, steps, warmup)


def _measure(paths: list[str], config, steps: int, warmup: int) -> dict:
    import tensorflow as tf

    from hemoembed.data.pipeline import cache_training_images, multi_view_dataset
    from hemoembed.model.distribute import make_strategy
    from hemoembed.model.pretrain import make_trainer

    size, batch = config.image_size, config.batch_size
    trainer = make_trainer(config, make_strategy("one"), steps + warmup)
    n = (steps + warmup) * batch
    dataset = multi_view_dataset(paths[:n], range(n), config.record, config.augment, batch, 0, 1)
    pipeline = _timed(trainer._train, dataset, warmup)
    cache, kept = cache_training_images(paths[:n], config.record)
    cached = multi_view_dataset([paths[i] for i in kept], range(len(kept)), config.record, config.augment, batch, 0, 1,
                              cache=cache)
    cached_s = _timed(trainer._train, cached, warmup)
    views, labels = next(iter(dataset))
    memory = tf.data.Dataset.from_tensors((views, labels)).repeat(steps + warmup)
    cpu: list[float] = []
    in_memory = _timed(trainer._train, memory, warmup, cpu)
    forward = tf.function(lambda v: trainer.model(v, training=False))
    forward(views)
    start = time.perf_counter()
    for _ in range(steps):
        forward(views).numpy()
    forward_s = (time.perf_counter() - start) / steps
    return {"image_size": size, "batch_images": batch, "steps": steps,
            "pipeline_images_per_s": round(batch / pipeline, 2), "in_memory_images_per_s": round(batch / in_memory, 2),
            "ratio": round(in_memory / pipeline, 3), "cached_pipeline_images_per_s": round(batch / cached_s, 2),
            "cached_ratio": round(in_memory / cached_s, 3), "load_average_1min": round(os.getloadavg()[0], 2),
            "in_memory_cpu_s_per_image": round(cpu[0] / batch, 4), "precision": config.precision, "jit": config.jit,
            "loss": config.loss, "head": config.head,
            "forward_views_per_s": round(2 * batch / forward_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", help="image folder or CSV manifest (e.g. ../shared/data/pbc256)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--loss", default=None)
    parser.add_argument("--head", default=None)
    args = parser.parse_args()
    options = {"precision": args.precision, "jit": args.jit, "loss": args.loss, "head": args.head}

    import numpy as np

    from hemoembed.data.manifest import load_manifest

    paths = load_manifest(args.images).absolute()
    paths = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    results = [measure(paths, s, args.batch_size, args.steps, args.warmup, options) for s in args.sizes]
    print(json.dumps({"benchmark": "pretrain_throughput", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                      "date": time.strftime("%Y-%m-%d"), "results": results}, indent=2))


if __name__ == "__main__":
    main()
