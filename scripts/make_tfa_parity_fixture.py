"""Record tensorflow-addons 0.23 triplet-loss values as the parity fixture for hemoembed.model.losses.

tensorflow-addons is end of life and does not import under Keras 3, so this script runs once, by hand,
in a throw-away virtualenv with the last TensorFlow it supports:

    python3.11 -m venv /tmp/tfa_env
    /tmp/tfa_env/bin/pip install "tensorflow==2.15.*" "tensorflow-addons==0.23.0"
    /tmp/tfa_env/bin/python scripts/make_tfa_parity_fixture.py        # from the repository root

It writes ``tests/fixtures/tfa_parity.json``: per case only the parameters (seed, batch, dim, classes,
label/embedding scheme, dtype, loss, soft, margin, distance), a sha256 of the generated inputs and tfa's
loss (``tfa_loss``; null with ``tfa_special`` "nan" or "inf" where tfa returns a non-finite value).
Inputs come from ``tests/tfa_parity_inputs.py`` (pure numpy, imported by path so that nothing
from hemoembed or Keras 3 is loaded here); ``tests/test_losses.py`` regenerates them, checks the sha256
and compares our native losses with the recorded values.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "fixtures" / "tfa_parity.json"


def _load_inputs_module():
    spec = importlib.util.spec_from_file_location("tfa_parity_inputs", ROOT / "tests" / "tfa_parity_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KEYS = ("seed", "batch", "dim", "n_classes", "labels", "embeddings", "dtype", "loss", "soft", "margin", "distance")


def build_cases() -> list[dict]:
    """Every (shape, loss, distance) combination, cycling margins and normalised/unnormalised inputs."""
    shapes = [  # batch, dim, classes, label scheme
        (4, 2, 2, "random"),
        (10, 8, 3, "random"),
        (32, 16, 4, "random"),
        (64, 128, 8, "random"),
        (100, 64, 50, "two_view"),
        (200, 1280, 100, "two_view"),
    ]
    variants = list(itertools.product([("semihard", False), ("hard", False), ("hard", True)],
                                      ["L2", "squared-L2", "angular"]))
    margins = [0.2, 0.5, 1.0]
    rows = []
    for s, (batch, dim, classes, label_scheme) in enumerate(shapes):
        for k, ((loss, soft), distance) in enumerate(variants):
            rows.append((1000 + 10 * s + k, batch, dim, classes, label_scheme, ("normal", "l2")[(s + k) % 2],
                         "float32", loss, soft, margins[(s + k) % 3], distance))
    for k, ((loss, soft), distance) in enumerate(variants):
        # No positive pair (tfa's semi-hard divides by zero: NaN) and exact ties between duplicates.
        rows.append((2000 + k, 8, 4, 8, "unique", "normal", "float32", loss, soft, margins[k % 3], distance))
        rows.append((3000 + k, 12, 3, 3, "random", "grid", "float32", loss, soft, margins[k % 3], distance))
    for k, ((loss, soft), _) in enumerate(variants[::3]):
        # Mixed precision: tfa computes in float32 and casts the result back to float16.
        rows.append((4000 + k, 100, 64, 50, "two_view", "l2", "float16", loss, soft, 0.5, "L2"))
    return [dict(zip(KEYS, row)) for row in rows]


def tfa_loss(case: dict, labels: np.ndarray, embeddings: np.ndarray) -> float:
    y, x = tf.constant(labels), tf.constant(embeddings)
    if case["loss"] == "semihard":
        value = tfa.losses.triplet_semihard_loss(y, x, margin=case["margin"], distance_metric=case["distance"])
    else:
        value = tfa.losses.triplet_hard_loss(y, x, margin=case["margin"], soft=case["soft"],
                                             distance_metric=case["distance"])
    return float(value.numpy())


def main() -> None:
    inputs = _load_inputs_module()
    records = []
    for case in build_cases():
        params = {k: case[k] for k in KEYS[:7]}
        labels, embeddings = inputs.make_inputs(**params)
        value = tfa_loss(case, labels, embeddings)
        special = None if math.isfinite(value) else str(value)  # "nan" (no positive pair) or "inf"
        record = dict(case, sha256=inputs.inputs_sha256(labels, embeddings),
                      tfa_loss=value if special is None else None, tfa_special=special)
        if case["dtype"] != "float32":  # tfa's float32 value before its final cast back to float16
            record["tfa_loss_float32"] = tfa_loss(case, labels, embeddings.astype(np.float32))
        records.append(record)
        print(f"{case['loss']:8s} soft={case['soft']!s:5s} {case['distance']:10s} B={case['batch']:3d} "
              f"D={case['dim']:4d} {case['embeddings']:6s} {case['dtype']}: {value}", file=sys.stderr)
    fixture = {
        "generator": "scripts/make_tfa_parity_fixture.py",
        "versions": {"tensorflow": tf.__version__, "tensorflow_addons": tfa.__version__,
                     "numpy": np.__version__},
        "cases": records,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUTPUT.with_name(f".{OUTPUT.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(fixture, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, OUTPUT)
    print(f"wrote {len(records)} cases to {OUTPUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
