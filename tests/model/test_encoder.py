"""The encoder: unit-norm 1280-d output, safe-mode loading, frozen BatchNorm, --weights PATH."""
from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError, MismatchError
from hemoembed.model.distribute import make_strategy
from hemoembed.model.encoder import EMBEDDING_DIM, backbone_chain, build_encoder, fingerprint, load_encoder
from hemoembed.model.pretrain import make_trainer, resolve_config

RECORD = PreprocessingRecord(32, 0.875)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(saved_encoder):
    return saved_encoder


def test_output_is_unit_norm_1280d(saved):
    model, _ = saved
    out = model(_images(5), training=False).numpy()
    assert out.shape == (5, EMBEDDING_DIM) == (5, 1280)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.abs(out[0] - out[1]).max() > 1e-4  # different images, different embeddings


def test_safe_mode_load_keeps_outputs_and_record(saved):
    model, path = saved
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(3, seed=1)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-5)
    assert load_encoder(path)[1] == RECORD
    assert fingerprint(loaded) == fingerprint(model)
    assert not any(type(layer).__name__ == "Lambda" for layer in loaded.layers)


def test_safe_mode_load_after_import_hemoembed_in_a_fresh_process(saved):
    _, path = saved
    code = ("import hemoembed, keras, sys\n"
            f"m = keras.saving.load_model({str(path)!r}, safe_mode=True)\n"
            "print('OUT', m.output_shape)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-800:]
    assert "OUT (None, 1280)" in run.stdout


def _bn_statistics(model) -> list[np.ndarray]:
    return [np.array(w) for layer in _bn_layers(model) for w in (layer.moving_mean, layer.moving_variance)]


def _bn_layers(model):
    from hemoembed.model.encoder import all_layers

    return [layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("freeze", [True, False])
def test_batchnorm_statistics_frozen_or_training(freeze):
    config = resolve_config(weights="none", image_size=32, batch_size=4, epochs=1, freeze_bn=freeze, eager=True,
                            lr=1e-3)
    trainer = make_trainer(config, make_strategy("one"), steps_per_epoch=2)
    assert len(_bn_layers(trainer.model)) > 50
    before_stats, before_weights = _bn_statistics(trainer.model), [np.array(w) for w in trainer.model.trainable_weights]
    views = tf.constant(_images(8, seed=2))
    labels = tf.constant([0, 0, 1, 1, 2, 2, 3, 3], tf.int64)
    for _ in range(2):
        trainer.train_batch(views, labels)
    after_stats = _bn_statistics(trainer.model)
    changed = max(np.abs(a - b).max() for a, b in zip(before_stats, after_stats))
    moved = max(np.abs(a - np.array(w)).max() for a, w in zip(before_weights, trainer.model.trainable_weights))
    assert moved > 1e-5  # training happened either way
    if freeze:
        assert changed == 0.0
        assert not any(layer.trainable for layer in _bn_layers(trainer.model))
    else:
        assert changed > 1e-4


def test_weights_from_a_saved_encoder_path(saved, tmp_path):
    model, path = saved
    keras.utils.set_random_seed(99)
    fresh = build_encoder(RECORD, "none")
    assert fingerprint(fresh) != fingerprint(model)
    warm = build_encoder(RECORD, str(path))
    assert fingerprint(warm) == fingerprint(model)
    with pytest.raises(InputError, match="no such file"):
        build_encoder(RECORD, str(tmp_path / "missing.keras"))


def test_backbone_chain_is_found_by_structure_and_refuses_other_shapes():
    """The last sub-model with a feature-map output, sub-models around it opened (an adapter wraps its source
    encoder); names play no part. Two-input layers and models without a feature map are refused."""
    image = keras.Input((8, 8, 3))
    features = keras.Model(image, keras.layers.Conv2D(4, 3)(image), name="anything")
    x = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(features(keras.layers.Rescaling(0.5)(x)))
    inner = keras.Model(x, keras.layers.Dense(2)(pooled), name="inner")
    y = keras.Input((8, 8, 3))
    scale = keras.layers.Rescaling(2.0)
    outer = keras.Model(y, keras.layers.Activation("tanh")(inner(scale(y))))
    before, backbone, after = backbone_chain(outer)
    assert backbone is features
    assert [type(layer).__name__ for layer in before] == ["Rescaling", "Rescaling"] and before[0] is scale
    assert [type(layer).__name__ for layer in after] == ["GlobalAveragePooling2D", "Dense", "Activation"]
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    chained = tf.constant(data)
    for layer in [*before, backbone, *after]:
        chained = layer(chained)
    np.testing.assert_allclose(chained.numpy(), outer(data).numpy(), rtol=1e-6)

    mapped = features(y)
    branches = keras.layers.Add()([keras.layers.GlobalAveragePooling2D()(mapped),
                                   keras.layers.GlobalMaxPooling2D()(mapped)])
    with pytest.raises(MismatchError, match="takes 2 inputs; an encoder is a chain"):
        backbone_chain(keras.Model(y, branches))
    with pytest.raises(MismatchError, match="no convolutional backbone found"):
        backbone_chain(keras.Model(y, keras.layers.Dense(3)(keras.layers.Flatten()(y))))


def test_drop_path_scales_the_backbones_stochastic_depth_and_survives_saving(tmp_path):
    """Keras fixes EfficientNetV2-B0's stochastic depth at 0.2 (last block); ``drop_path`` rescales every
    block's rate, only training sees it, and a saved encoder keeps it."""
    from hemoembed.model.encoder import save_encoder

    record = PreprocessingRecord(32, 0.875, "grayworld")

    def rates(model: keras.Model) -> list[float]:
        backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
        return [layer.rate for layer in backbone.layers if isinstance(layer, keras.layers.Dropout)]

    default, off, half = (build_encoder(record, "none", drop_path=p) for p in (0.2, 0.0, 0.1))
    assert len(rates(default)) == 15 and max(rates(default)) == pytest.approx(0.2 * 20 / 21)  # its last block
    assert rates(off) == [0.0] * 15
    np.testing.assert_allclose(rates(half), np.array(rates(default)) / 2)
    off.set_weights(default.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(off(x, training=False), default(x, training=False))
    save_encoder(off, tmp_path / "off.keras")
    assert rates(load_encoder(tmp_path / "off.keras")[0]) == [0.0] * 15
    with pytest.raises(InputError, match="--drop-path 1.0: must be within"):
        resolve_config(weights="none", drop_path=1.0)
    assert resolve_config(weights="none").drop_path == 0.2  # an old run's config.json (no key) resumes as before
