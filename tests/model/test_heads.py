"""Projection heads: the spec language, the layer's shape and serialisation."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from hemoembed.errors import InputError
from hemoembed.model.heads import ProjectionHead, build_head
from hemoembed.model.options import parse_head


@pytest.mark.parametrize("spec, units", [("none", ()), ("NONE", ()), ("mlp:128", (128,)), ("mlp:512,128", (512, 128)),
                                         (" mlp:64, 32 ,16", (64, 32, 16))])
def test_parse(spec: str, units: tuple) -> None:
    assert parse_head(spec) == units


@pytest.mark.parametrize("spec", ["", "mlp", "mlp:", "mlp:0", "mlp:a,b", "linear:128", "mlp:-5"])
def test_bad_spec_is_one_line(spec) -> None:
    with pytest.raises(InputError, match="expected 'none' or 'mlp:'"):
        parse_head(spec)


def test_head_maps_to_its_output_width_and_round_trips() -> None:
    head = build_head("mlp:32,8", 16)
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    y = np.asarray(head(x, training=False))
    assert y.shape == (5, 8)
    assert len(head.trainable_weights) == 5  # dense kernel, BN gamma/beta, output kernel/bias
    clone = ProjectionHead.from_config(head.get_config())
    clone.build((None, 16))
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x, training=False)), y, rtol=1e-6)
    assert build_head("none", 16) is None
    assert keras.saving.get_registered_object("hemoembed>ProjectionHead") is ProjectionHead
