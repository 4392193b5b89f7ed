"""An adapter's encoder reference (``encoder.json``) stands for the adapted encoder: it loads through
``load_encoder`` into the same model as the saved ``.keras`` copy (same fingerprint, bit-identical
embeddings), follows its source when both move, and refuses a missing or changed source in one sentence
(real 32-px encoders, random weights)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from hemoembed.data.colour import ReinhardReference
from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError, MismatchError
from hemoembed.model.adapted import REFERENCE_FORMAT, adapted_encoder, save_encoder_reference
from hemoembed.model.encoder import build_encoder, fingerprint, load_encoder, save_encoder
from hemoembed.tasks.adapt.adapter import embed_arrays

RECORD = PreprocessingRecord(32, 0.875, "grayworld")
STYLE = ReinhardReference((4.1, 0.02, -0.01), (0.6, 0.05, 0.03))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``run/encoder.keras`` (the source) and ``adapt/`` holding the adapted encoder as a copy and as a
    reference; ``pixels.npy``: 6 raw images."""
    root = tmp_path_factory.mktemp("project")
    keras.utils.set_random_seed(0)
    save_encoder(build_encoder(RECORD, "none"), root / "run" / "encoder.keras")
    source, record = load_encoder(root / "run" / "encoder.keras")
    adapted, _ = adapted_encoder(source, record, STYLE)
    save_encoder(adapted, root / "adapt" / "encoder.keras")
    save_encoder_reference(adapted, root / "run" / "encoder.keras", root / "adapt" / "encoder.json")
    np.save(root / "pixels.npy", np.random.default_rng(1).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32))
    return root


def same_model(reference: Path, copy: Path, pixels: np.ndarray) -> None:
    """``reference`` loads into the model ``copy`` holds: record, fingerprint and embeddings, bit for bit."""
    rebuilt, record = load_encoder(reference)
    saved, saved_record = load_encoder(copy)
    assert record == saved_record == RECORD.without_colour()
    assert fingerprint(rebuilt) == fingerprint(saved) == json.loads(reference.read_text())["fingerprint"]
    assert np.array_equal(embed_arrays(rebuilt, pixels), embed_arrays(saved, pixels))


def test_reference_rebuilds_the_saved_copy_bit_for_bit(project):
    reference, pixels = project / "adapt" / "encoder.json", np.load(project / "pixels.npy")
    data = json.loads(reference.read_text())
    assert data["format"] == REFERENCE_FORMAT and data["source"] == "../run/encoder.keras"
    assert data["reinhard"]["mean"] == list(STYLE.mean) and data["record"] == RECORD.to_dict()
    assert data["source_fingerprint"] == fingerprint(load_encoder(project / "run" / "encoder.keras")[0])
    assert reference.stat().st_size < 2000 < (project / "adapt" / "encoder.keras").stat().st_size / 1000
    same_model(reference, project / "adapt" / "encoder.keras", pixels)
    rebuilt = load_encoder(reference)[0]
    assert rebuilt.get_layer("reinhard").mean == list(STYLE.mean)  # the colour transfer is inside
    plain = load_encoder(project / "run" / "encoder.keras")[0]
    assert not np.array_equal(embed_arrays(rebuilt, pixels), embed_arrays(plain, pixels))


def test_reference_without_colour_transfer(project, tmp_path):
    source, record = load_encoder(project / "run" / "encoder.keras")
    adapted, _ = adapted_encoder(source, record, None)
    fp = save_encoder_reference(adapted, project / "run" / "encoder.keras", tmp_path / "plain.json")
    assert json.loads((tmp_path / "plain.json").read_text())["reinhard"] is None
    rebuilt = load_encoder(tmp_path / "plain.json")[0]
    assert fingerprint(rebuilt) == fp == fingerprint(adapted)
    assert [layer.name for layer in rebuilt.layers if layer.name == "reinhard"] == []


def test_reference_follows_its_source_or_refuses_in_one_sentence(project, tmp_path):
    pixels = np.load(project / "pixels.npy")
    moved = tmp_path / "moved"
    shutil.copytree(project, moved)  # the whole project elsewhere: the relative path still holds
    data = json.loads((moved / "adapt" / "encoder.json").read_text())
    data["source_absolute"] = str(tmp_path / "nowhere" / "encoder.keras")  # so only the relative path can hit
    (moved / "adapt" / "encoder.json").write_text(json.dumps(data))
    same_model(moved / "adapt" / "encoder.json", project / "adapt" / "encoder.keras", pixels)
    alone = tmp_path / "alone"
    shutil.copytree(project / "adapt", alone)  # the adapt folder alone: found through the absolute path
    same_model(alone / "encoder.json", project / "adapt" / "encoder.keras", pixels)

    (moved / "run" / "encoder.keras").unlink()  # now both paths miss
    with pytest.raises(InputError, match=r"encoder.json: its source encoder is missing \(looked for .*run/encoder"
                                         r".keras and .*nowhere/encoder.keras\).*--save-encoder copy"):
        load_encoder(moved / "adapt" / "encoder.json")

    keras.utils.set_random_seed(1)  # the run was pretrained again: same path, other weights
    save_encoder(build_encoder(RECORD, "none"), moved / "run" / "encoder.keras")
    with pytest.raises(MismatchError, match=r"its source encoder .*run/encoder.keras has changed since the adapter "
                                            r"referenced it \(fingerprint \w{12}, expected \w{12}\)"):
        load_encoder(moved / "adapt" / "encoder.json")


def test_reference_refuses_what_it_cannot_stand_for(project, tmp_path):
    source, record = load_encoder(project / "run" / "encoder.keras")
    tuned = keras.models.clone_model(source)
    tuned.set_weights([w + 0.01 for w in source.get_weights()])  # fine-tuned weights: only a copy keeps them
    with pytest.raises(MismatchError, match="not .*encoder.keras behind colour layers"):
        save_encoder_reference(adapted_encoder(tuned, record, STYLE)[0], project / "run" / "encoder.keras",
                               tmp_path / "tuned.json")
    assert not (tmp_path / "tuned.json").exists()
    for text, message in (("{not json", "not a readable encoder reference"),
                          ('{"mean": [1, 2, 3]}', "not a hemoembed encoder reference"),
                          (json.dumps({"format": REFERENCE_FORMAT, "source": "x.keras"}), "lacks fingerprint")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match=message):
            load_encoder(tmp_path / "bad.json")
    loop = json.loads((project / "adapt" / "encoder.json").read_text())
    (tmp_path / "loop.json").write_text(json.dumps({**loop, "source": "loop.json"}))
    with pytest.raises(InputError, match="points back to itself"):
        load_encoder(tmp_path / "loop.json")


def test_a_new_encoder_starts_from_the_backbone_inside_an_adapted_one(project):
    """``pretrain --weights ADAPT/encoder.json`` (or the copy): the source encoder's backbone, found inside the
    adapted encoder, initialises the new encoder, which is then the source encoder again."""
    source = load_encoder(project / "run" / "encoder.keras")[0]
    for name in ("encoder.json", "encoder.keras"):
        assert fingerprint(build_encoder(RECORD, str(project / "adapt" / name))) == fingerprint(source)
