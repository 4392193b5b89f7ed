"""The notebook site adapter: from_run(...).fit(images, labels) predicts what the adapt pipeline predicts."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import make_sites
from sklearn.base import clone

from hemoembed.errors import InputError


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Sites, the run keeping the source colour style (as pretraining does), the target split into halves."""
    from hemoembed.data.colour import RUN_REFERENCE_FILE, ReinhardReference
    from hemoembed.data.imageio import LazyImages
    from hemoembed.data.manifest import load_manifest

    sites = make_sites(tmp_path_factory.mktemp("estimator"), n_per_class=6)
    source = load_manifest(sites["site0"])
    ReinhardReference.from_images(LazyImages(source.absolute())).to_json(sites["run"] / RUN_REFERENCE_FILE)
    target = load_manifest(sites["site1"])
    return sites["run"], target.subset(range(0, len(target), 2)), target.subset(range(1, len(target), 2))


@pytest.mark.slow
def test_svm_mode_predicts_what_the_adaptation_pipeline_predicts(site):
    from hemoembed.data.preprocess import load_inputs
    from hemoembed.model.encoder import load_encoder
    from hemoembed.tasks.adapt import SiteAdapter, SiteExperiment, source_reference

    run, shots, rest = site
    adapter = SiteAdapter.from_run(run, mode="svm", random_state=3)
    assert adapter.fit(shots) is adapter
    assert adapter.classes_.tolist() == sorted(set(shots.column("label"))) and adapter.svm_ is not None
    proba = adapter.predict_proba(rest)
    assert proba.shape == (len(rest), len(adapter.classes_))
    np.testing.assert_array_equal(adapter.predict(rest), adapter.classes_[proba.argmax(axis=1)])
    assert adapter.transform(rest.absolute()[:3]).shape == (3, 1280)

    model, record = load_encoder(run / "encoder.keras")
    reference = source_reference(run, None)[0]
    both = shots.absolute() + rest.absolute()
    pixels = load_inputs(both, adapter.record_)
    labels = shots.column("label") + rest.column("label")
    experiment = SiteExperiment(model, record, reference, pixels, labels)
    outcome = experiment.run("svm", np.arange(len(shots)), np.arange(len(shots), len(both)), seed=3)
    np.testing.assert_allclose(proba, outcome.proba, atol=1e-3)  # float32 embeddings batched differently


@pytest.mark.slow
def test_head_mode_conventions_and_refusals(site, tmp_path):
    from hemoembed.tasks.adapt import SiteAdapter

    run, shots, rest = site
    adapter = SiteAdapter.from_run(run, mode="head", head_epochs=5)
    params = adapter.get_params()
    assert params["mode"] == "head" and params["source"] == str(run) and clone(adapter).get_params() == params
    adapter.fit(shots.absolute(), shots.column("label"))
    assert adapter.svm_ is None and adapter.classifier_ is not None
    assert adapter.predict(rest).shape == (len(rest),)
    with pytest.raises(InputError, match="not fitted"):
        SiteAdapter.from_run(run).predict(rest)
    with pytest.raises(InputError, match="needs labels"):
        SiteAdapter.from_run(run).fit(shots.absolute())
    with pytest.raises(InputError, match="no colour_reference.json|keeps no"):
        bare = tmp_path / "bare"
        bare.mkdir()
        (bare / "encoder.keras").symlink_to(run / "encoder.keras")
        SiteAdapter.from_run(bare).fit(shots)
    with pytest.raises(InputError, match="preprocessed"):
        SiteAdapter.from_run(run).fit(np.zeros((4, 8, 8, 3)), ["a", "a", "b", "b"])
