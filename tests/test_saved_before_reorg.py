"""Files saved before the tasks/ reorganisation (issue 14) load unchanged and predict what they predicted.

``fixtures/saved_before_reorg`` was written by the code at b286855: two SVM folders (skops, sklearn types
only) with their probabilities on six inputs, and a small model holding every hemoembed Keras layer
(registered names ``hemoembed>...``) with its outputs.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import FIXTURES

SAVED = FIXTURES / "saved_before_reorg"


@pytest.mark.parametrize("solver", ["sgd", "libsvm"])
def test_svm_saved_before_the_move_loads_and_predicts_the_same(solver):
    from hemoembed.tasks.svm import load_svm

    model, meta = load_svm(SAVED / f"svm_{solver}", fingerprint="f" * 64)
    assert meta["solver"] == solver and model.classes_.tolist() == ["a", "b", "c"]
    expected = np.load(SAVED / f"svm_{solver}" / "expected_proba.npy")
    np.testing.assert_allclose(model.predict_proba(np.load(SAVED / "svm_inputs.npy")), expected, atol=1e-12)


def test_keras_layers_saved_before_the_move_load_in_safe_mode_in_a_fresh_process():
    code = ("import numpy as np, hemoembed, keras\n"
            f"m = keras.saving.load_model({str(SAVED / 'layers.keras')!r}, safe_mode=True)\n"
            f"x = np.load({str(SAVED / 'layers_inputs.npy')!r})\n"
            f"np.testing.assert_allclose(m.predict(x, verbose=0), np.load({str(SAVED / 'layers_expected.npy')!r}),"
            " rtol=1e-5, atol=1e-6)\n"
            "print('OK', sorted(type(layer).__name__ for layer in m.layers))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-1500:]
    assert "GrayWorld" in run.stdout and "ReinhardNormalization" in run.stdout and "L2Normalize" in run.stdout
