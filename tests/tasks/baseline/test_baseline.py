"""Supervised baseline: stage schedule, balanced weights, BatchNorm frozen in fine-tuning, shared reports."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hemoembed.tasks.baseline import BaselineConfig, balanced_class_weights, schedule


def test_schedule_and_class_weights():
    config = BaselineConfig()
    assert schedule(450, config) == [("head", 30, 1e-3)]
    assert schedule(451, config) == [("head", 10, 1e-3), ("finetune", 20, 1e-5)]
    weights = balanced_class_weights([0, 0, 0, 1], 2)
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    counts = np.bincount([0, 0, 0, 1])
    assert sum(weights[k] * counts[k] for k in weights) == pytest.approx(4)  # total weight = n_samples


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    from hemoembed.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("baseline")
    make_synthetic_dataset(root / "cells", n_per_class=6, sites=1, size=32, seed=1)
    return root


@pytest.mark.slow
def test_two_stages_keep_batchnorm_frozen(cells, tmp_path):
    import keras

    from hemoembed.data.manifest import load_manifest
    from hemoembed.tasks.baseline import MODEL_FILE, train_baseline

    manifest = load_manifest(cells / "cells" / "manifest.csv")
    train, test = manifest.subset(range(0, 30, 2)), manifest.subset(range(1, 30, 2))
    config = BaselineConfig(image_size=32, batch_size=8, head_epochs=1, finetune_epochs=1, small_threshold=0,
                            n_bootstrap=50)
    epochs = []
    report = train_baseline(config, train, train.labels, test, test.labels, tmp_path,
                            on_epoch=lambda stage, epoch, logs: epochs.append((stage, epoch, "loss" in logs)))
    assert epochs == [("head", 0, True), ("finetune", 0, True)]
    assert config.stages == ["head:1@0.001", "finetune:1@1e-05"]
    assert report["n_test"] == 15 and sum(r["support"] for r in report["per_class"]) == 15
    assert report["model"]["class_weights"] == pytest.approx({c: 1.0 for c in report["classes"]})
    for name in ("report.json", "per_class.csv", "confusion.png", "pr_curves.png", "baseline_config.json"):
        assert (tmp_path / name).is_file()
    model = keras.saving.load_model(tmp_path / MODEL_FILE, safe_mode=True, compile=False)
    bn = [layer for layer in model.get_layer("efficientnetv2-b0").layers
          if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(not layer.trainable for layer in bn)
    # BatchNorm statistics of an untrained network stay at their initial values through both stages
    np.testing.assert_array_equal(bn[0].moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(bn[0].moving_variance.numpy(), 1.0)
    proba = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    assert proba.shape == (1, 5) and proba.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_baseline_command_small_run_head_only(cells, tmp_path):
    from click.testing import CliRunner

    from hemoembed.cli import main

    res = CliRunner().invoke(main, ["baseline", str(cells / "cells"), "--image-size", "32", "--batch-size", "8",
                                    "--small-head-epochs", "1", "--test-fraction", "0.2", "--bootstrap", "50",
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "stages head:1@0.001)" in res.output  # 24 training images ≤ 450: no fine-tuning
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "run" / "per_class.csv")))
    assert report["n_test"] == 6 == sum(int(r["support"]) for r in rows)
    assert report["model"]["n_train"] == 24 and report["model"]["stages"] == ["head:1@0.001"]
