"""Does a preprocessing-record version change what the embedding knows? Linear-probe macro-F1, same weights.

For each encoder (a saved ``encoder.keras``, or ``random:SIZE`` for a seeded random-init encoder) the same
weights are embedded under record version 1 and version 2 (everything else in the record equal) on a seeded,
class-stratified PBC sample, and the project's linear probe (``EmbeddingSVM``: standardise, SGD hinge SVM,
sigmoid calibration) is fitted on a stratified 75 % and scored on the rest (macro-F1). ``diff`` = version 2 −
version 1 on the same test images with a paired bootstrap 95 % interval (1,000 resamples): "no loss" means
the interval reaches 0 or above. An encoder trained under version 1 is at a disadvantage under version 2
(its training saw version-1 inputs), so no loss here is the stricter check. Prints JSON.

    .venv/bin/python benchmarks/preprocessing_probe.py ../shared/data/pbc256 --n 6000 \\
        --encoders /work/runs/abl/candidate_s0/encoder.keras random:128
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def stratified_sample(labels: list[str], n: int, seed: int) -> list[int]:
    """``n`` positions drawn in proportion to each class (seeded), sorted."""
    from hemoembed.tasks.common.splits import stratified_test_split

    if n >= len(labels):
        return list(range(len(labels)))
    return stratified_test_split(labels, n / len(labels), seed=seed)[1].tolist()


def encoders(spec: str):
    """(name, {version: model}) with the same weights under record versions 1 and 2."""
    import dataclasses

    import keras

    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import build_encoder, load_encoder

    if spec.startswith("random:"):
        keras.utils.set_random_seed(0)
        record = PreprocessingRecord(int(spec.split(":")[1]), version=1)
        source = build_encoder(record, "none")
    else:
        source, record = load_encoder(spec)
    models = {record.version: source}
    for version in (1, 2):
        if version not in models:
            twin = build_encoder(dataclasses.replace(record, version=version), "none")
            twin.set_weights(source.get_weights())
            models[version] = twin
    return spec, models


def probe(X, y, train, test, seed: int):
    from hemoembed.tasks.svm.estimator import EmbeddingSVM

    return EmbeddingSVM(random_state=seed).fit(X[train], y[train]).predict(X[test])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="Folder of class folders (e.g. ../shared/data/pbc256)")
    parser.add_argument("--encoders", nargs="+", required=True, help="encoder.keras paths and/or random:SIZE")
    parser.add_argument("--n", type=int, default=6000, help="Images in the stratified sample.")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np
    from sklearn.metrics import f1_score

    from hemoembed.data.manifest import load_manifest
    from hemoembed.model.encoder import preprocessing_record
    from hemoembed.store.embed import embed_images
    from hemoembed.tasks.common.splits import stratified_test_split

    full = load_manifest(args.images)
    manifest = full.subset(stratified_sample(full.labels, args.n, args.seed))
    y = np.asarray(manifest.labels)
    train, test = stratified_test_split(y, args.test_fraction, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    resamples = [rng.integers(0, len(test), len(test)) for _ in range(1000)]
    rows = []
    for spec in args.encoders:
        name, models = encoders(spec)
        preds, cpu = {}, {}
        for version, model in sorted(models.items()):
            start = time.process_time()
            X, ok = embed_images(model, preprocessing_record(model), manifest.absolute(), args.batch_size)
            cpu[version] = round(time.process_time() - start, 1)
            if len(ok) != len(manifest):
                raise SystemExit(f"{name}: {len(manifest) - len(ok)} images could not be embedded")
            preds[version] = probe(X, y, train, test, args.seed)
        truth = y[test]
        f1 = {v: float(f1_score(truth, p, average="macro")) for v, p in preds.items()}
        diffs = [f1_score(truth[r], preds[2][r], average="macro") - f1_score(truth[r], preds[1][r], average="macro")
                 for r in resamples]
        rows.append({"encoder": name, "image_size": preprocessing_record(models[1]).image_size,
                     "macro_f1_v1": round(f1[1], 4), "macro_f1_v2": round(f1[2], 4),
                     "diff": round(f1[2] - f1[1], 4),
                     "diff_ci95": [round(float(np.percentile(diffs, q)), 4) for q in (2.5, 97.5)],
                     "embed_cpu_s": cpu})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"benchmark": "preprocessing_probe", "machine": platform.node(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d %H:%M"), "images": len(manifest), "train": len(train),
                      "test": len(test), "load_average": [round(v, 2) for v in os.getloadavg()],
                      "results": rows}, indent=2))


if __name__ == "__main__":
    main()
