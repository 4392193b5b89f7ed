"""The approximate neighbour index: tuned to a recall target, equal to exact search where it probes every
cell, saved in the store and refused once the store changes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hemoembed.cli import main
from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.data.synthetic_embeddings import structured_embeddings
from hemoembed.errors import InputError, MismatchError
from hemoembed.store.index import NeighbourIndex, default_nlist
from hemoembed.store.neighbors import knn
from hemoembed.store.store import EmbeddingStore, make_part_table

FP = "c" * 64


def _store(tmp_path, n=3000, dim=32, parts=3, seed=0):
    X, _ = structured_embeddings(n, dim=dim, n_classes=6, seed=seed)
    store = EmbeddingStore.create(tmp_path / "store", FP, PreprocessingRecord(image_size=32), dim)
    for rows in np.array_split(np.arange(n), parts):
        store.append(make_part_table([f"c/{i:05d}.png" for i in rows], [f"{i:064d}" for i in rows],
                                     [32] * len(rows), [32] * len(rows), X[rows]))
    return EmbeddingStore.open(tmp_path / "store"), X


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_index_reaches_its_recall_target_and_reports_it(tmp_path, metric):
    store, X = _store(tmp_path)
    built = NeighbourIndex.build(store, metric=metric, target_recall=0.95, recall_queries=100)
    assert built.info.nlist == default_nlist(3000) == 46 and built.info.recall >= 0.95
    assert built.info.recall_by_nprobe[str(built.info.nprobe)] == round(built.info.recall, 4)
    # an independent check on other queries: recall@10 of the saved index against exact search
    loaded = NeighbourIndex.load(EmbeddingStore.open(tmp_path / "store"), metric)
    rows = np.arange(1, 3000, 29)
    approx, dist = loaded.search(X[rows], 10, exclude=rows)
    exact, exact_dist = knn(X[rows], X, 10, metric=metric, exclude=rows)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)])
    assert recall >= 0.9 and not (approx == rows[:, None]).any()  # never its own neighbour
    same = approx == exact
    np.testing.assert_allclose(dist[same], exact_dist[same], atol=2e-3)  # rows kept as float16


def test_probing_every_cell_is_exact(tmp_path):
    store, X = _store(tmp_path, n=1200)
    built = NeighbourIndex.build(store, nlist=8, recall_queries=50)
    built.index.nprobe = 8
    approx, _ = built.search(X[:40], 5)
    exact, _ = knn(X[:40], X, 5)
    assert np.mean(approx == exact) > 0.98  # float16 rows may swap near-ties


def test_index_is_refused_when_missing_or_when_the_store_grew(tmp_path):
    store, X = _store(tmp_path, n=1000)
    with pytest.raises(InputError, match="no approximate cosine index; build it with: hemoembed store index"):
        store.neighbours(X[:1], 5, approximate=True)
    NeighbourIndex.build(store, recall_queries=20)
    idx, _ = store.neighbours(X[:2], 5, approximate=True, exclude=[0, 1])
    assert idx.shape == (2, 5) and 0 not in idx[0]
    with pytest.raises(InputError, match="no approximate euclidean index"):
        store.neighbours(X[:1], 5, metric="euclidean", approximate=True)
    store.append(make_part_table(["new/0.png"], ["f" * 64], [32], [32], X[:1]))
    with pytest.raises(MismatchError, match="covers 1000 rows in 3 parts, the store now has 4 parts; rebuild"):
        EmbeddingStore.open(tmp_path / "store").neighbours(X[:1], 5, approximate=True)
    with pytest.raises(InputError, match="cannot index 1001 rows in 5000 cells"):
        NeighbourIndex.build(EmbeddingStore.open(tmp_path / "store"), nlist=5000)


def test_store_index_and_approximate_neighbours_commands(tmp_path):
    _store(tmp_path, n=2000)
    runner = CliRunner()
    built = runner.invoke(main, ["store", "index", str(tmp_path / "store"), "--recall", "0.9"])
    assert built.exit_code == 0, built.output
    info = json.loads((tmp_path / "store" / "index" / "cosine.json").read_text())
    assert f"recall@10 {info['recall']:.3f}" in built.output and info["recall"] >= 0.9 and info["rows"] == 2000
    out = tmp_path / "nn.csv"
    args = ["neighbours", str(tmp_path / "store"), "--path", "c/00007.png", "-k", "5", "--out", str(out)]
    approx = runner.invoke(main, [*args, "--approximate"])
    assert approx.exit_code == 0, approx.output
    approx_rows = out.read_text().splitlines()
    exact = runner.invoke(main, [*args, "--overwrite"])
    assert exact.exit_code == 0, exact.output
    exact_rows = out.read_text().splitlines()
    assert approx_rows[0] == exact_rows[0] == "query,rank,neighbor,distance"
    assert len(approx_rows) == 6 and len({r.split(",")[2] for r in approx_rows[1:]} &
                                         {r.split(",")[2] for r in exact_rows[1:]}) >= 4
    assert "c/00007.png" not in {r.split(",")[2] for r in approx_rows[1:]}
    missing = runner.invoke(main, ["neighbours", str(tmp_path / "store"), "--path", "c/00007.png", "--approximate",
                                   "--metric", "euclidean"])
    assert missing.exit_code == 2 and "hemoembed store index" in missing.output
