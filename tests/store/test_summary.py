"""``store info`` from Parquet footers: the counts every writer records with a part, and the slow way (every
path and hash) for stores written before, parts committed in a race, or records that do not add up."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.store import summary
from hemoembed.store.store import EmbeddingStore, make_part_table
from hemoembed.store.summary import COUNTS_KEY, counted_rows

FP = "a" * 64
RECORD = PreprocessingRecord(image_size=32)
ROOT = Path(__file__).resolve().parents[2]


def _part(paths, shas, dim=4, seed=0, site=None):
    emb = np.random.default_rng(seed).normal(size=(len(paths), dim)).astype(np.float32)
    meta = {"site": [site] * len(paths)} if site else None
    return make_part_table(list(paths), list(shas), [8] * len(paths), [8] * len(paths), emb, meta)


def _slow(store: EmbeddingStore) -> tuple[int, int]:
    return counted_rows(store, store.part_files())


def _fast_info(store: EmbeddingStore, monkeypatch) -> dict:
    """info() with the key columns made unreadable: it must come from footers."""
    with monkeypatch.context() as m:
        m.setattr(summary, "read_part", lambda *a: pytest.fail("info read the path/sha256 columns"))
        return EmbeddingStore.open(store.directory).info()


def test_recorded_counts_follow_new_changed_and_shared_images(tmp_path, monkeypatch):
    """Random appends: new paths, a path whose file changed, one image under two paths, repeats within a part;
    after every part the footer's counts equal the slow count and the newest row of each path."""
    rng = np.random.default_rng(3)
    store = EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    for step in range(12):
        n = int(rng.integers(1, 9))
        paths = [f"p/{i}.png" for i in rng.integers(0, 20, size=n)]  # repeats across and within parts
        shas = [f"{int(i):064d}" for i in rng.integers(0, 12, size=n)]  # changed files and shared images
        store.append(_part(paths, shas, seed=step, site="a" if step % 2 else None))
        info = _fast_info(store, monkeypatch)
        rows, unique = _slow(store)
        assert (info["rows"], info["unique_images"]) == (rows, unique) == (
            len(store), len(set(store.sha256))), step
    assert info["metadata_columns"] == ["site"] and info["parts"] == 12


def test_two_writers_in_turn_count_each_others_parts(tmp_path, monkeypatch):
    first = EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    first.append(_part(["a/1", "a/2"], ["1" * 64, "2" * 64]))
    second = EmbeddingStore.open(tmp_path / "s")
    second.append(_part(["b/1", "a/2"], ["2" * 64, "3" * 64]))  # a/2 changed; image 2 now only at b/1
    first.append(_part(["c/1"], ["1" * 64]))  # reads the other writer's part before counting
    info = _fast_info(first, monkeypatch)
    assert (info["rows"], info["unique_images"]) == (4, 3) == _slow(first)


def test_a_part_committed_in_a_race_falls_back_to_reading_the_keys(tmp_path, monkeypatch):
    """Another writer's part lands between counting and committing: that record misses its rows, so info
    counts the slow way (still right), and the writer counts again before its next part."""
    store = EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    store.append(_part(["a/1"], ["1" * 64]))
    other = EmbeddingStore.open(tmp_path / "s")
    check = store._check_header_unchanged  # runs before counting, and again just before the part gets its name
    calls = []

    def race() -> None:
        calls.append(1)
        if len(calls) == 2:
            other.append(_part(["b/1", "b/2"], ["2" * 64, "2" * 64]))
        check()

    monkeypatch.setattr(store, "_check_header_unchanged", race)
    store.append(_part(["a/2"], ["3" * 64]))
    assert [p.name for p in store.part_files()] == [f"part-0000{i}.parquet" for i in range(3)]
    newest = json.loads(pq.read_metadata(store.part_files()[-1]).metadata[COUNTS_KEY])
    assert newest["parts_before"] == 1 and newest["rows"] == 2  # stale: counted without b/1, b/2
    assert store._counts is None
    assert EmbeddingStore.open(store.directory).info()["rows"] == 4 == len(store)
    store.append(_part(["a/3"], ["4" * 64]))
    info = _fast_info(store, monkeypatch)
    assert (info["rows"], info["unique_images"]) == (5, 4) == _slow(store)


def test_stores_written_before_are_counted_the_slow_way_until_a_new_part(tmp_path, monkeypatch):
    EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    for i in range(2):  # parts as hemoembed wrote them before it recorded counts: no key in the footer
        pq.write_table(_part([f"x/{i}", "x/shared"], [f"{i}" * 64, "9" * 64]), tmp_path / "s" / f"part-0000{i}.parquet")
    old = EmbeddingStore.open(tmp_path / "s")
    assert old.info()["rows"] == 3 and old.info()["unique_images"] == 3
    with pytest.raises(pytest.fail.Exception, match="path/sha256"):
        _fast_info(old, monkeypatch)
    old.append(_part(["x/0", "y/1"], ["9" * 64, "9" * 64]))  # x/0 now holds image 9: image 0 is gone
    info = _fast_info(old, monkeypatch)
    assert (info["rows"], info["unique_images"]) == (4, 2) == _slow(old)
    assert old.table().schema.metadata is None  # the record stays in the footer, out of the rows read


@pytest.mark.parametrize("change", [{"store_id": "0" * 32}, {"rows": 99}, {"unique_images": 5, "rows": 3},
                                    {"parts_before": 0}, {"rows": "3"}, None])
def test_a_record_that_does_not_fit_is_ignored(tmp_path, monkeypatch, change):
    """A part copied from another store, a damaged or inconsistent record: info counts the rows itself."""
    store = EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    store.append(_part(["a/1", "a/2"], ["1" * 64, "2" * 64]))
    store.append(_part(["a/3"], ["2" * 64]))
    part = store.part_files()[-1]
    table = pq.read_table(part)
    record = json.loads(table.schema.metadata[COUNTS_KEY])
    value = b"{not json" if change is None else json.dumps({**record, **change}).encode()
    pq.write_table(table.replace_schema_metadata({COUNTS_KEY: value}), part)
    info = EmbeddingStore.open(store.directory).info()
    assert (info["rows"], info["unique_images"]) == (3, 2)
    with pytest.raises(pytest.fail.Exception, match="path/sha256"):
        _fast_info(store, monkeypatch)


def test_store_info_imports_neither_tensorflow_nor_sklearn_nor_pandas(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", FP, RECORD, 4)
    store.append(_part(["a/1", "a/2"], ["1" * 64, "1" * 64]))
    code = ("import sys; from hemoembed.cli import main\n"
            f"main(['store', 'info', {str(store.directory)!r}], standalone_mode=False)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'pandas', 'pyarrow.dataset') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 rows, 1 unique" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]"
