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
    # points do not interact: placed in blocks of 4 (as a million are, in bounded memory), from float16 rows
    np.testing.assert_allclose(loaded.transform(queries, block_rows=4), placed, atol=1e-9)
    half = loaded.transform(queries.astype(np.float16))
    assert (np.argmin(np.linalg.norm(half[:, None] - centroids[None], axis=-1), axis=1) == qy).all()


def test_fft_gradient_gives_an_equally_separated_map_and_old_headers_default_to_barnes_hut(tmp_path):
    x, y = blobs(60, seed=1)
    fft = TsneMap.fit(x, [str(i) for i in range(len(x))], TsneConfig(n_iter=150, early_exaggeration_iter=100,
                                                                     pca_dims=10, n_jobs=1, gradient="fft"))
    d = np.linalg.norm(fft.coords[:, None] - fft.coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (y[np.argsort(d, axis=1)[:, :5]] == y[:, None]).mean() > 0.97
    assert FAST.gradient_options == {"negative_gradient_method": "bh", "theta": 0.5}
    fft.save(tmp_path / "map")
    header = json.loads((tmp_path / "map" / MAP_HEADER).read_text())
    del header["config"]["gradient"], header["config"]["theta"]  # a map saved before the setting existed
    (tmp_path / "map" / MAP_HEADER).write_text(json.dumps(header))
    assert TsneMap.load(tmp_path / "map").config.gradient == "bh"


def test_bad_settings_are_one_line_errors():
    x, _ = blobs(3, seed=0)
    with pytest.raises(InputError, match="perplexity 30.0 is too large for 9 points"):
        TsneMap.fit(x, [str(i) for i in range(9)], TsneConfig(n_jobs=1))
    with pytest.raises(InputError, match="NaN"):
        TsneMap.fit(np.full((20, 4), np.nan), [str(i) for i in range(20)], FAST)
    with pytest.raises(InputError, match="gradient method 'exact'"):
        TsneMap.fit(*blobs(20, seed=0)[:1], [str(i) for i in range(60)], TsneConfig(perplexity=5, gradient="exact"))
    with pytest.raises(InputError, match="theta 0.0"):
        TsneMap.fit(*blobs(20, seed=0)[:1], [str(i) for i in range(60)], TsneConfig(perplexity=5, theta=0.0))


def make_store(directory, vectors: np.ndarray, fingerprint: str, prefix: str):
    from hemoembed.store.store import EmbeddingStore, make_part_table

    store = EmbeddingStore.create(directory, fingerprint, _record(), vectors.shape[1])
    paths = [f"{prefix}/cell{i:03d}.png" for i in range(len(vectors))]
    store.append(make_part_table(paths, ["0" * 64] * len(paths), [64] * len(paths), [64] * len(paths), vectors,
                                 {"site": [prefix] * len(paths)}))
    return paths


def test_placing_a_store_reads_it_part_by_part(fitted, tmp_path, monkeypatch):
    """place_on_map projects each part as it is read (a million 1280-d rows are never held at once) and
    places the cells exactly where transform() of the whole matrix does."""
    from hemoembed.explain.maps import place_on_map
    from hemoembed.store.store import EmbeddingStore, make_part_table

    tsne_map, _, _ = fitted
    monkeypatch.setattr(tsne_map, "source", {"fingerprint": "a" * 64})  # the store's encoder
    tsne_map.save(tmp_path / "map")
    queries, _ = blobs(7, seed=5)
    store = EmbeddingStore.create(tmp_path / "new", "a" * 64, _record(), queries.shape[1])
    paths = [f"new/cell{i:03d}.png" for i in range(len(queries))]
    for start in range(0, len(queries), 8):  # three parts: 8, 8 and 5 cells
        part = paths[start:start + 8]
        store.append(make_part_table(part, ["0" * 64] * len(part), [64] * len(part), [64] * len(part),
                                     queries[start:start + 8]))
    whole = TsneMap.load(tmp_path / "map").transform(EmbeddingStore.open(tmp_path / "new").embeddings())
    monkeypatch.setattr(EmbeddingStore, "embeddings", lambda self: pytest.fail("the whole matrix was read"))
    assert place_on_map(tmp_path / "map", tmp_path / "new", tmp_path / "placed") == 21
    rows = (tmp_path / "placed" / "query_coordinates.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == paths
    np.testing.assert_allclose([[float(v) for v in r.split(",")[1:3]] for r in rows], whole, atol=1e-5)


def _record():
    from hemoembed.data.preprocess import PreprocessingRecord

    return PreprocessingRecord(64, 1.0, "none")


def test_cli_fits_a_map_then_places_a_new_store_on_it(tmp_path, cli):
    x, y = blobs(40, seed=2)
    paths = make_store(tmp_path / "store", x, "a" * 64, "ref")
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(
        f"{p},{'abc'[k]}\n" for p, k in zip(paths, y)))
    fast = ["--n-iter", "100", "--early-exaggeration-iter", "50", "--pca", "0", "--n-jobs", "1"]
    result = cli("tsne", tmp_path / "store", "--labels", tmp_path / "labels.csv", "--colour-by", "label",
                 "--colour-by", "site", "--out", tmp_path / "map", *fast)
    assert result.exit_code == 0, result
    assert "50 + 100 iterations" in result.stdout
    for name in ("map.npz", "map.json", "coordinates.csv", "map_label.png", "map_site.png", "tsne_run.json"):
        assert (tmp_path / "map" / name).is_file(), name
    lines = (tmp_path / "map" / "coordinates.csv").read_text().splitlines()
    assert lines[0] == "path,x,y,label,site" and len(lines) == 121 and lines[1].endswith(",a,ref")

    queries, _ = blobs(4, seed=3)
    make_store(tmp_path / "new", queries, "a" * 64, "new")
    result = cli("tsne", "--map", tmp_path / "map", "--query", tmp_path / "new", "--out", tmp_path / "placed")
    assert result.exit_code == 0, result
    rows = (tmp_path / "placed" / "query_coordinates.csv").read_text().splitlines()
    assert rows[0] == "path,x,y,site" and len(rows) == 13
    assert (tmp_path / "placed" / "query_map.png").stat().st_size > 10_000

    make_store(tmp_path / "other", queries, "b" * 64, "other")
    refused = [
        (("tsne", "--map", tmp_path / "map", "--query", tmp_path / "other", "--out", tmp_path / "o1"), "encoder"),
        (("tsne", tmp_path / "store", "--out", tmp_path / "map", *fast), "--overwrite"),
        (("tsne", tmp_path / "store", "--colour-by", "cell_size", "--out", tmp_path / "o2", *fast), "cell_size"),
        (("tsne", "--map", tmp_path / "map", "--out", tmp_path / "o3"), "either STORE"),
    ]
    from click.testing import CliRunner

    from hemoembed.cli import main

    for args, needle in refused:  # in-process: the same one-line error and exit code 2, without a new interpreter
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 2 and needle in result.stderr, (result.output, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_cells_without_a_value_are_one_light_grey_category_drawn_first():
    from hemoembed.explain.plots import NO_VALUE, category_colours, plt, scatter_categories

    values = ["big", "", "small", "  ", "big"]
    fig, ax = plt.subplots()
    scatter_categories(ax, np.arange(10.0).reshape(5, 2), values, legend_title="cell_size")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"{NO_VALUE} (2)", "big (2)", "small (1)"]  # unlabelled first, so drawn underneath
    colours = category_colours([NO_VALUE, "big"])
    assert colours[NO_VALUE] == (0.85, 0.85, 0.85) and colours["big"] != colours[NO_VALUE]
    plt.close(fig)
