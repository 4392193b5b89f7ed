"""GradCAM++ for the triplet encoder: the formula, the split forward pass, targets, and a known answer."""
from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_readable_png, run_script
from PIL import Image

from hemoembed.data.imageio import save_png
from hemoembed.data.preprocess import PreprocessingRecord, load_inputs
from hemoembed.data.synthetic import render_cell, site_style
from hemoembed.errors import InputError
from hemoembed.explain.gradcam import (
    LinearDecision,
    explain_class,
    explain_pair,
    explain_triplet,
    gradcam_plus_plus,
    overlay,
)
from hemoembed.model.encoder import backbone_chain, build_encoder

SIZE = 224  # 7x7 last activation, as in the paper's setting
RECORD = PreprocessingRecord(SIZE, 1.0, "none")  # no crop, no colour change: pixel regions map 1:1


@pytest.fixture(scope="module")
def encoder() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_encoder(RECORD, weights="none")


def changed_pair(tmp_path, cls: str, row: int, col: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two PNG files identical except for a textured 64x64 patch on the 32-px grid cells (row, col)+1."""
    base = render_cell(np.random.default_rng(0), cls, site_style(0, 0), SIZE)
    other = base.copy()
    yy, xx = np.mgrid[0:64, 0:64]
    checker = (((yy // 8) + (xx // 8)) % 2)[..., None]
    other[row * 32:row * 32 + 64, col * 32:col * 32 + 64] = np.where(checker, [230, 230, 230], [40, 20, 90])
    save_png(base, tmp_path / f"{cls}_a.png")
    save_png(other, tmp_path / f"{cls}_b.png")
    a, b = load_inputs([tmp_path / f"{cls}_a.png", tmp_path / f"{cls}_b.png"], RECORD)
    region = np.zeros((7, 7), bool)
    region[row:row + 2, col:col + 2] = True
    return a, b, region


def test_gradcam_plus_plus_formula_by_hand():
    a = np.array([[[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, 1.0]]]], np.float32)  # (1, 2, 2, 2)
    g = np.array([[[[0.5, -1.0], [0.5, -1.0]], [[0.5, -1.0], [0.5, -1.0]]]], np.float32)
    got = gradcam_plus_plus(tf.constant(a), tf.constant(g)).numpy()
    # channel 0: sum A = 5, alpha = 0.25 / (0.5 + 5 * 0.125) = 0.2222, w = 4 * 0.2222 * 0.5; channel 1: relu(g) = 0
    w0 = 4 * (0.25 / (0.5 + 5 * 0.125)) * 0.5
    np.testing.assert_allclose(got[0], w0 * a[0, ..., 0], rtol=1e-6)


def test_split_forward_equals_the_encoder(encoder, tmp_path):
    before, backbone, after = backbone_chain(encoder)
    assert backbone.output.shape[1:] == (7, 7, 1280)
    x = load_inputs([save_cell(tmp_path, "monocyte")], RECORD)
    y = tf.convert_to_tensor(x)
    for layer in [*before, backbone, *after]:
        y = layer(y, training=False)
    np.testing.assert_allclose(y.numpy(), encoder(x, training=False).numpy(), atol=1e-5)


def save_cell(tmp_path, cls: str):
    path = tmp_path / f"{cls}.png"
    save_png(render_cell(np.random.default_rng(3), cls, site_style(0, 0), SIZE), path)
    return path


@pytest.mark.parametrize("cls,row,col", [("lymphocyte", 1, 1), ("neutrophil", 4, 2)])
def test_map_concentrates_where_the_two_images_differ(encoder, tmp_path, cls, row, col):
    a, b, region = changed_pair(tmp_path, cls, row, col)
    area = region.mean()  # 4 of 49 cells
    pair = explain_pair(encoder, a, b, "distance")
    assert pair.maps.shape == (2, 7, 7) and pair.score[0] > 0
    changed = pair.maps[1]
    assert changed[region].sum() / changed.sum() > 3.5 * area
    assert region.flat[changed.argmax()]
    triplet = explain_triplet(encoder, a, a + np.random.default_rng(1).normal(0, 2, a.shape).astype(np.float32), b)
    negative = triplet.maps[2]
    assert negative[region].sum() / negative.sum() > 3.5 * area
    assert triplet.score[0] == pytest.approx(
        np.linalg.norm(_embed(encoder, a) - _embed(encoder, b))
        - np.linalg.norm(_embed(encoder, a) - _embed(encoder, triplet.images[1].astype(np.float32))), abs=2e-3)
    up = pair.upsampled()
    assert up.shape == (2, SIZE, SIZE) and up.max() == pytest.approx(1.0)


def _embed(encoder, image):
    return encoder(image[None], training=False).numpy()[0]


def test_similarity_of_identical_images_is_one(encoder, tmp_path):
    x = load_inputs([save_cell(tmp_path, "basophil")], RECORD)[0]
    result = explain_pair(encoder, x, x, "similarity")
    assert result.score[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="not one of similarity, distance"):
        explain_pair(encoder, x, x, "margin")


@pytest.mark.parametrize("solver,classes", [("liblinear", "abc"), ("libsvm", "abc"), ("liblinear", "ab")])
def test_svm_decision_target_matches_the_saved_model(encoder, tmp_path, solver, classes):
    from hemoembed.tasks.svm import EmbeddingSVM

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1280)).astype(np.float32)
    y = np.array(list(classes) * (60 // len(classes)))
    X[y == "b", :10] += 1.0
    svm = EmbeddingSVM(solver=solver).fit(X, y)
    svm.save(tmp_path / "svm", fingerprint="f" * 64, column="label")
    decision = LinearDecision.from_svm(tmp_path / "svm", "f" * 64)
    assert decision.classes == tuple(classes)
    scores = np.stack([decision.numpy_value(X[:8], c) for c in classes], axis=1)
    raw = svm.decision_function(X[:8])
    if len(classes) == 2:
        np.testing.assert_allclose(scores[:, 1], raw, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(scores[:, 0], -raw, rtol=1e-4, atol=1e-4)
    elif solver == "liblinear":
        np.testing.assert_allclose(scores, raw, rtol=1e-4, atol=1e-4)
    else:  # one-vs-one: same ranking as sklearn's vote-plus-confidence scores wherever votes do not tie
        votes = np.floor(raw + 0.5)
        confidence = (raw - votes) * 3
        np.testing.assert_allclose(confidence, scores / (np.abs(scores) + 1), atol=1e-4)
    with pytest.raises(InputError, match="--class 'z' is not one of"):
        decision.column("z")

    images = load_inputs([save_cell(tmp_path, "eosinophil")], RECORD)
    result = explain_class(encoder, images, decision, "b")
    assert result.maps.shape == (1, 7, 7) and (result.maps >= 0).all()
    assert result.score[0] == pytest.approx(decision.numpy_value(_embed(encoder, images[0])[None], "b")[0], abs=1e-3)


def test_overlay_blends_the_colour_map():
    image = np.full((8, 8, 3), 100, np.uint8)
    cam = np.zeros((8, 8))
    cam[:4] = 1.0
    out = overlay(image, cam, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0, 0] > out[0, 0, 2]  # 'jet' at 1.0 is red
    assert out[7, 7, 2] > out[7, 7, 0]  # 'jet' at 0.0 is blue


def test_cli_writes_overlays_raw_maps_and_a_panel(tmp_path, cli):
    from hemoembed.model.encoder import save_encoder

    keras.utils.set_random_seed(0)
    save_encoder(build_encoder(PreprocessingRecord(64, 0.875, "grayworld"), weights="none"), tmp_path / "enc.keras")
    files = []
    for i, cls in enumerate(("lymphocyte", "lymphocyte", "neutrophil")):
        files.append(tmp_path / f"{i}_{cls}.png")
        save_png(render_cell(np.random.default_rng(i), cls, site_style(0, 0), 72), files[-1])
    result = cli("gradcam", tmp_path / "enc.keras", files[0], "--against", files[1], "--against", files[2],
                 "--out", tmp_path / "cams")
    assert result.exit_code == 0, result
    rows = list(csv.DictReader(open(tmp_path / "cams" / "results.csv")))
    assert [r["role"] for r in rows] == ["anchor", "positive", "negative"]
    assert {r["target"] for r in rows} == {"margin"} and {r["predicted"] for r in rows} == {""}
    raw = np.load(tmp_path / "cams" / rows[2]["map"], allow_pickle=False)
    assert raw.shape == (2, 2) and (raw >= 0).all()  # 64 px input: 2x2 last activation
    shown = np.asarray(Image.open(tmp_path / "cams" / rows[0]["input"]), np.float64).reshape(-1, 3).mean(axis=0)
    source = np.asarray(Image.open(files[0]), np.float64).reshape(-1, 3).mean(axis=0)
    assert np.abs(shown - source).max() < 6 and np.ptp(shown) > 10  # raw colours, not gray-world's equal means
    assert_readable_png(tmp_path / "cams" / "panel.png")
    redrawn = run_script("fig_gradcam.py", tmp_path / "cams", "--out", tmp_path / "fig.png")
    assert redrawn.stdout.strip() == str(tmp_path / "fig.png")
    assert_readable_png(tmp_path / "fig.png")

    result = cli("gradcam", tmp_path / "enc.keras", files[0], "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "--against" in result.stderr and "Traceback" not in result.stderr


def test_panel_names_classes_explains_the_score_and_has_a_colour_bar():
    from hemoembed.explain.cams import cam_figure

    image = render_cell(np.random.default_rng(0), "basophil", site_style(0, 0), 64)
    items = [{"explanation": str(e), "role": "image", "image": f"cells/basophil/{e}.png", "target": "decision:basophil",
              "score": "1.5", "predicted": predicted, "input": image, "overlay": image}
             for e, predicted in enumerate(["basophil", "monocyte"])]
    fig = cam_figure(items)
    titles = [ax.get_title() for ax in fig.axes]
    assert "image (basophil)\n0.png" in titles and "SVM predicts monocyte\nscore 1.500" in titles
    assert "the SVM's decision value for class basophil" in fig._suptitle.get_text()
    assert any("importance" in ax.get_ylabel() for ax in fig.axes)  # the colour bar says what the colours mean


def test_pairwise_decision_of_the_active_learning_svm():
    """``LinearDecision.from_pairs`` on an IncrementalLinearSVM: a class's value is the sum of its pairwise
    margins (on standardised inputs), and the largest value is its one-vs-one winner on clear cases."""
    from hemoembed.data.synthetic_embeddings import structured_embeddings
    from hemoembed.tasks.active import IncrementalLinearSVM

    X, y = structured_embeddings(200, dim=12, n_classes=3, seed=3, hard_fraction=0.0)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    model = IncrementalLinearSVM().fit((X - mean) / scale, y)
    decision = LinearDecision.from_pairs(model.classes_, model.pairs_, model.pair_coef_, model.pair_intercept_,
                                            mean, scale)
    margins = model.pairwise_decision((X - mean) / scale)
    expected = np.zeros((len(X), 3))
    for k, (i, j) in enumerate(model.pairs_):
        expected[:, i] += margins[:, k]
        expected[:, j] -= margins[:, k]
    values = np.stack([decision.numpy_value(X, c) for c in decision.classes], axis=1)
    np.testing.assert_allclose(values, expected, atol=1e-4)
    assert (np.asarray(decision.classes)[values.argmax(axis=1)] == model.predict((X - mean) / scale)).mean() > 0.95
