"""Active-learning simulation: the incremental SVM is libsvm's SVM, uncertainty beats random, CLI outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import write_store

from hemoembed.data.synthetic_embeddings import structured_embeddings
from hemoembed.errors import InputError
from hemoembed.tasks.active import (
    ALL_LABELS,
    TIDY_COLUMNS,
    ActiveConfig,
    IncrementalLinearSVM,
    initial_indices,
    n_iterations,
    read_tidy_csv,
    simulate,
    tidy_csv_text,
)
from hemoembed.tasks.active.power_law import rate_test_text
from hemoembed.tasks.common import stratified_test_split


def test_incremental_svm_is_libsvm_linear_svm():
    from sklearn.svm import SVC

    X, y = structured_embeddings(400, dim=24, n_classes=4, seed=2, hard_fraction=0.3)
    X = X.astype(np.float64) * 5
    model = IncrementalLinearSVM(classes=sorted(set(y)))
    shuffled = np.random.default_rng(0).permutation(len(X))
    # grows by new rows in place (45), with a larger buffer (130, 400); a different set (shuffled) starts over
    for rows in (np.arange(40), np.arange(45), np.arange(130), np.arange(400), shuffled[:200], shuffled[:290]):
        model.fit(X[rows], y[rows])
        np.testing.assert_allclose(model._gram, X[rows] @ X[rows].T, rtol=1e-12, atol=1e-12)
        assert model._gram.flags.c_contiguous
        ref = SVC(kernel="linear", decision_function_shape="ovo").fit(X[rows], y[rows])
        np.testing.assert_allclose(model.pairwise_decision(X), ref.decision_function(X), atol=1e-6)
        assert (model.predict(X) == ref.predict(X)).all()
    proba = model.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1.0) and (model.classes_[proba.argmax(1)] == model.predict(X)).mean() > 0.97
    restored = IncrementalLinearSVM.from_state(model.state())
    np.testing.assert_allclose(restored.predict_proba(X), proba)
    partial = IncrementalLinearSVM(classes=[*sorted(set(y)), "unseen"]).fit(X[:60], y[:60])
    assert partial.predict_proba(X)[:, -1].max() == 0.0  # a class never labelled is never proposed
    with pytest.raises(InputError, match="not among the classes"):
        IncrementalLinearSVM(classes=["class0", "class1"]).fit(X[:60], y[:60])


def test_gram_is_computed_in_row_blocks(monkeypatch):
    """A fresh Gram matrix is built block by block (one X @ X.T crashes OpenBLAS at 16,000 rows)."""
    import hemoembed.tasks.active.estimator as active

    monkeypatch.setattr(active, "GRAM_BLOCK", 64)
    X, y = structured_embeddings(300, dim=16, n_classes=3, seed=4)
    model = IncrementalLinearSVM().fit(X, y)
    np.testing.assert_allclose(model._gram, X.astype(np.float64) @ X.T.astype(np.float64), rtol=1e-12)


def test_pool_statistics_and_standardising_run_in_blocks_and_in_place(monkeypatch):
    """The pool's mean and scale are np.std's, computed without a float64 copy of the pool; ``copy=False``
    standardises the caller's array itself (simulate then holds the pool once) with the same results."""
    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import pool_standardiser, standardise

    monkeypatch.setattr(active, "SCORE_ROWS", 100)
    X, y = structured_embeddings(1000, dim=16, n_classes=3, seed=6)
    X = X.astype(np.float32) * np.linspace(0.5, 3, 16, dtype=np.float32)
    mean, scale = pool_standardiser(X)
    np.testing.assert_array_equal(mean, X.mean(axis=0, dtype=np.float64).astype(np.float32))
    np.testing.assert_allclose(scale, X.std(axis=0, dtype=np.float64), rtol=1e-6)
    expected = ((X - mean) / scale).astype(np.float32)
    original = X.copy()
    copied = standardise(X, mean, scale)
    assert copied is not X and np.array_equal(X, original) and np.array_equal(copied, expected)
    assert standardise(X, mean, scale, copy=False) is X and np.array_equal(X, expected)
    frozen = original.copy()
    frozen.setflags(write=False)  # a read-only matrix (a store's) is copied, never written
    assert np.array_equal(standardise(frozen, mean, scale, copy=False), expected)
    config = ActiveConfig(strategies=("uncertainty",), batch=40, init=30, max_labels=110)
    pool, test = original[:800].copy(), original[800:].copy()
    kept = simulate(pool, y[:800], test, y[800:], config)
    assert np.array_equal(pool, original[:800])
    overwritten = simulate(pool, y[:800], test, y[800:], config, copy=False)
    assert overwritten == kept and np.array_equal(pool, standardise(original[:800], *pool_standardiser(original[:800])))


def test_a_curve_scores_the_pool_in_blocks_without_copying_it(monkeypatch):
    """Each query scores the unlabelled rows a block at a time, in place in the pool: no copy of the pool, no
    float64 copy (before: 3.2 times the pool at this size), and the same curve as scoring all rows at once."""
    import tracemalloc

    import hemoembed.tasks.active.estimator as active
    from hemoembed.tasks.active import simulate_curve

    X, y = structured_embeddings(42000, dim=64, n_classes=4, seed=7)
    X = X.astype(np.float32)
    pool, test = X[:40000], X[40000:]
    config = ActiveConfig(strategies=("uncertainty",), batch=90, init=90, max_labels=270)
    tracemalloc.start()
    try:
        blocks = simulate_curve(pool, y[:40000], test, y[40000:], strategy="uncertainty", config=config, repeat=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * pool.nbytes, (peak, pool.nbytes)
    monkeypatch.setattr(active, "SCORE_ROWS", 10**9)  # every row in one block
    whole = simulate_curve(pool, y[:40000], test, y[40000:], strategy="uncertainty", config=config, repeat=0)
    assert blocks == whole and len(whole) == 3 * 5


def _curves(seed: int) -> tuple[list[dict], int, ActiveConfig]:
    X, y = structured_embeddings(1500, dim=32, n_classes=5, seed=seed, hard_fraction=0.2)
    pool, test = stratified_test_split(y, 0.3, seed=0)
    config = ActiveConfig(strategies=("uncertainty", "random"), batch=15, init=15, repeats=2, max_labels=300)
    rows = simulate(X[pool], y[pool], X[test], y[test], config)
    return [r for r in rows if r["metric"] == "macro_f1"], len(pool), config


def _area(macro: list[dict], strategy: str) -> float:
    """Mean area under the learning curve over repeats."""
    return float(np.mean([np.mean([r["value"] for r in macro if r["strategy"] == strategy and r["repeat"] == k])
                          for k in range(2)]))


def test_uncertainty_beats_random_on_structured_embeddings():
    """On one data seed the gap is small next to the seed-to-seed spread (sd 0.006), so the claim is made
    over 20 data seeds: uncertainty's mean area under the curve is larger (measured +0.0047 on seeds 0-19;
    +0.0036 to +0.0060 on every window of 20 consecutive seeds from 0 to 69) and it wins on most seeds
    (measured 75-85 %)."""
    gaps = []
    for seed in range(20):
        macro, n_pool, config = _curves(seed)
        gaps.append(_area(macro, "uncertainty") - _area(macro, "random"))
        if seed == 3:
            assert len([r for r in macro if r["strategy"] != ALL_LABELS]) == 2 * 2 * n_iterations(n_pool, config)
            assert {r["n_labels"] for r in macro if r["strategy"] == "random"} == set(range(15, 301, 15))
        full = next(r["value"] for r in macro if r["strategy"] == ALL_LABELS)
        late_unc = [r["value"] for r in macro if r["strategy"] == "uncertainty" and r["n_labels"] == 300]
        assert np.mean(late_unc) > full - 0.01  # reaches the all-label score with 300 of 1050 labels
    assert np.mean(gaps) > 0.002, gaps
    assert np.mean(np.asarray(gaps) > 0) >= 0.6, gaps


def test_tidy_csv_round_trip_and_init_strategies(tmp_path):
    X, y = structured_embeddings(300, dim=16, n_classes=3, seed=4)
    rows = simulate(X[:240], y[:240], X[240:], y[240:],
                    ActiveConfig(strategies=("margin", "entropy"), batch=40, init=30, init_strategy="kmeans"))
    (tmp_path / "r.csv").write_text(tidy_csv_text(rows))
    back = read_tidy_csv(str(tmp_path / "r.csv"))
    assert list(back[0]) == list(TIDY_COLUMNS) and len(back) == len(rows)
    assert [r["n_labels"] for r in back if r["strategy"] == "margin" and r["metric"] == "macro_f1"] == \
        [30, 70, 110, 150, 190, 230, 240]
    chosen = initial_indices(X, y, 30, "stratified", seed=0)
    assert len(set(chosen)) == 30 and len(set(y[chosen])) == 3
    medoids = initial_indices(X, None, 12, "kmeans", seed=0)
    assert len(set(medoids)) == 12 and len(set(y[medoids])) == 3
    with pytest.raises(InputError, match="unknown strategy 'greedy'"):
        simulate(X, y, X, y, ActiveConfig(strategies=("greedy",)))


def test_a_large_pool_gets_its_ceiling_from_the_sgd_svm(monkeypatch):
    """A pool past GRAM_CEILING_MAX cells would need its whole Gram matrix: the ceiling comes from the SGD
    linear SVM, and is as good as libsvm's on the same pool."""
    from hemoembed.tasks.active import simulation

    X, y = structured_embeddings(700, dim=16, n_classes=3, seed=5)
    config = ActiveConfig(strategies=("uncertainty",), batch=40, init=30, max_labels=70)
    exact = simulate(X[:600], y[:600], X[600:], y[600:], config)
    monkeypatch.setattr(simulation, "GRAM_CEILING_MAX", 500)
    monkeypatch.setattr(IncrementalLinearSVM, "_grown_gram", _refuse_big_gram)
    large = simulate(X[:600], y[:600], X[600:], y[600:], config)

    def ceiling(rows):
        return next(r["value"] for r in rows if r["strategy"] == ALL_LABELS and r["metric"] == "macro_f1")
    assert ceiling(large) > ceiling(exact) - 0.03 and ceiling(large) > 0.8
    assert [r for r in large if r["strategy"] != ALL_LABELS] == [r for r in exact if r["strategy"] != ALL_LABELS]


_grown_gram = IncrementalLinearSVM._grown_gram


def _refuse_big_gram(self, X):
    assert len(X) <= 500, "the whole pool's Gram matrix was built"
    return _grown_gram(self, X)


@pytest.mark.slow
def test_cli_simulation_and_session(cli, tmp_path):
    X, y = structured_embeddings(500, dim=32, n_classes=4, seed=6, hard_fraction=0.3)
    store = write_store(tmp_path / "store", X, y)
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([p, c] for p, c in zip(store.paths[:400], y[:400]))
        writer.writerow([store.paths[400], ""])  # unlabelled rows are left out of the pool
    with open(tmp_path / "test.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *([p, c] for p, c in zip(store.paths[401:], y[401:]))])
    out = tmp_path / "study"
    args = ["active-learn", tmp_path / "store", "--simulate", "--labels", tmp_path / "labels.csv",
            "--test", tmp_path / "test.csv", "--batch", "40", "--init", "40", "--strategy", "uncertainty,random",
            "--repeats", "2", "--max-labels", "200", "--out", out]
    res = cli(*args)
    assert res.exit_code == 0, res
    assert "labels to come within 0.5 F1 points" in res.stdout
    rows = read_tidy_csv(str(out / "results.csv"))
    assert {r["strategy"] for r in rows} == {"uncertainty", "random", ALL_LABELS}
    assert max(r["n_labels"] for r in rows if r["strategy"] == ALL_LABELS) == 400
    assert max(r["repeat"] for r in rows) == 1
    assert json.loads((out / "active_config.json").read_text())["batch"] == 40
    analysis = json.loads((out / "analysis.json").read_text())
    assert set(analysis["labels_needed"]) == {"uncertainty", "random"}
    assert rate_test_text(analysis["rate_test_uncertainty_vs_random"]) in res.stdout.splitlines()  # as on the figure
    assert all((out / name).is_file() for name in ("fig_curves.png", "fig_rates.png", "curve_fits.csv"))

    # further calls in-process (same click group, same exit codes; saves a TensorFlow import per call)
    from click.testing import CliRunner

    from hemoembed.cli import main

    def run(*argv):
        return CliRunner().invoke(main, [str(a) for a in argv])

    again = run(*args)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    session_args = ["active-learn", tmp_path / "store", "--session", tmp_path / "lab", "--batch", "10"]
    bad = run(*session_args, "--query", "--teach", tmp_path / "labels.csv")
    assert bad.exit_code == 2 and "exactly one of" in bad.stderr
    no_classes = run(*session_args, "--status")
    assert no_classes.exit_code == 2 and "--classes" in no_classes.stderr
    session = run(*session_args, "--query", "--classes", "class0,class1,class2,class3")
    assert session.exit_code == 0, session.output
    query = list(csv.DictReader(open(tmp_path / "lab" / "to_label.csv")))
    assert len(query) == 10 and all(r["label"] == "" for r in query)
    truth = dict(zip(store.paths, y))
    for row in query:
        row["label"] = truth[row["path"]]
    with open(tmp_path / "filled.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(query[0]))
        writer.writeheader()
        writer.writerows(query)
    taught = run(*session_args, "--teach", tmp_path / "filled.csv")
    assert taught.exit_code == 0 and "taught 10 new" in taught.output, taught.output
    status = run(*session_args, "--status")
    assert "10 of 500 images labelled in 1 round(s)" in status.output
    # a session keeps its settings: the batch it was started with, and no option silently ignored
    assert run("active-learn", tmp_path / "store", "--session", tmp_path / "lab", "--query").exit_code == 0
    assert len(list(csv.DictReader(open(tmp_path / "lab" / "to_label.csv")))) == 10
    before = (tmp_path / "lab" / "session.json").read_text()
    for option, value in (("--C", "3"), ("--strategy", "random"), ("--classes", "class0,class1"),
                          ("--column", "type"), ("--seed", "5")):
        other = run(*session_args, "--query", "--overwrite", option, value)
        assert other.exit_code == 2 and f"{option} {value} differs from the " in other.stderr, other.output
        assert "Traceback" not in other.output and len(other.stderr.strip().splitlines()) == 1
    assert (tmp_path / "lab" / "session.json").read_text() == before
    same = run(*session_args, "--query", "--overwrite", "--batch", "7", "--C", "1", "--strategy", "uncertainty,random")
    assert same.exit_code == 0, same.output
    assert len(list(csv.DictReader(open(tmp_path / "lab" / "to_label.csv")))) == 7
