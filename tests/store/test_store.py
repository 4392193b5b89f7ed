"""Embedding store format, reading, join and exact neighbours (no encoder needed: parts are built directly)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError, MismatchError
from hemoembed.store.neighbors import knn
from hemoembed.store.store import EmbeddingStore, make_part_table

FP_A = "a" * 64
FP_B = "b" * 64
RECORD = PreprocessingRecord(image_size=32)


def _rows(n: int, dim: int, seed: int, prefix: str = "img"):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    paths = [f"{prefix}/{i:03d}.png" for i in range(n)]
    shas = [f"{seed:02d}{i:062d}" for i in range(n)]
    return paths, shas, emb


def _store_with_parts(tmp_path, sizes=(5, 7), dim=6, site=True):
    store = EmbeddingStore.create(tmp_path / "store", FP_A, RECORD, dim)
    all_paths, all_emb = [], []
    for part, n in enumerate(sizes):
        paths, shas, emb = _rows(n, dim, seed=part, prefix=f"p{part}")
        meta = {"site": [f"s{part}"] * n} if site else None
        store.append(make_part_table(paths, shas, [40] * n, [30] * n, emb, meta))
        all_paths += paths
        all_emb.append(emb)
    return store, all_paths, np.concatenate(all_emb)


def test_round_trip_parts_and_header(tmp_path):
    _store, paths, emb = _store_with_parts(tmp_path)
    reopened = EmbeddingStore.open(tmp_path / "store")
    assert [p.name for p in reopened.part_files()] == ["part-00000.parquet", "part-00001.parquet"]
    assert len(reopened) == 12 and reopened.dim == 6 and reopened.fingerprint == FP_A
    assert reopened.record == RECORD
    assert reopened.paths == paths
    got = reopened.embeddings()
    assert got.dtype == np.float32 and got.shape == (12, 6)
    np.testing.assert_array_equal(got, emb)
    table = reopened.table()
    assert table.column_names == ["path", "sha256", "width", "height", "site"]  # embeddings() reads those
    assert reopened.column("site") == ["s0"] * 5 + ["s1"] * 7
    header = json.loads((tmp_path / "store" / "store.json").read_text())
    assert {"format_version", "fingerprint", "record", "dim", "dtype", "hemoembed_version", "created"} <= set(header)
    assert header["record"]["image_size"] == 32 and header["dtype"] == "float32"
    info = reopened.info()
    assert info["rows"] == 12 and info["parts"] == 2 and info["metadata_columns"] == ["site"]
    assert info["part_rows"] == {"part-00000.parquet": 5, "part-00001.parquet": 7}


def test_parts_are_written_with_fixed_size_float32_lists(tmp_path):
    store, _, _ = _store_with_parts(tmp_path, sizes=(3,))
    schema = pq.read_schema(store.part_files()[0])
    emb_type = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == 6
    assert emb_type.value_type == pa.float32()
    assert not list((tmp_path / "store").glob(".part.tmp-*"))


def test_embeddings_are_read_into_one_matrix(tmp_path):
    """Peak memory of reading is the matrix plus one part: no concatenated copy, no Arrow table kept."""
    import tracemalloc

    sizes, dim = (400,) * 10, 64
    store, _, emb = _store_with_parts(tmp_path, sizes=sizes, dim=dim, site=False)
    reopened = EmbeddingStore.open(tmp_path / "store")
    reopened.table()
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    got = reopened.embeddings()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(got, emb)
    part_bytes = 400 * dim * 4
    assert emb.nbytes <= peak < emb.nbytes + 4 * part_bytes, (peak, emb.nbytes)  # the matrix and a part or so
    assert pa.total_allocated_bytes() - arrow_before < 3 * part_bytes, (pa.total_allocated_bytes(), arrow_before)
    assert not got.flags.writeable


def test_rows_embeddings_reads_only_the_rows_asked_for(tmp_path):
    store, paths, emb = _store_with_parts(tmp_path, sizes=(5, 7, 3), site=False)
    new = np.full((1, 6), 9.0, np.float32)
    store.append(make_part_table([paths[1]], ["f" * 64], [40], [30], new))  # row 1 moves to the end
    reopened = EmbeddingStore.open(tmp_path / "store")
    order = [paths.index(p) for p in reopened.paths[:-1]]
    got = reopened.rows_embeddings([13, 0, 6, 14])
    np.testing.assert_array_equal(got, np.stack([emb[order[13]], emb[order[0]], emb[order[6]], new[0]]))
    assert reopened.embeddings_read is None  # the whole matrix was never read
    np.testing.assert_array_equal(reopened.rows_embeddings([13, 0]), reopened.embeddings()[[13, 0]])
    assert reopened.embeddings_read is reopened.embeddings()  # read once, then served from memory
    reopened.refresh()
    assert reopened.embeddings_read is None
    with pytest.raises(InputError, match="out of range"):
        reopened.rows_embeddings([15])
    assert reopened.paths_at([13, 0, 14, 13]) == [reopened.paths[r] for r in (13, 0, 14, 13)]
    assert reopened.paths_at([14]) == [paths[1]] and reopened.paths_at([]) == []
    with pytest.raises(InputError, match="out of range"):
        reopened.paths_at([15])


def test_float16_store_round_trip_and_refusals(tmp_path):
    store = EmbeddingStore.create(tmp_path / "half", FP_A, RECORD, 6, dtype="float16")
    paths, shas, emb = _rows(9, 6, seed=1)
    store.append(make_part_table(paths, shas, [40] * 9, [30] * 9, emb, dtype="float16"))
    reopened = EmbeddingStore.open(tmp_path / "half")
    assert reopened.dtype == "float16" and reopened.info()["dtype"] == "float16"
    got = reopened.embeddings()
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, emb.astype(np.float16))
    assert reopened.rows_embeddings([2]).dtype == np.float32
    assert pq.read_schema(reopened.part_files()[0]).field("embedding").type.value_type == pa.float16()
    with pytest.raises(MismatchError, match="embedding.*halffloat"):  # a float32 part cannot join a float16 store
        reopened.append(make_part_table(paths, shas, [40] * 9, [30] * 9, emb))
    with pytest.raises(MismatchError, match="float16, not float32"):
        EmbeddingStore.open_or_create(tmp_path / "half", FP_A, RECORD, 6, dtype="float32")
    with pytest.raises(InputError, match="dtype 'int8'"):
        EmbeddingStore.create(tmp_path / "bad", FP_A, RECORD, 6, dtype="int8")


def test_info_reads_no_embeddings(tmp_path, monkeypatch):
    _store_with_parts(tmp_path, sizes=(5, 7))
    reopened = EmbeddingStore.open(tmp_path / "store")
    monkeypatch.setattr(EmbeddingStore, "_part_embeddings", lambda *a: pytest.fail("info read embeddings"))
    info = reopened.info()
    assert info["rows"] == 12 and info["unique_images"] == 12 and info["metadata_columns"] == ["site"]
    assert info["bytes"] == sum(p.stat().st_size for p in reopened.part_files())


def test_newest_row_wins_when_a_path_changes(tmp_path):
    store, paths, _emb = _store_with_parts(tmp_path, sizes=(4,), site=False)
    new = np.full((1, 6), 9.0, np.float32)
    store.append(make_part_table([paths[1]], ["f" * 64], [40], [30], new))
    assert len(store) == 4
    assert store.paths == [paths[0], paths[2], paths[3], paths[1]]
    np.testing.assert_array_equal(store.embeddings()[-1], new[0])
    assert store.info()["part_rows"] == {"part-00000.parquet": 4, "part-00001.parquet": 1}


def test_fingerprint_mismatch_names_both(tmp_path):
    _store_with_parts(tmp_path, sizes=(2,))
    with pytest.raises(MismatchError) as err:
        EmbeddingStore.open_or_create(tmp_path / "store", FP_B, RECORD, 6)
    assert FP_A[:12] in str(err.value) and FP_B[:12] in str(err.value)
    with pytest.raises(MismatchError, match="preprocessing"):
        EmbeddingStore.open_or_create(tmp_path / "store", FP_A, PreprocessingRecord(image_size=64), 6)
    assert len(EmbeddingStore.open_or_create(tmp_path / "store", FP_A, RECORD, 6)) == 2


def test_refuses_wrong_dimension_and_non_store(tmp_path):
    store, _, _ = _store_with_parts(tmp_path, sizes=(2,))
    paths, shas, emb = _rows(2, 5, seed=9)
    with pytest.raises(MismatchError, match=r"\[5\], the store \(dimension 6\)"):
        store.append(make_part_table(paths, shas, [1, 1], [1, 1], emb))
    with pytest.raises(InputError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path)
    header = json.loads((tmp_path / "store" / "store.json").read_text())
    (tmp_path / "store" / "store.json").write_text(json.dumps({**header, "format_version": 99, "new_key": 1}))
    with pytest.raises(MismatchError, match="format 99"):
        EmbeddingStore.open(tmp_path / "store")


def test_half_written_temporary_part_is_ignored_and_cleaned(tmp_path):
    _store, _, emb = _store_with_parts(tmp_path, sizes=(3,), site=False)
    stale = tmp_path / "store" / ".part.tmp-999999999-1.parquet"
    stale.write_bytes(b"PAR1 half written")
    reopened = EmbeddingStore.open(tmp_path / "store")
    np.testing.assert_array_equal(reopened.embeddings(), emb)
    assert reopened.remove_stale_temporaries() == 1 and not stale.exists()


def test_join_aligns_csv_order_and_reports_unmatched(tmp_path):
    store, paths, emb = _store_with_parts(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label,size\n{paths[7]},b,big\n./{paths[0]},a,small\n{paths[11]},c,big\n")
    vectors, labels, keys = store.join(csv)
    assert keys == [paths[7], paths[0], paths[11]]
    np.testing.assert_array_equal(vectors, emb[[7, 0, 11]])
    assert labels == {"label": ["b", "a", "c"], "size": ["big", "small", "big"]}
    _, only, _ = store.join(csv, columns=["size"])
    assert list(only) == ["size"]

    csv.write_text(f"path,label\n{paths[1]},a\nnope/1.png,b\nnope/2.png,c\n")
    with pytest.raises(InputError) as err:
        store.join(csv)
    assert "2 of 3" in str(err.value) and "nope/1.png" in str(err.value) and "nope/2.png" in str(err.value)
    vectors, labels, keys = store.join(csv, missing="drop")
    assert keys == [paths[1]] and labels["label"] == ["a"] and vectors.shape == (1, 6)

    csv.write_text(f"path,label\n{paths[1]},a\n{paths[1]},b\n")
    with pytest.raises(InputError, match="duplicate"):
        store.join(csv)
    with pytest.raises(InputError, match="no key column 'img'"):
        store.join(csv, key="img")
    with pytest.raises(InputError, match="colour"):
        store.join(csv, columns=["colour"])


def test_join_hints_at_a_different_image_root(tmp_path):
    store, _paths, _ = _store_with_parts(tmp_path, sizes=(3,))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nroot/p0/001.png,a\n")
    with pytest.raises(InputError, match="another root"):
        store.join(csv)


def _brute(queries, base, metric):
    q, b = queries.astype(np.float64), base.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return 1.0 - q @ b.T
    return np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("block_bytes", [12 * 7 * 13, 64 * 2**20])
def test_neighbors_equal_brute_force(metric, block_bytes):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(300, 12)).astype(np.float32)
    queries = rng.normal(size=(7, 12)).astype(np.float32)
    idx, dist = knn(queries, base, 9, metric=metric, block_bytes=block_bytes)
    full = _brute(queries, base, metric)
    expected = np.argsort(full, axis=1, kind="stable")[:, :9]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(full, expected, axis=1), atol=2e-5)
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_neighbors_exclude_self_cap_k_and_validate(tmp_path):
    store, _, emb = _store_with_parts(tmp_path)
    idx, _dist = store.neighbors(emb[[2, 9]], k=3, exclude=[2, 9])
    full = _brute(emb[[2, 9]], emb, "cosine")
    full[0, 2] = full[1, 9] = np.inf
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1)[:, :3])
    idx, _ = store.neighbors(emb[4], k=50)
    assert idx.shape == (1, 12) and idx[0, 0] == 4 and sorted(idx[0].tolist()) == list(range(12))
    idx, _ = store.neighbors(emb[4], k=50, exclude=[4])
    assert idx.shape == (1, 11) and 4 not in idx[0]
    with pytest.raises(MismatchError, match="dimension 3"):
        store.neighbors(np.zeros((1, 3)), k=2)
    with pytest.raises(InputError, match="metric"):
        store.neighbors(emb[:1], k=2, metric="manhattan")
    with pytest.raises(InputError, match="at least 1"):
        store.neighbors(emb[:1], k=0)


def _edit_header(store_dir, **changes):
    header = json.loads((store_dir / "store.json").read_text())
    (store_dir / "store.json").write_text(json.dumps({**header, **changes}))


@pytest.mark.parametrize("changes,message", [
    ({"dim": 3}, r"column 'embedding' is fixed_size_list<element: float>\[6\], the store \(dimension 3\)"),
    ({"dim": 12}, r"the store \(dimension 12\)"),
    ({"dim": [6]}, "'dim' is \\[6\\], not a int"),
    ({"dim": True}, "'dim' is True, not a int"),
    ({"dim": 0}, "invalid format_version, dim or fingerprint"),
    ({"fingerprint": ["a" * 64]}, "'fingerprint' is .*, not a str"),
    ({"fingerprint": "not hex"}, "invalid format_version, dim or fingerprint"),
    ({"record": [32, 0.875]}, "'record' is .*, not a dict"),
    ({"record": {"image_size": "big"}}, "invalid preprocessing record"),
    ({"format_version": "1"}, "'format_version' is '1', not a int"),
    ({"dtype": "float64"}, "dtype 'float64' is not one of float32, float16"),
    ({"dtype": "float16"}, r"is fixed_size_list<element: float>\[6\], the store \(dimension 6\) needs .*halffloat"),
    ({"created": 7}, "'created' is 7, not a str"),
])
def test_a_damaged_header_is_refused_on_open(tmp_path, changes, message):
    """A header that disagrees with the parts used to reshape garbage (dim) or crash: one clear error now."""
    _store_with_parts(tmp_path)
    _edit_header(tmp_path / "store", **changes)
    with pytest.raises((InputError, MismatchError), match=message):
        EmbeddingStore.open(tmp_path / "store")


def test_a_header_that_is_not_an_object_or_lacks_a_key_is_refused(tmp_path):
    _store_with_parts(tmp_path)
    for text, message in (("[1, 2]", "not a JSON object"), ('{"format_version": 2}', "has no 'fingerprint'"),
                          ("{", "cannot read store header")):
        (tmp_path / "store" / "store.json").write_text(text)
        with pytest.raises(InputError, match=message):
            EmbeddingStore.open(tmp_path / "store")


@pytest.mark.parametrize("damage,message", [
    ("narrow", r"column 'embedding' is fixed_size_list<element: float>\[5\]"),
    ("no embedding", "has no 'embedding' column"),
    ("float64", "column 'embedding' is fixed_size_list<element: double>"),
    ("numeric metadata", "metadata column 'site' is int64, not text"),
    ("not parquet", "cannot read store part"),
])
def test_every_part_is_checked_against_the_header(tmp_path, damage, message):
    _store_with_parts(tmp_path, sizes=(3,))
    paths, shas, emb = _rows(2, 6, seed=4, prefix="bad")
    table = make_part_table(paths, shas, [1, 1], [1, 1], emb)
    if damage == "narrow":
        table = make_part_table(paths, shas, [1, 1], [1, 1], emb[:, :5])
    elif damage == "no embedding":
        table = table.drop(["embedding"])
    elif damage == "float64":
        table = table.set_column(4, "embedding", pa.FixedSizeListArray.from_arrays(
            pa.array(emb.astype(np.float64).reshape(-1)), 6))
    elif damage == "numeric metadata":
        table = table.append_column("site", pa.array([1, 2]))
    target = tmp_path / "store" / "part-00001.parquet"
    if damage == "not parquet":
        target.write_bytes(b"PAR1 garbage")
    else:
        pq.write_table(table, target)
    with pytest.raises((InputError, MismatchError), match=message):
        EmbeddingStore.open(tmp_path / "store")


def test_parts_with_different_metadata_columns_read_as_text(tmp_path):
    """A manifest-built part (site) plus a folder-built part (none): "" where a part lacks the column."""
    store = EmbeddingStore.create(tmp_path / "store", FP_A, RECORD, 6)
    paths, shas, emb = _rows(2, 6, seed=1, prefix="m")
    store.append(make_part_table(paths, shas, [1, 1], [1, 1], emb, {"site": ["s1", "s2"]}))
    paths, shas, emb = _rows(2, 6, seed=2, prefix="f")
    store.append(make_part_table(paths, shas, [1, 1], [1, 1], emb, {"ward": ["w", "w"]}))
    reopened = EmbeddingStore.open(tmp_path / "store")
    assert reopened.metadata_columns == ["site", "ward"]
    assert reopened.column("site") == ["s1", "s2", "", ""] and reopened.column("ward") == ["", "", "w", "w"]


def test_a_writer_never_adds_rows_to_a_store_replaced_underneath_it(tmp_path):
    """Writer A keeps its open store; the folder is rebuilt for encoder B: A's next part is refused."""
    import shutil

    store, _, _ = _store_with_parts(tmp_path, sizes=(2,))
    shutil.rmtree(tmp_path / "store")
    EmbeddingStore.create(tmp_path / "store", FP_B, RECORD, 6)
    paths, shas, emb = _rows(2, 6, seed=7, prefix="late")
    with pytest.raises(MismatchError, match="replaced while writing"):
        store.append(make_part_table(paths, shas, [1, 1], [1, 1], emb))
    assert EmbeddingStore.open(tmp_path / "store").part_files() == []
    shutil.rmtree(tmp_path / "store")
    with pytest.raises(MismatchError, match="removed or replaced"):
        store.append(make_part_table(paths, shas, [1, 1], [1, 1], emb))
def test_labelled_joins_a_csv_a_folder_or_the_stores_own_column(tmp_path):
    store, paths, emb = _store_with_parts(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,cell\n" + "".join(f"{p},{'' if i % 4 == 0 else 'abc'[i % 3]}\n"
                                               for i, p in enumerate(reversed(paths))))
    X, y = store.labelled(labels, column="cell")
    X3, y3, keys = store.labelled(labels, column="cell", return_keys=True)
    wanted = [(p, "abc"[i % 3]) for i, p in enumerate(reversed(paths)) if i % 4]
    assert keys == [p for p, _ in wanted] and y.tolist() == [c for _, c in wanted] == y3.tolist()
    np.testing.assert_array_equal(X, emb[[paths.index(p) for p in keys]])
    rows, y_rows, keys_rows = store.labelled_rows(labels, column="cell")  # the same rows, no embedding read
    assert keys_rows == keys and y_rows.tolist() == y.tolist() and store.embeddings_read is None
    np.testing.assert_array_equal(store.rows_embeddings(rows), X)
    Xs, ys = store.labelled(column="site")  # the store's own metadata column, every row: the matrix itself
    assert len(ys) == len(paths) and set(ys.tolist()) == {"s0", "s1"}
    assert Xs is store.embeddings_read and not Xs.flags.writeable
    for p in paths[:4]:  # a folder per class: class = folder name, paths relative to the folder
        (tmp_path / "tree" / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / p).write_bytes(b"\x89PNG")
    Xf, yf, kf = store.labelled(tmp_path / "tree", return_keys=True)
    assert kf == paths[:4] and yf.tolist() == [p.split("/")[0] for p in paths[:4]]
    with pytest.raises(InputError, match="no column"):
        store.labelled(labels, column="nope")


def test_neighbours_is_the_spelling_and_neighbors_warns(tmp_path):
    store, _, emb = _store_with_parts(tmp_path)
    expected = store.neighbours(emb[:2], k=3)
    with pytest.warns(DeprecationWarning, match="use EmbeddingStore.neighbours"):
        old = store.neighbors(emb[:2], k=3)
    np.testing.assert_array_equal(old[0], expected[0])
