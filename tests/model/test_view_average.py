"""``--view-average dihedral``: the stored encoder embeds the mean of an image's eight symmetric views."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError
from hemoembed.model.encoder import (
    backbone_chain,
    build_encoder,
    fingerprint,
    load_encoder,
    save_encoder,
    view_average_of,
    with_view_average,
)
from hemoembed.model.layers import DIHEDRAL, dihedral_views, undo_dihedral_views
from hemoembed.model.pretrain_config import resolve_config

RECORD = PreprocessingRecord(64, 0.875, "grayworld")  # a 2×2 last feature map: GradCAM maps can turn


def symmetries(x: np.ndarray) -> list[np.ndarray]:
    """The eight dihedral images of a (n, s, s, c) batch, written with NumPy (not the layer's code)."""
    return [np.rot90(y, k, axes=(1, 2)) for y in (x, x[:, :, ::-1]) for k in range(4)]


@pytest.fixture(scope="module")
def plain() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_encoder(RECORD, "none")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")


def test_views_are_the_eight_symmetries_and_undo_turns_them_back(images):
    views = np.asarray(dihedral_views(images))
    assert views.shape == (24, 64, 64, 3)
    got = {views[i * 3:(i + 1) * 3].tobytes() for i in range(len(DIHEDRAL))}
    assert got == {s.tobytes() for s in symmetries(images)}  # each symmetry once, laid out view after view
    back = np.asarray(undo_dihedral_views(views))
    assert back.shape == (8, 3, 64, 64, 3)
    for each in back:
        np.testing.assert_array_equal(each, images)


def test_the_embedding_is_the_normalised_mean_of_the_views_and_exactly_invariant(plain, images):
    averaged = with_view_average(plain)
    want = np.mean([plain(s.copy(), training=False).numpy() for s in symmetries(images)], axis=0)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = averaged(images, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    for turned in symmetries(images)[1:]:
        np.testing.assert_allclose(averaged(turned.copy(), training=False).numpy(), got, atol=2e-6)
    # the plain encoder is not invariant: the test above could fail
    assert np.abs(plain(symmetries(images)[1].copy(), training=False).numpy()
                  - plain(images, training=False).numpy()).max() > 1e-3


def test_training_sees_the_plain_encoder():
    keras.utils.set_random_seed(1)
    plain = build_encoder(RECORD, "none", dropout=0.0, freeze_bn=False, drop_path=0.0)  # deterministic training
    x = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(with_view_average(plain)(x, training=True).numpy(),
                               plain(x, training=True).numpy(), atol=1e-6)


def test_saved_loaded_fingerprinted_and_named(plain, images, tmp_path):
    averaged = with_view_average(plain)
    assert with_view_average(averaged) is averaged and with_view_average(plain, "none") is plain
    assert [w.path for w in averaged.weights] == [w.path for w in plain.weights]  # the same weights, shared
    fp = save_encoder(averaged, tmp_path / "encoder.keras")
    model, record = load_encoder(tmp_path / "encoder.keras")  # safe mode
    assert record == RECORD and fp == fingerprint(model) and fp != fingerprint(plain)
    assert (view_average_of(model), view_average_of(plain)) == ("dihedral", "none")
    np.testing.assert_array_equal(model(images, training=False).numpy(), averaged(images, training=False).numpy())
    before, backbone, after = backbone_chain(model)
    assert [layer.name for layer in before][0] == "dihedral_views" and after[-1].name == "view_average"
    with pytest.raises(InputError, match="--view-average 'rotate' is not one of none, dihedral"):
        with_view_average(plain, "rotate")


def test_build_encoder_with_view_average_equals_wrapping(plain, images):
    built = build_encoder(RECORD, "none", view_average="dihedral")
    built.set_weights(plain.get_weights())
    np.testing.assert_allclose(built(images, training=False).numpy(),
                               with_view_average(plain)(images, training=False).numpy(), atol=1e-6)


def test_gradcam_of_an_averaging_encoder_turns_with_the_image(plain, images):
    from hemoembed.explain.gradcam import explain

    averaged = with_view_average(plain)
    score = lambda y: y[:, 7]  # noqa: E731 - one embedding dimension
    upright = explain(averaged, images, score, "dimension 7")
    turned = explain(averaged, np.rot90(images, 1, axes=(1, 2)).copy(), score, "dimension 7")
    assert upright.maps.shape == (3, 2, 2) and upright.maps.max() > 0
    np.testing.assert_allclose(turned.maps, np.rot90(upright.maps, 1, axes=(1, 2)), rtol=1e-4,
                               atol=1e-6 * upright.maps.max())
    np.testing.assert_allclose(turned.score, upright.score, atol=1e-5)


def test_the_option_and_the_config_file_refuse_other_values_before_writing(tmp_path):
    import json

    from click.testing import CliRunner
    from PIL import Image

    from hemoembed.cli import main

    Image.new("RGB", (40, 40), (200, 120, 160)).save(tmp_path / "cell.png")  # images are checked first
    bad = CliRunner().invoke(main, ["pretrain", str(tmp_path), "--out", str(tmp_path / "a"), "--view-average", "turn"])
    assert bad.exit_code == 2 and "'turn' is not one of 'none', 'dihedral'" in bad.output
    (tmp_path / "run.json").write_text(json.dumps({"weights": "none", "view_average": "rotate"}))
    bad = CliRunner().invoke(main, ["pretrain", str(tmp_path), "--out", str(tmp_path / "b"),
                                    "--config", str(tmp_path / "run.json")])
    assert bad.exit_code == 2 and "run.json: view_average: 'rotate' is not one of none, dihedral" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "b").exists()
    with pytest.raises(InputError, match="--view-average 'rotate' is not one of none, dihedral"):
        resolve_config(weights="none", view_average="rotate")  # the library's own check
