"""The encoder fingerprint covers everything that changes an embedding; stores of the old weights-only
fingerprint stay readable and say how to migrate (real 32-px encoders, random weights)."""
from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from hemoembed.cli import main
from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import MismatchError
from hemoembed.model.encoder import SPEC_LAYER, build_encoder, fingerprint, load_encoder, save_encoder
from hemoembed.model.layers import GrayWorld, PreprocessingSpec, ReinhardNormalization
from hemoembed.store.store import EmbeddingStore, make_part_table

RECORD = PreprocessingRecord(image_size=32)


def weights_only(model: keras.Model) -> str:
    """The fingerprint of hemoembed before scheme 2: weight shapes and bytes only."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value), dtype=np.float32)
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def wrapped(source: keras.Model, reinhard: bool) -> keras.Model:
    """An adapted encoder: weightless colour layers in front of the unchanged source."""
    inputs = keras.Input((32, 32, 3), name="image")
    x = PreprocessingSpec(PreprocessingRecord(32, 0.875, "none").to_dict(), name=SPEC_LAYER)(inputs)
    if reinhard:
        x = ReinhardNormalization((0.1, 0.0, 0.0), (0.5, 0.05, 0.02), name="reinhard")(x)
    return keras.Model(inputs, source(GrayWorld(name="gray_world")(x)), name="hemoembed_adapted_encoder")


@pytest.fixture(scope="module")
def base(saved_encoder):
    return saved_encoder


def test_same_computation_same_fingerprint(base, tmp_path):
    model, path = base
    loaded, _ = load_encoder(path)
    assert fingerprint(loaded) == fingerprint(model)
    rebuilt = build_encoder(RECORD, "none", freeze_bn=False)  # new auto-numbered layer names, BN trainable
    rebuilt.set_weights(model.get_weights())
    assert fingerprint(rebuilt) == fingerprint(model)
    adapted = wrapped(loaded, reinhard=True)
    save_encoder(adapted, tmp_path / "adapted.keras")
    assert fingerprint(load_encoder(tmp_path / "adapted.keras")[0]) == fingerprint(adapted)


@pytest.mark.parametrize("change", ["crop 0.3", "no colour normalisation", "gray world added",
                                    "Reinhard added", "other weights"])
def test_anything_that_changes_the_embedding_changes_the_fingerprint(base, change):
    model, path = base
    loaded, _ = load_encoder(path)
    if change == "crop 0.3":
        other = build_encoder(PreprocessingRecord(32, 0.3, "grayworld"), "none")
        other.set_weights(model.get_weights())
    elif change == "no colour normalisation":
        other = build_encoder(PreprocessingRecord(32, 0.875, "none"), "none")
        other.set_weights(model.get_weights())
    elif change == "other weights":
        other = build_encoder(RECORD, "none")
    else:
        other = wrapped(loaded, reinhard=change == "Reinhard added")
    if change != "other weights":
        assert weights_only(other) == weights_only(model)  # the old fingerprint could not tell them apart
    assert fingerprint(other) != fingerprint(model)


def test_a_wrong_encoder_is_refused_not_trusted(base, tmp_path):
    """predict --encoder and neighbors --image with a same-weights encoder of another crop: exit 2."""
    from PIL import Image

    from hemoembed.data.manifest import load_manifest
    from hemoembed.store.embed import embed_to_store
    from hemoembed.tasks.svm import EmbeddingSVM

    model, path = base
    rng = np.random.default_rng(0)
    for i in range(12):
        (tmp_path / "cells" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "cells" / "ab"[i % 2] /
                                                                                f"{i}.png")
    store, _ = embed_to_store(model, load_manifest(tmp_path / "cells"), tmp_path / "store")  # path's encoder
    labels = [p.split("/")[0] for p in store.paths]
    EmbeddingSVM().fit(store.embeddings(), labels).save(tmp_path / "svm", fingerprint=store.fingerprint,
                                                        column="label")
    wrong = build_encoder(PreprocessingRecord(32, 0.3, "grayworld"), "none")
    wrong.set_weights(model.get_weights())
    save_encoder(wrong, tmp_path / "wrong.keras")
    runner = CliRunner()
    ok = runner.invoke(main, ["predict", str(tmp_path / "svm"), "--encoder", str(path), str(tmp_path / "cells"),
                              "--out", str(tmp_path / "ok.csv")])
    assert ok.exit_code == 0, ok.output
    for args in (["predict", str(tmp_path / "svm"), "--encoder", str(tmp_path / "wrong.keras"),
                  str(tmp_path / "cells"), "--out", str(tmp_path / "p.csv")],
                 ["neighbours", str(tmp_path / "store"), "--encoder", str(tmp_path / "wrong.keras"), "--image",
                  str(tmp_path / "cells" / "a" / "0.png")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
        assert fingerprint(wrong)[:12] in result.output or fingerprint(wrong)[:16] in result.output, result.output
    assert not (tmp_path / "p.csv").exists()


def test_a_format_1_store_stays_readable_and_says_how_to_migrate(base, tmp_path):
    model, path = base
    loaded, record = load_encoder(path)
    store = EmbeddingStore.create(tmp_path / "old", weights_only(loaded), record, 1280)
    rows = np.random.default_rng(0).normal(size=(3, 1280)).astype(np.float32)
    store.append(make_part_table(["a.png", "b.png", "c.png"], ["0" * 64, "1" * 64, "2" * 64], [40] * 3, [40] * 3,
                                 rows))
    header = json.loads((tmp_path / "old" / "store.json").read_text())
    header["format_version"] = 1
    del header["store_id"]  # as hemoembed wrote it before format 2
    (tmp_path / "old" / "store.json").write_text(json.dumps(header))
    old = EmbeddingStore.open(tmp_path / "old")
    np.testing.assert_array_equal(old.embeddings(), rows)  # readable as before
    with pytest.raises(MismatchError, match=r"store of format 1 .* rebuild it: hemoembed embed"):
        old.check_encoder(fingerprint(loaded), record)
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(images / "a.png")
    refused = CliRunner().invoke(main, ["embed", str(path), str(images), "--store", str(tmp_path / "old")])
    assert refused.exit_code == 2 and "--overwrite" in refused.output, refused.output
    assert len(EmbeddingStore.open(tmp_path / "old")) == 3
    rebuilt = CliRunner().invoke(main, ["embed", str(path), str(images), "--store", str(tmp_path / "old"),
                                        "--overwrite"])
    assert rebuilt.exit_code == 0, rebuilt.output
    new = EmbeddingStore.open(tmp_path / "old")
    assert new.header.format_version == 2 and new.fingerprint == fingerprint(loaded) and len(new) == 1
