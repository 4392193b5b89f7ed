"""Few-shot site adapter: shots, class maps, colour reference, adapted encoder, CV inside the shots, CLI."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import SIZE, make_sites

from hemoembed.errors import InputError
from hemoembed.tasks.adapt import match_classes, read_class_map
from hemoembed.tasks.common import select_shots


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    return make_sites(tmp_path_factory.mktemp("sites"))


# ------------------------------------------------------------------------------------------------ shots
def test_shots_are_class_balanced_disjoint_and_capped():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 4 + ["d"] * 3
    shots, test = select_shots(labels, 20, min_per_class=2, seed=1)
    y = np.asarray(labels)
    counts = {c: int((y[shots] == c).sum()) for c in "abcd"}
    assert len(shots) == 20 and set(shots).isdisjoint(test) and len(shots) + len(test) == len(labels)
    assert counts["c"] == 3 and counts["d"] == 2  # capped: one image of each class stays for testing
    assert counts["a"] in (7, 8) and counts["b"] in (7, 8)  # the rest shared evenly
    assert all((y[test] == c).any() for c in "abcd")
    again, _ = select_shots(labels, 20, min_per_class=2, seed=1)
    other, _ = select_shots(labels, 20, min_per_class=2, seed=2)
    assert np.array_equal(shots, again) and not np.array_equal(shots, other)


def test_shots_min_per_class_wins_and_too_many_is_refused():
    labels = ["a"] * 40 + ["b"] * 40 + ["c"] * 40
    shots, _ = select_shots(labels, 9, min_per_class=3)
    assert sorted(np.unique(np.asarray(labels)[shots], return_counts=True)[1]) == [3, 3, 3]
    with pytest.raises(InputError, match="--shots 5 is fewer than --min-per-class 2 × 3 classes"):
        select_shots(labels, 5, min_per_class=2)


# ------------------------------------------------------------------------------------------------ classes
def test_class_map_and_default_case_insensitive_match(tmp_path):
    usable, missing = match_classes(["Neutrophil", "Eosinophil", "Smudge"], ["neutrophil", "eosinophil", "ig"], None)
    assert usable == {"Neutrophil": "neutrophil", "Eosinophil": "eosinophil"}
    assert missing == {"target_only": ["Smudge"], "source_only": ["ig"]}
    path = tmp_path / "map.csv"
    path.write_text("target,source\nNeutrophil,neutrophil\nSmudge,ig\nBand,neutrophil\n")
    mapping = read_class_map(path)
    usable, missing = match_classes(["Neutrophil", "Smudge", "Eosinophil"], ["neutrophil", "ig"], mapping)
    assert usable == {"Neutrophil": "neutrophil", "Smudge": "ig"} and missing["target_only"] == ["Eosinophil"]
    path.write_text("target,source\nA,x\nA,y\n")
    with pytest.raises(InputError, match=r"map.csv:3: target class 'A' is mapped twice"):
        read_class_map(path)


# ------------------------------------------------------------------------------------------------ colour
def test_colour_reference_round_trips_and_adapted_encoder_loads_in_safe_mode(sites, tmp_path):
    from hemoembed.data.colour import ReinhardReference, reinhard_normalize
    from hemoembed.data.imageio import load_image
    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import load_inputs
    from hemoembed.model.encoder import fingerprint, load_encoder, save_encoder
    from hemoembed.tasks.adapt import adapted_encoder, source_reference
    from hemoembed.tasks.adapt.adapter import embed_arrays

    source = load_manifest(sites["site0"])
    with pytest.raises(InputError, match="keeps no colour_reference.json; give --source-images"):
        source_reference(sites["run"], None)
    ref, origin = source_reference(sites["run"], source, sample=20, seed=3)
    assert "site0.csv" in origin
    ref.to_json(tmp_path / "ref.json")
    assert ReinhardReference.from_json(tmp_path / "ref.json") == ref
    (sites["run"] / "colour_reference.json").write_text((tmp_path / "ref.json").read_text())
    try:  # a run that keeps its reference is used as it is, without the source images
        assert source_reference(sites["run"], None) == (ref, str(sites["run"] / "colour_reference.json"))
    finally:
        (sites["run"] / "colour_reference.json").unlink()

    model, record = load_encoder(sites["run"] / "encoder.keras")
    adapted, new_record = adapted_encoder(model, record, ref)
    assert new_record.colour == "none" and new_record.image_size == record.image_size
    target = load_manifest(sites["site1"]).absolute()[:6]
    pixels = load_inputs(target, new_record)
    before = embed_arrays(adapted, pixels)
    fp = save_encoder(adapted, tmp_path / "adapted.keras")
    loaded, loaded_record = load_encoder(tmp_path / "adapted.keras")
    assert loaded_record == new_record and fingerprint(loaded) == fp
    layer = loaded.get_layer("reinhard")
    assert np.allclose(layer.mean, ref.mean) and np.allclose(layer.std, ref.std)
    assert np.allclose(embed_arrays(loaded, pixels), before, atol=1e-5)
    # the layer is the project's Reinhard transfer (TF vs numpy within one grey level)
    image = load_image(target[0]).astype(np.float32)
    layer_out = np.asarray(layer(image[None]))[0]
    assert np.abs(layer_out - reinhard_normalize(image, ref)).max() <= 1.0
    assert ReinhardReference.from_images([layer_out]).mean == pytest.approx(ref.mean, abs=0.02)


def test_adapter_saves_a_reference_unless_the_weights_changed_or_a_copy_is_asked_for(sites, tmp_path):
    from hemoembed.model.encoder import fingerprint, load_encoder
    from hemoembed.tasks.adapt import AdaptConfig, adapted_encoder
    from hemoembed.tasks.adapt.workflow import save_adapted_encoder

    source = sites["run"] / "encoder.keras"
    adapted = adapted_encoder(*load_encoder(source), None)[0]
    for mode, save, name in (("svm", "reference", "encoder.json"), ("head", "reference", "encoder.json"),
                             ("svm", "copy", "encoder.keras"), ("finetune", "reference", "encoder.keras")):
        out = tmp_path / f"{mode}-{save}"
        fp, written = save_adapted_encoder(adapted, AdaptConfig(mode=mode, save_encoder=save), source, out)
        assert written == out / name and [p.name for p in out.iterdir()] == [name], (mode, save)
        assert fp == fingerprint(adapted) == fingerprint(load_encoder(written)[0])


def colour_statistics_encoder(run: Path) -> Path:
    """A hemoembed encoder whose embedding is each image's per-channel mean and mean square (no random weights):
    it sees exactly the stain, so whether the colour transform closes the site gap does not depend on how a
    randomly initialised EfficientNet happens to weigh colour (that held on 3 of 6 encoder seeds)."""
    import keras

    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.model.encoder import SPEC_LAYER, save_encoder
    from hemoembed.model.layers import PreprocessingSpec

    record = PreprocessingRecord(SIZE, 0.875, "none")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(PreprocessingSpec(record.to_dict(), name=SPEC_LAYER)(inputs))
    pool = keras.layers.GlobalAveragePooling2D
    outputs = keras.layers.Concatenate()([pool()(x), pool()(keras.layers.Multiply()([x, x]))])
    save_encoder(keras.Model(inputs, outputs, name="colour_statistics"), run / "encoder.keras")
    return run


def test_colour_transform_shrinks_the_site_gap(sites, tmp_path):
    """Synthetic sites differ in stain: after Reinhard the target's embeddings are measurably harder to tell
    apart from the source's (linear domain classifier accuracy drops). Measured without/with the transform:
    site1 0.89/0.54, site2 0.96/0.49; on synthetic data seeds 1-3 the drop is 0.29 to 0.47."""
    from hemoembed.tasks.adapt import AdaptConfig, domain_separability, prepare

    run = colour_statistics_encoder(tmp_path / "run")
    for site in ("site1", "site2"):
        config = AdaptConfig(source=str(run), target=str(sites[site]), source_images=str(sites["site0"]),
                             ablation=True, source_per_class=8)
        gap = domain_separability(prepare(config))
        assert gap["without_colour"] >= 0.8, gap
        assert gap["with_colour"] <= gap["without_colour"] - 0.2, gap


# ------------------------------------------------------------------------------------------------ fine-tune
@pytest.mark.slow
def test_finetune_cv_never_sees_test_images(sites):
    """Test pixels are poisoned with NaN: CV scores and the chosen hyper-parameters stay finite, the folds
    index only shots, and only the final prediction of the test images is NaN."""
    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord, load_inputs
    from hemoembed.model.encoder import load_encoder
    from hemoembed.tasks.adapt import SiteExperiment

    model, record = load_encoder(sites["run"] / "encoder.keras")
    manifest = load_manifest(sites["site1"])
    labels = np.asarray(manifest.labels)
    keep = np.concatenate([np.flatnonzero(labels == c)[:6] for c in ("lymphocyte", "neutrophil")])
    images = load_inputs([manifest.absolute()[i] for i in keep], PreprocessingRecord(SIZE, 0.875, "none"))
    shots, test = select_shots(labels[keep], 8, min_per_class=4, seed=0)
    images[test] = np.nan
    adapter = SiteExperiment(model, record, None, images, labels[keep])
    # two settings x two folds + the final fit: each fine-tune clones the encoder and traces its training step
    out = adapter.run("finetune", shots, test, colour=False, grid={"lr": [1e-3], "epochs": [1, 2],
                      "batch_size": [4]}, folds=2, seed=0)
    assert len(out.cv["folds"]) == 2 and len(out.cv["scores"]) == 2
    for fold in out.cv["folds"]:
        used = shots[fold["train"] + fold["validation"]]
        assert set(used) <= set(shots.tolist()) and set(used).isdisjoint(test)
        assert set(fold["train"]).isdisjoint(fold["validation"])
    assert all(np.isfinite(s["cv_accuracy"]) for s in out.cv["scores"])
    assert out.cv["chosen"]["lr"] == 1e-3 and out.cv["chosen"]["epochs"] in (1, 2)
    assert np.isnan(out.proba).all() and out.proba.shape == (len(test), 2)
    assert np.isfinite(out.encoder.get_weights()[5]).all()


@pytest.mark.slow  # two fine-tunes, each cloning the encoder and tracing its training step: ~120 s in the suite
def test_warm_head_starts_from_the_frozen_fit(sites):
    """With the learning rate at 0 nothing trains, so the classifier is its starting point: with the warm
    head it predicts exactly what the head fitted on the frozen embeddings predicts; a random head does not."""
    from hemoembed.data.manifest import load_manifest
    from hemoembed.data.preprocess import PreprocessingRecord, load_inputs
    from hemoembed.model.encoder import load_encoder
    from hemoembed.tasks.adapt.adapter import FinetuneParams, embed_arrays, finetune, fit_head

    model, _ = load_encoder(sites["run"] / "encoder.keras")
    manifest = load_manifest(sites["site1"])
    labels = np.asarray(manifest.labels)
    keep = np.concatenate([np.flatnonzero(labels == c)[:4] for c in ("lymphocyte", "neutrophil", "monocyte")])
    images = load_inputs([manifest.absolute()[i] for i in keep], PreprocessingRecord(SIZE, 0.875, "none"))
    y = np.repeat(np.arange(3), 4)
    expected = np.asarray(fit_head(embed_arrays(model, images), y, 3, seed=3)(embed_arrays(model, images)))
    frozen = FinetuneParams(lr=0.0, epochs=1, batch_size=4)
    warm = finetune(model, images, y, 3, frozen, seed=3, warm_head=True)[0].predict(images, verbose=0)
    cold = finetune(model, images, y, 3, frozen, seed=3, warm_head=False)[0].predict(images, verbose=0)
    np.testing.assert_allclose(warm, expected, atol=1e-5)
    assert np.abs(cold - expected).max() > 0.05


# ------------------------------------------------------------------------------------------------ augmentation
def test_random_resolution_blurs_and_is_seeded():
    import tensorflow as tf

    from hemoembed.data.augment import AugmentConfig, RandomResolution, augment_batch, build_augmentation

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (4, 32, 32, 3)), tf.float32)
    layer = RandomResolution(0.75)
    factors = layer.get_random_transformation(images, seed=12)
    assert factors.shape == (4,) and float(tf.reduce_min(factors)) >= 0.25 and float(tf.reduce_max(factors)) <= 1.0
    out = layer.transform_images(images, tf.constant([0.25, 0.5, 1.0, 1.0]))
    assert out.shape == images.shape
    detail = lambda x: float(tf.reduce_mean(tf.abs(x[:, 1:] - x[:, :-1])))  # noqa: E731
    assert detail(out[:1]) < 0.5 * detail(images[:1])
    assert np.allclose(out[2:], images[2:], atol=1e-3)
    layers = build_augmentation(AugmentConfig(resolution=0.5, flip=False, rotation=0, zoom=0, translation=0,
                                              brightness=0, contrast=0, saturation=0, hue=0))
    assert [type(x).__name__ for x in layers] == ["RandomResolution"]
    a, b = (augment_batch(images, layers, tf.constant([7, 0], tf.int64)) for _ in range(2))
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match="resolution"):
        AugmentConfig(resolution=1.5)


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_adapt_cli_writes_a_predictable_model(sites, tmp_path, cli):
    out = tmp_path / "adapt"
    class_map = tmp_path / "map.csv"
    class_map.write_text("target,source\nneutrophil,neutrophil\nlymphocyte,lymphocyte\neosinophil,eosinophil\n"
                         "monocyte,monocyte\n")
    args = ["adapt", "--source", sites["run"], "--target", sites["site2"], "--source-images", sites["site0"],
            "--class-map", class_map, "--shots", 12, "--mode", "svm", "--source-support", 3, "--bootstrap", 50,
            "--out", out]
    result = cli(*args)
    assert result.exit_code == 0, result
    assert "left out (target only): basophil" in result.stdout
    with open(out / "shots.csv") as handle:
        shots = list(csv.DictReader(handle))
    with open(out / "test_predictions.csv") as handle:
        tests = list(csv.DictReader(handle))
    assert len(shots) == 12 and len(tests) == 4 * 8 - 12
    assert {r["path"] for r in shots}.isdisjoint(r["path"] for r in tests)
    assert sorted({r["label"] for r in shots}) == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert all(sum(r["label"] == c for r in shots) == 3 for c in ("eosinophil", "lymphocyte"))
    for name in ("encoder.json", "model.skops", "model.json", "report.json", "per_class.csv", "pr_curves.png",
                 "colour_reference.json", "adapt_config.json", "store/store.json", "store/embed_config.json"):
        assert (out / name).is_file(), name
    assert not (out / "encoder.keras").exists()  # svm mode: a reference to the unchanged source, no copy
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["adapter"]["encoder_file"] == "encoder.json"
    # the reference is the encoder the store and the SVM were made with, recorded for `serve`
    from hemoembed.model.encoder import fingerprint, load_encoder

    recorded = json.loads((out / "store" / "embed_config.json").read_text())["encoder"]
    assert Path(recorded) == out / "encoder.json"
    assert fingerprint(load_encoder(recorded)[0]) == json.loads((out / "store" / "store.json").read_text())[
        "fingerprint"] == json.loads((out / "model.json").read_text())["store_fingerprint"]
    assert report["n_test"] == len(tests)
    assert report["classes"] == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert report["adapter"]["missing_classes"] == {"target_only": ["basophil"], "source_only": ["basophil"]}
    # predict with the adapted store reproduces the adapter's test predictions
    result = cli("predict", out, "--store", out / "store", "--out", tmp_path / "pred.csv")
    assert result.exit_code == 0, result
    with open(tmp_path / "pred.csv") as handle:
        predicted = {r["path"]: r["label"] for r in csv.DictReader(handle)}
    assert all(predicted[r["path"]] == r["predicted"] for r in tests)
    # ... and so does predict with the encoder reference on the images themselves
    result = cli("predict", out, "--encoder", out / "encoder.json", sites["site2"], "--out", tmp_path / "enc.csv")
    assert result.exit_code == 0, result
    with open(tmp_path / "enc.csv") as handle:
        again_predicted = {r["path"]: r["label"] for r in csv.DictReader(handle)}
    assert all(again_predicted[r["path"]] == r["predicted"] for r in tests)
    again = cli(*args)
    assert again.exit_code == 2 and "use --overwrite" in again.stderr and "Traceback" not in again.stderr


def test_adapt_and_predict_read_paths_outside_the_root_only_when_allowed(sites, tmp_path, cli):
    """A --target manifest whose paths leave its folder is refused with the option that permits it, and that
    option exists on adapt and on predict (it used to be named in the refusal and missing from both)."""
    with open(sites["site2"]) as handle:
        rows = list(csv.DictReader(handle))
    outside = tmp_path / "outside.csv"
    with open(outside, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "path": os.path.relpath(sites["site2"].parent / r["path"], tmp_path)} for r in rows)
    adapt = ["adapt", "--source", sites["run"], "--target", outside, "--no-colour-transform", "--shots", 12,
             "--bootstrap", 20, "--out", tmp_path / "adapt"]
    refused = cli(*adapt)
    assert refused.exit_code == 2 and "outside the image root" in refused.stderr
    assert "--allow-outside-root" in refused.stderr and "Traceback" not in refused.stderr
    result = cli(*adapt, "--allow-outside-root")
    assert result.exit_code == 0, result
    with open(tmp_path / "adapt" / "test_predictions.csv") as handle:
        tests = {r["path"]: r["predicted"] for r in csv.DictReader(handle)}
    assert len(tests) == 5 * 8 - 12 and all(p.startswith("..") for p in tests)
    predict = ["predict", tmp_path / "adapt", "--encoder", tmp_path / "adapt" / "encoder.json", outside]
    refused = cli(*predict, "--out", tmp_path / "refused.csv")
    assert refused.exit_code == 2 and "outside the image root" in refused.stderr
    assert not (tmp_path / "refused.csv").exists()
    result = cli(*predict, "--allow-outside-root", "--out", tmp_path / "pred.csv")
    assert result.exit_code == 0, result
    with open(tmp_path / "pred.csv") as handle:
        predicted = {r["path"]: r["label"] for r in csv.DictReader(handle)}
    assert all(predicted[path] == label for path, label in tests.items())


def test_the_cv_choice_is_the_best_mean_accuracy_then_the_fewest_epochs():
    from hemoembed.tasks.adapt.adapter import FinetuneParams, best_point

    def point(lr, batch, epochs, acc):
        return {"lr": lr, "batch_size": batch, "epochs": epochs, "cv_accuracy": acc}

    scores = [point(1e-3, 4, 1, 0.50), point(1e-3, 4, 3, 0.75), point(1e-4, 8, 1, 0.70), point(1e-4, 8, 3, 0.60)]
    assert best_point(scores) == FinetuneParams(1e-3, 3, 4)
    tied = scores + [point(1e-4, 16, 2, 0.75)]  # as good, fewer epochs: chosen
    assert best_point(tied) == FinetuneParams(1e-4, 2, 16)
    assert best_point(tied + [point(1e-2, 4, 2, 0.75)]) == FinetuneParams(1e-4, 2, 16)  # a full tie: the first
