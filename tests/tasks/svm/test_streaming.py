"""fit-svm --solver sgd and predict on a store's rows read part by part: the same answers as in memory, and
never a copy of the matrix (numpy allocations traced)."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hemoembed.errors import InputError
from hemoembed.store.matrix import StoreRows, row_groups
from hemoembed.tasks.svm import EmbeddingSVM, estimator, streaming
from hemoembed.tasks.svm.predict import prediction_table


def parted_store(directory: Path, X: np.ndarray, y: np.ndarray, part_rows: int, dtype: str = "float32"):
    """A real store holding ``X`` in parts of ``part_rows`` rows (paths ``<label>/img_<i>.png``)."""
    from hemoembed.data.preprocess import PreprocessingRecord
    from hemoembed.store.store import EmbeddingStore, make_part_table

    store = EmbeddingStore.create(directory, "f" * 64, PreprocessingRecord(image_size=32), X.shape[1], dtype=dtype)
    for start in range(0, len(X), part_rows):
        stop = min(start + part_rows, len(X))
        paths = [f"{y[i]}/img_{i:05d}.png" for i in range(start, stop)]
        store.append(make_part_table(paths, ["0" * 64] * len(paths), [32] * len(paths), [32] * len(paths),
                                     X[start:stop], {"label": list(y[start:stop])}, dtype=dtype))
    return EmbeddingStore.open(directory)


def blobs(n: int, dim: int = 32, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled Gaussian classes c0..c{k-1} in ``dim`` dimensions (float32)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(k, dim)) * 0.6
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), np.array([f"c{i}" for i in y])


@pytest.fixture
def lazy(monkeypatch):
    """Keep small StoreRows lazy (fit reads selections up to BLOCK_ROWS rows at once otherwise)."""
    monkeypatch.setattr(estimator, "BLOCK_ROWS", 0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_store_rows_are_read_part_by_part_exactly(tmp_path, dtype):
    X, y = blobs(1000, dim=8)
    store = parted_store(tmp_path / "s", X, y, part_rows=128, dtype=dtype)
    rows = np.random.default_rng(1).permutation(1000)[:300]  # any order, some parts not touched
    picked = StoreRows(store, np.arange(1000))[rows]
    expected = X[rows].astype(dtype).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(picked), expected)
    seen = np.zeros(300, int)
    for positions, block in row_groups(picked, np.random.default_rng(0)):
        seen[positions] += 1
        np.testing.assert_array_equal(block, expected[positions])
        assert block.dtype == np.float32 and len(block) <= 128
    assert (seen == 1).all()
    with pytest.raises(InputError, match="out of range"):
        np.asarray(StoreRows(store, [1000]))


def test_streamed_sgd_on_a_store_equals_it_on_the_array(tmp_path, lazy):
    X, y = blobs(600)
    store = parted_store(tmp_path / "s", X, y, part_rows=600)  # one part = the array's one block
    X_test, _ = blobs(200, seed=5)
    on_store = EmbeddingSVM("sgd").fit(StoreRows(store, np.arange(600)), y)
    in_memory = EmbeddingSVM("sgd").fit(X, y)
    np.testing.assert_array_equal(on_store.predict_proba(X_test), in_memory.predict_proba(X_test))


def test_streamed_sgd_learns_is_seeded_and_holds_its_calibration_rows_out(tmp_path, lazy):
    X, y = blobs(3000)
    store = parted_store(tmp_path / "s", X, y, part_rows=256)
    X_test, y_test = blobs(800, seed=7)
    rows = StoreRows(store, np.arange(3000))
    model = EmbeddingSVM("sgd").fit(rows, y)
    again = EmbeddingSVM("sgd").fit(rows, y)
    proba = model.predict_proba(X_test)
    np.testing.assert_array_equal(proba, again.predict_proba(X_test))
    assert np.mean(model.predict(X_test) == y_test) > 0.85
    # the same rows as a store selection and as an array: the same probabilities (row blocks differ)
    np.testing.assert_allclose(model.predict_proba(StoreRows(store, np.arange(3000))), model.predict_proba(X),
                               rtol=1e-5, atol=1e-7)
    held = streaming.calibration_rows(y, 5, held_out=True, seed=0)
    assert len(held) == 600 and len(np.unique(held)) == 600
    fractions = [np.mean(y[held] == c) / np.mean(y == c) for c in np.unique(y)]
    assert np.allclose(fractions, 1.0, atol=0.05)  # stratified
    assert len(streaming.calibration_rows(y, 5, held_out=False, seed=0)) == 3000  # few rows: all calibrate


def test_streamed_fit_and_predict_never_copy_the_matrix(tmp_path, lazy, monkeypatch):
    monkeypatch.setattr(streaming, "CALIBRATION_ROWS", 1000)  # as 50,000 of a million rows
    X, y = blobs(16_000, dim=128)
    store = parted_store(tmp_path / "s", X, y, part_rows=1000)
    matrix = X.nbytes  # 8 MB
    rows = StoreRows(store, np.arange(len(X)))
    store.table()  # the row table (paths etc.) is not the matrix: read before tracing
    EmbeddingSVM("sgd").fit(X[:400], y[:400]).predict(X[:10])  # scikit-learn's imports are not traced either
    tracemalloc.start()
    try:
        model = EmbeddingSVM("sgd").fit(rows, y)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        predicted = model.predict(rows)
        predict_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the calibration rows (1/16, a few copies in scikit-learn) and one part (1/16) at a time;
    # predicting: the probabilities and one part in float64
    assert fit_peak < 0.4 * matrix, fit_peak / matrix
    assert predict_peak < 0.35 * matrix, predict_peak / matrix
    assert np.mean(predicted == y) > 0.85


def test_fit_svm_sgd_and_predict_never_read_the_matrix(tmp_path, monkeypatch):
    from hemoembed.store.store import EmbeddingStore
    from hemoembed.tasks.svm.predict import PredictConfig, run_predict
    from hemoembed.tasks.svm.workflow import FitSVMConfig, run

    X, y = blobs(1200)
    parted_store(tmp_path / "s", X, y, part_rows=200)

    def refuse(self):
        raise AssertionError("the whole matrix was read")

    monkeypatch.setattr(EmbeddingStore, "embeddings", refuse)
    summary = run(FitSVMConfig(store=str(tmp_path / "s"), columns=["label"], solver="sgd", cv=2, n_bootstrap=20),
                  tmp_path / "svm")
    assert summary["columns"][0]["macro_f1"] > 0.8
    done = run_predict(PredictConfig(model=str(tmp_path / "svm"), store=str(tmp_path / "s")), tmp_path / "p.csv")
    assert done.n_images == 1200
    model, _ = estimator.load_svm(tmp_path / "svm" / "label")
    store = EmbeddingStore.open(tmp_path / "s")
    by_store = prediction_table([tmp_path / "svm" / "label"], StoreRows(store, np.arange(1200)), store.paths,
                                "f" * 64, "store")
    in_memory = prediction_table([tmp_path / "svm" / "label"], X, store.paths, "f" * 64, "store")
    assert [r[:2] + r[3:4] for r in by_store] == [r[:2] + r[3:4] for r in in_memory]  # labels identical
    np.testing.assert_allclose(np.asarray([r[4:] for r in by_store[1:]], float),
                               np.asarray([r[4:] for r in in_memory[1:]], float), rtol=1e-5, atol=1e-7)
