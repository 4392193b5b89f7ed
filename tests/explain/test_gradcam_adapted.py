"""GradCAM++ on an adapter's encoder, whose backbone sits one level deeper (colour layers → the source encoder →
EfficientNetV2): the maps are the gradients of the adapted encoder's own output, i.e. the source encoder's maps
on the colour-transformed input; the CLI explains ``adapt``'s ``encoder.keras`` copy and ``encoder.json``
reference alike, and ``pretrain --weights`` starts from the reference (real encoders, random weights)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import make_sites

from hemoembed.data.colour import ReinhardReference
from hemoembed.data.preprocess import PreprocessingRecord, load_inputs
from hemoembed.data.synthetic import CLASSES, render_cell, site_style
from hemoembed.explain.gradcam import explain_pair, explain_triplet
from hemoembed.model.adapted import adapted_encoder
from hemoembed.model.encoder import backbone_chain, backbone_of, build_encoder, load_encoder
from hemoembed.model.layers import GrayWorld, L2Normalize, PreprocessingSpec, ReinhardNormalization

SIZE = 64  # 2x2 last activation: a map with a place in it, still cheap
RECORD = PreprocessingRecord(SIZE, 1.0, "grayworld")
# the source site's colours (site 0), which the adapter transfers site 1's images to
STYLE = ReinhardReference.from_images([render_cell(np.random.default_rng(9), cls, site_style(0, 0), SIZE)
                                       for cls in CLASSES])


def colour_transformed(images: np.ndarray, reinhard: ReinhardNormalization | None) -> np.ndarray:
    """What the source encoder sees inside the adapted one: Reinhard (if any), then gray world; fresh layers."""
    x = images if reinhard is None else ReinhardNormalization(reinhard.mean, reinhard.std)(images)
    return np.asarray(GrayWorld()(x))


def test_adapted_maps_are_the_source_maps_on_the_colour_transformed_input():
    keras.utils.set_random_seed(0)
    source = build_encoder(RECORD, "none")
    adapted, record = adapted_encoder(source, RECORD, STYLE)
    before, backbone, after = backbone_chain(adapted)
    assert [type(layer) for layer in before] == [PreprocessingSpec, ReinhardNormalization, GrayWorld,
                                                 PreprocessingSpec]
    assert backbone is backbone_of(source) and backbone.output.shape[1:] == (2, 2, 1280)
    assert [type(layer) for layer in after] == [keras.layers.GlobalAveragePooling2D, keras.layers.Dropout,
                                                L2Normalize]
    rng = np.random.default_rng(0)
    raw = np.stack([render_cell(rng, cls, site_style(1, 0), SIZE) for cls in CLASSES[:3]]).astype(np.float32)
    seen = colour_transformed(raw, adapted.get_layer("reinhard"))
    assert np.abs(seen - raw).mean() > 20  # the colour layers change the input a lot

    got, want = explain_triplet(adapted, *raw), explain_triplet(source, *seen)
    assert got.maps.shape == (3, 2, 2) and got.maps.max() > 0
    np.testing.assert_allclose(got.maps, want.maps, rtol=1e-3, atol=1e-6 * want.maps.max())
    e = adapted(raw, training=False).numpy()  # the score is the adapted encoder's own margin
    assert got.score[0] == pytest.approx(np.linalg.norm(e[0] - e[2]) - np.linalg.norm(e[0] - e[1]), abs=1e-4)
    skipped = explain_triplet(source, *raw)  # what a map that ignored the colour layers would show
    assert not np.allclose(skipped.maps, want.maps, rtol=0.05)

    pair, plain = explain_pair(adapted, raw[0], raw[1], "distance"), explain_pair(source, seen[0], seen[1], "distance")
    np.testing.assert_allclose(pair.maps, plain.maps, rtol=1e-3, atol=1e-6 * plain.maps.max())


@pytest.fixture(scope="module")
def adapted_runs(tmp_path_factory) -> dict:
    """``adapt`` (svm mode) run twice through the CLI on synthetic sites, writing the encoder as a copy and as
    a reference; a 64-px source encoder."""
    from helpers import built_once, invoke_cli, site_paths

    def build(root: Path) -> None:
        sites = make_sites(root, n_per_class=4, size=SIZE, image_size=SIZE)
        for how in ("copy", "reference"):
            result = invoke_cli("adapt", "--source", sites["run"], "--target", sites["site1"], "--source-images",
                                sites["site0"], "--shots", 10, "--mode", "svm", "--bootstrap", 20,
                                "--save-encoder", how, "--out", root / how)
            assert result.exit_code == 0, result

    root = built_once(tmp_path_factory, "gradcam-adapted", build)  # once for all workers
    sites = site_paths(root)
    with open(sites["site1"]) as handle:
        rows = list(csv.DictReader(handle))
    images = [sites["site1"].parent / rows[i]["path"] for i in (0, 1, len(rows) - 1)]  # two of a class, another
    return {"root": root, "sites": sites, "images": images, "copy": root / "copy" / "encoder.keras",
            "reference": root / "reference" / "encoder.json"}


@pytest.mark.slow
def test_cli_gradcam_explains_adapted_encoders_copy_and_reference(adapted_runs, tmp_path, cli):
    anchor, positive, negative = adapted_runs["images"]
    maps = {}
    for how in ("copy", "reference"):
        out = tmp_path / how
        result = cli("gradcam", adapted_runs[how], anchor, "--against", positive, "--against", negative, "--out", out)
        assert result.exit_code == 0, result
        rows = list(csv.DictReader(open(out / "results.csv")))
        assert [r["role"] for r in rows] == ["anchor", "positive", "negative"]
        maps[how] = np.stack([np.load(out / r["map"], allow_pickle=False) for r in rows])
    np.testing.assert_array_equal(maps["copy"], maps["reference"])  # the same model, the same maps
    adapted, record = load_encoder(adapted_runs["reference"])
    source, _ = load_encoder(adapted_runs["sites"]["run"] / "encoder.keras")
    raw = load_inputs([anchor, positive, negative], record)
    want = explain_triplet(source, *colour_transformed(raw, adapted.get_layer("reinhard")))
    np.testing.assert_allclose(maps["copy"], want.maps, rtol=1e-3, atol=1e-6 * want.maps.max())

    out = tmp_path / "svm"  # the adapter's own SVM explains its class decisions on its encoder
    result = cli("gradcam", adapted_runs["reference"], anchor, "--model", adapted_runs["root"] / "reference",
                 "--class", anchor.parent.name, "--out", out)
    assert result.exit_code == 0, result
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows[0]["target"] == f"decision:{anchor.parent.name}" and rows[0]["predicted"]


@pytest.mark.slow
def test_pretrain_starts_from_an_adapted_encoder(adapted_runs, tmp_path, cli):
    """The weights themselves: tests/model/test_adapted.py; here the command as a user types it."""
    result = cli("pretrain", adapted_runs["sites"]["site0"], "--out", tmp_path / "run", "--weights",
                 adapted_runs["reference"], "--image-size", SIZE, "--epochs", 1, "--batch-size", 8)
    assert result.exit_code == 0, result
    assert json.loads((tmp_path / "run" / "config.json").read_text())["weights"] == str(adapted_runs["reference"])
    assert (tmp_path / "run" / "encoder.keras").is_file()
