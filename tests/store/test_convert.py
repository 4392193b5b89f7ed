"""``store convert``: a float16 copy of a float32 store (and back) with the same rows, parts and metadata; the
two dtypes never mix in one store."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import invoke_cli

from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError, MismatchError
from hemoembed.store.convert import convert_store
from hemoembed.store.store import EmbeddingStore, make_part_table

FP = "c" * 64
RECORD = PreprocessingRecord(image_size=32)


def _source(tmp_path) -> EmbeddingStore:
    """Two parts, a metadata column in one, a path whose file changed (the newer row wins)."""
    rng = np.random.default_rng(0)
    store = EmbeddingStore.create(tmp_path / "src", FP, RECORD, 8)
    emb = rng.normal(size=(6, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    store.append(make_part_table([f"a/{i}" for i in range(4)], [f"{i}" * 64 for i in range(4)], [9] * 4, [9] * 4,
                                 emb[:4], {"site": ["x"] * 4}))
    store.append(make_part_table(["a/1", "b/0"], ["7" * 64, "0" * 64], [9, 9], [9, 9], emb[4:]))
    return EmbeddingStore.open(tmp_path / "src")


def test_float16_copy_keeps_rows_parts_and_encoder(tmp_path):
    src = _source(tmp_path)
    half = convert_store(src.directory, tmp_path / "half", "float16")
    assert half.dtype == "float16" and half.embeddings().dtype == np.float16
    np.testing.assert_array_equal(half.embeddings(), src.embeddings().astype(np.float16))
    assert half.table().equals(src.table()) and half.paths == ["a/0", "a/2", "a/3", "a/1", "b/0"]
    assert (half.fingerprint, half.record, half.dim) == (src.fingerprint, src.record, src.dim)
    assert half.header.store_id != src.header.store_id
    assert [p.name for p in half.part_files()] == [p.name for p in src.part_files()]
    info, src_info = half.info(), src.info()
    assert {k: info[k] for k in ("rows", "unique_images", "part_rows", "metadata_columns")} == {
        k: src_info[k] for k in ("rows", "unique_images", "part_rows", "metadata_columns")}
    assert json.loads((tmp_path / "half" / "convert_config.json").read_text())["source_dtype"] == "float32"
    back = convert_store(half.directory, tmp_path / "back", "float32")  # float16 to float32 is exact
    np.testing.assert_array_equal(back.embeddings(), half.embeddings().astype(np.float32))


def test_the_dtypes_never_mix_and_bad_conversions_are_refused(tmp_path):
    src = _source(tmp_path)
    half = convert_store(src.directory, tmp_path / "half", "float16")
    part = make_part_table(["c/0"], ["5" * 64], [9], [9], np.ones((1, 8), np.float32))  # float32 values
    with pytest.raises(MismatchError, match="embedding.*halffloat"):
        half.append(part)
    with pytest.raises(MismatchError, match="float16, not float32"):
        EmbeddingStore.open_or_create(half.directory, FP, RECORD, 8, dtype="float32")
    with pytest.raises(InputError, match="already float16"):
        convert_store(half.directory, tmp_path / "again", "float16")
    with pytest.raises(InputError, match="not an empty folder"):
        convert_store(src.directory, half.directory, "float16")
    with pytest.raises(InputError, match="dtype 'int8'"):
        convert_store(src.directory, tmp_path / "int8", "int8")
    assert not (tmp_path / "again").exists() and not (tmp_path / "int8").exists()
    header = json.loads((src.directory / "store.json").read_text())
    (src.directory / "store.json").write_text(json.dumps({**header, "format_version": 1}))
    with pytest.raises(MismatchError, match="weights-only fingerprint"):
        convert_store(src.directory, tmp_path / "old", "float16")


def test_store_convert_command(tmp_path):
    src = _source(tmp_path)
    out = invoke_cli("store", "convert", src.directory, "--dtype", "float16", "--out", tmp_path / "half")
    assert out.exit_code == 0, out.stderr
    assert "5 rows as float16" in out.stdout and FP[:12] in out.stdout
    assert EmbeddingStore.open(tmp_path / "half").dtype == "float16"
    again = invoke_cli("store", "convert", src.directory, "--dtype", "float16", "--out", tmp_path / "half")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    into = invoke_cli("store", "convert", src.directory, "--dtype", "float16", "--out", src.directory, "--overwrite")
    assert into.exit_code == 2 and len(EmbeddingStore.open(src.directory)) == 5
    same = invoke_cli("store", "convert", src.directory, "--dtype", "float32", "--out", tmp_path / "f32")
    assert same.exit_code == 2 and "already float32" in same.stderr and not (tmp_path / "f32").exists()
