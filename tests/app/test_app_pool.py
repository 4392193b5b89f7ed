"""The review app's labelling pool (reference rows, then uploaded cells): read without concatenating the two."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import traced_peak, write_parts, write_store

from hemoembed.data.synthetic_embeddings import structured_embeddings
from hemoembed.store.store import EmbeddingStore

N_REFERENCE, N_UPLOADED = 6000, 300


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A reference store in parts, a query store of uploaded cells, and every row (reference first)."""
    import hemoembed.tasks.active.estimator as active

    monkeypatch.setattr(active, "SCORE_ROWS", 500)  # blocks much smaller than the matrix, as at scale
    X, y = structured_embeddings(N_REFERENCE + N_UPLOADED, dim=512, n_classes=4, seed=6)
    X = X.astype(np.float32)
    write_parts(tmp_path / "reference", X[:N_REFERENCE], y[:N_REFERENCE])
    write_store(tmp_path / "query", X[N_REFERENCE:], y[N_REFERENCE:])
    return EmbeddingStore.open(tmp_path / "reference"), EmbeddingStore.open(tmp_path / "query"), X, y


def versions(tmp_path, reference, query, y):
    """The app's labelling session on the pool (``Versions``), with the first 150 reference rows labelled."""
    from hemoembed.app.models import Versions

    labels = dict(zip(reference.paths[:150], y[:150]))
    ref = SimpleNamespace(store=reference, store_dir=reference.directory, column="label", labels=labels)
    return Versions(tmp_path / "data" / "session", ref, query, sorted(set(y)), cv=3)


def corrections(query, y) -> dict[str, str]:
    """A reviewer's labels of every sixth uploaded cell (image → label)."""
    return dict(zip(query.paths[::6], y[N_REFERENCE::6]))


@pytest.mark.parametrize("matrix_read", [True, False], ids=["reference-matrix-read", "reference-in-parts"])
def test_first_start_and_retrain_with_uploads_hold_no_concatenated_matrix(tmp_path, stores, matrix_read):
    """With uploaded cells, the pool concatenated the reference matrix and the uploaded one at the first start
    (the standardiser) and at each retrain (the labelled rows): a second copy of every row. Now the first
    start reads each store a block at a time and a retrain the labelled rows only, whether the reference
    store holds its matrix (read for neighbours) or reads its parts."""
    from hemoembed.tasks.active.estimator import IncrementalLinearSVM

    reference, query, X, y = stores
    if matrix_read:
        reference.embeddings()
    nbytes = X.nbytes
    IncrementalLinearSVM(classes=["a", "b"]).fit(np.eye(4, dtype=np.float32), np.array(["a", "b", "a", "b"]))

    start, app = traced_peak(lambda: versions(tmp_path, reference, query, y))
    assert start < 0.5 * nbytes  # before: 1.45 with the reference matrix read (its copy), 2.4 without; now 0.4
    retrain, _ = traced_peak(lambda: app.teach(corrections(query, y), "review"))
    assert retrain < 0.5 * nbytes  # before: as at the start; now 0.35


def test_the_pool_gives_the_rows_standardiser_and_model_of_the_concatenated_matrix(tmp_path, stores):
    """Byte for byte what the concatenated matrix gave: rows by pool index, the standardiser, and the model
    taught on reference labels plus corrections of uploaded cells (saved as a version)."""
    from hemoembed.app.models import ReviewPool
    from hemoembed.tasks.active import pool_standardiser, standardise
    from hemoembed.tasks.active.estimator import IncrementalLinearSVM

    reference, query, X, y = stores
    pool = ReviewPool(reference, query)
    rows = np.array([6299, 0, 5999, 6000, 17, 6150])
    assert pool.rows_embeddings(rows).tobytes() == X[rows].tobytes()
    app = versions(tmp_path, reference, query, y)
    mean, scale = app.session.standardiser()
    for got, want in zip((mean, scale), pool_standardiser(X)):
        assert got.tobytes() == want.tobytes()
    app.teach(corrections(query, y), "review")
    taught = np.concatenate([np.arange(150), N_REFERENCE + np.arange(0, N_UPLOADED, 6)])
    expected = IncrementalLinearSVM(classes=sorted(set(y))).fit(standardise(X, mean, scale)[taught], y[taught])
    app.save(1)
    with np.load(tmp_path / "data" / "versions" / "v1.npz", allow_pickle=False) as data:
        saved = {k: data[k] for k in data.files}
    for key, value in expected.state().items():
        assert app.session.model()["model"].state()[key].tobytes() == value.tobytes()
        assert saved[key].tobytes() == value.tobytes()
    assert saved["mean"].tobytes() == mean.tobytes() and saved["scale"].tobytes() == scale.tobytes()
