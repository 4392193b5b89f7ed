"""hemoembed probe: the same linear SVM on an embedding and on its baselines, the same splits, chance."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hemoembed.data.synthetic_embeddings import structured_embeddings
from hemoembed.errors import InputError
from hemoembed.tasks.probe import chance, linear_probe, probe_splits, verdict


def test_chance_is_a_guess_in_the_class_proportions():
    assert chance(["a"] * 5 + ["b"] * 5) == {"accuracy": 0.5, "macro_f1": 0.5}
    guess = chance(["a"] * 8 + ["b"] * 2)
    assert guess["accuracy"] == pytest.approx(0.68) and guess["macro_f1"] == pytest.approx(0.5)


def test_a_structured_embedding_beats_noise_on_the_same_splits():
    X, y = structured_embeddings(300, dim=32, n_classes=4, seed=0)
    noise = np.random.default_rng(1).normal(size=X.shape)
    scores = linear_probe({"embedding": X, "noise": noise}, y, repeats=3, test_fraction=0.25, seed=0)
    assert set(scores) == {"embedding", "noise", "chance"}
    assert scores["embedding"]["accuracy_mean"] > 0.9
    assert abs(scores["noise"]["accuracy_mean"] - 0.25) < 0.12 and scores["chance"]["macro_f1_mean"] == 0.25
    assert len(scores["embedding"]["accuracy"]) == 3
    again = linear_probe({"embedding": X}, y, repeats=3, test_fraction=0.25, seed=0)
    assert again["embedding"]["accuracy"] == scores["embedding"]["accuracy"]  # seeded splits and SVMs
    splits = probe_splits(y, 3, 0.25, seed=0)
    assert all(len(np.intersect1d(train, test)) == 0 for train, test in splits)


def test_verdict_says_which_baseline_is_beaten():
    def summary(encoder, pixels, random):
        return {"scores": {n: {"accuracy_mean": v} for n, v in
                           (("encoder", encoder), ("raw pixels", pixels), ("random encoder", random))}}

    assert verdict(summary(0.9, 0.8, 0.7)).startswith("the embedding beats both baselines (accuracy +0.100 vs")
    assert "does NOT beat" in verdict(summary(0.6, 0.8, 0.7))
    assert verdict(summary(0.75, 0.8, 0.7)).startswith("the embedding beats only the random encoder")


def test_bad_input_is_refused():
    X, y = structured_embeddings(40, dim=8, n_classes=2, seed=0)
    with pytest.raises(InputError, match="--test-fraction 1.5"):
        linear_probe({"e": X}, y, test_fraction=1.5)
    with pytest.raises(InputError, match="e: 39 rows for 40 labels"):
        linear_probe({"e": X[:-1]}, y)
    with pytest.raises(InputError, match="needs at least 2 classes"):
        linear_probe({"e": X}, ["a"] * 40)


def test_cli_scores_an_encoder_beside_its_baselines(cli, tmp_path, saved_encoder):
    """The session's 32-px random encoder (seed 0) against the probe's random encoder: both untrained."""
    from hemoembed.data.synthetic import make_synthetic_dataset

    _model, encoder = saved_encoder
    make_synthetic_dataset(tmp_path / "cells", n_per_class=8, sites=1, size=40, seed=0)
    result = cli("probe", encoder, tmp_path / "cells", "--repeats", "2", "--out", tmp_path / "probe")
    assert result.exit_code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "linear SVM on held-out images (2 splits, 25% held out each; 40 images, 5 classes)"
    assert [line.split()[0] for line in lines[2:6]] == ["encoder", "random", "raw", "chance"]
    saved = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert saved["n_images"] == 40 and set(saved["scores"]) == {"encoder", "random encoder", "raw pixels", "chance"}
    assert saved["scores"]["raw pixels"]["accuracy_mean"] > saved["scores"]["chance"]["accuracy_mean"]
    assert (tmp_path / "probe" / "probe_config.json").is_file()
    bad = cli("probe", encoder, tmp_path / "cells", "--column", "shape")
    assert bad.exit_code == 2 and "shape" in bad.stderr and "Traceback" not in bad.stderr
