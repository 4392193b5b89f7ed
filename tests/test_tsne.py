"""t-SNE maps: exact iteration counts, neighbourhoods kept, pickle-free save/load, placing new points."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hemoembed.errors import InputError, MismatchError
from hemoembed.explain.tsne import MAP_ARRAYS, MAP_HEADER, TsneConfig, TsneMap

FAST = TsneConfig(n_iter=150, early_exaggeration_iter=100, pca_dims=10, n_jobs=1)


def blobs(n_per: int, seed: int, dim: int = 32, centres_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(centres_seed).normal(size=(3, dim)) * 4
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


@pytest.fixture(scope="module")
def fitted() -> tuple[TsneMap, np.ndarray, list[int]]:
    x, y = blobs(60, seed=1)
    steps: list[int] = []
    tsne_map = TsneMap.fit(x, [f"cell{i}.png" for i in range(len(x))], FAST, source={"fingerprint": "abc"},
                           progress=steps.append)
    return tsne_map, y, steps


def test_runs_exactly_early_plus_normal_iterations(fitted):
    _, _, steps = fitted
    assert FAST.total_iterations == 250
    assert sum(steps) == 250  # 100 exaggerated + 150 normal, as openTSNE counts n_iter after exaggeration
    assert TsneConfig().total_iterations == 1250 and TsneConfig().n_iter == 1000


def test_map_keeps_clusters_apart(fitted):
    tsne_map, y, _ = fitted
    coords = tsne_map.coords
    assert coords.shape == (180, 2) and np.isfinite(coords).all()
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    agreement = (y[np.argsort(d, axis=1)[:, :5]] == y[:, None]).mean()
    assert agreement > 0.97
    assert tsne_map.features.shape == (180, 10)  # PCA to 10 dims first
    assert np.allclose((coords.max(0) + coords.min(0)) / 2, 0.0)  # centred like openTSNE's transform


def test_save_load_round_trip_is_pickle_free_and_checked(fitted, tmp_path):
    tsne_map, _, _ = fitted
    tsne_map.save(tmp_path / "map")
    with np.load(tmp_path / "map" / MAP_ARRAYS, allow_pickle=False) as npz:  # plain arrays only
        assert set(npz.files) == {"features", "coords", "keys", "pca_mean", "pca_components"}
    loaded = TsneMap.load(tmp_path / "map")
    assert np.array_equal(loaded.coords, tsne_map.coords) and loaded.keys == tsne_map.keys
    assert loaded.config == tsne_map.config and loaded.source == {"fingerprint": "abc"}
    header = json.loads((tmp_path / "map" / MAP_HEADER).read_text())
    assert header["config"]["n_iter"] == 150 and len(header["sha256"]) == 64

    data = bytearray((tmp_path / "map" / MAP_ARRAYS).read_bytes())
    data[-40] ^= 0xFF
    (tmp_path / "map" / MAP_ARRAYS).write_bytes(bytes(data))
    with pytest.raises(MismatchError, match="sha256"):
        TsneMap.load(tmp_path / "map")
    with pytest.raises(InputError, match="not a t-SNE map"):
        TsneMap.load(tmp_path)


def test_transform_places_new_points_by_their_cluster(fitted, tmp_path):
    tsne_map, y, _ = fitted
    tsne_map.save(tmp_path / "map")
    loaded = TsneMap.load(tmp_path / "map")
    before = loaded.coords.copy()
    queries, qy = blobs(5, seed=7)
    placed = loaded.transform(queries)
    assert placed.shape == (15, 2)
    centroids = np.stack([before[y == k].mean(0) for k in range(3)])
    nearest = np.argmin(np.linalg.norm(placed[:, None] - centroids[None], axis=-1), axis=1)
    assert (nearest == qy).mean() == 1.0
    assert np.array_equal(loaded.coords, before)  # the reference map does not move
    with pytest.raises(MismatchError, match="dimension 8"):
        loaded.transform(queries[:, :8])


def test_bad_settings_are_one_line_errors():
    x, _ = blobs(3, seed=0)
    with pytest.raises(InputError, match="perplexity 30.0 is too large for 9 points"):
        TsneMap.fit(x, [str(i) for i in range(9)], TsneConfig(n_jobs=1))
    with pytest.raises(InputError, match="NaN"):
        TsneMap.fit(np.full((20, 4), np.nan), [str(i) for i in range(20)], FAST)
