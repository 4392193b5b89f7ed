"""Embedding images into a store: real encoder (32 px, random weights), real files, a real killed subprocess."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hemoembed.data.manifest import load_manifest, read_manifest_csv
from hemoembed.data.preprocess import PreprocessingRecord
from hemoembed.errors import InputError
from hemoembed.model.encoder import (
    build_encoder,
    fingerprint,
    load_encoder,
    save_encoder,
)
from hemoembed.store.embed import embed_images, run_embed
from hemoembed.store.store import EmbeddingStore

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A saved 32-px encoder and the loaded model, record and fingerprint."""
    path = tmp_path_factory.mktemp("enc") / "encoder.keras"
    save_encoder(build_encoder(PreprocessingRecord(image_size=32), weights="none"), path)
    model, record = load_encoder(path)
    return path, model, record, fingerprint(model)


def _cells(folder: Path, n: int, seed: int = 0, start: int = 0) -> list[Path]:
    """``n`` distinct random JPEG/PNG crops in two class folders."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        path = folder / ("a" if i % 2 else "b") / f"cell_{i:03d}.{'png' if i % 3 == 0 else 'jpg'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def _direct(model, record, files) -> np.ndarray:
    """Reference embeddings: the single decoding path + preprocessing + model, image by image."""
    import tensorflow as tf

    from hemoembed.data.preprocess import preprocess_bytes_tf

    batch = tf.stack([preprocess_bytes_tf(tf.io.read_file(str(f)), record) for f in files])
    return model(batch, training=False).numpy()


def test_embed_images_matches_direct_forward_and_skips_corrupt(tmp_path, encoder):
    _, model, record, _ = encoder
    files = _cells(tmp_path, 5)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(files[1].read_bytes()[:200])  # truncated JPEG
    paths = [str(files[0]), str(bad), *map(str, files[1:])]
    emb, ok = embed_images(model, record, paths, batch_size=2)
    assert ok.tolist() == [0, 2, 3, 4, 5]
    assert emb.shape == (5, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, _direct(model, record, files), atol=1e-5)


def test_append_duplicates_and_rejects(tmp_path, encoder):
    _, model, record, fp = encoder
    images = tmp_path / "images"
    files = _cells(images, 6)
    (images / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    store = EmbeddingStore.open_or_create(tmp_path / "store", fp, record, 1280)
    first = run_embed(model, record, store, load_manifest(images), batch_size=4, part_size=4)
    assert (first.embedded, first.present, first.reused, first.rejected) == (6, 0, 0, 1)
    assert first.summary() == "6 embedded, 0 already present, 1 rejected"
    assert len(first.parts) == 2 and len(store) == 6
    with open(tmp_path / "store" / "rejects.csv") as handle:
        rejects = list(csv.DictReader(handle))
    assert [r["path"] for r in rejects] == ["a/broken.jpg"] and "not an image" in rejects[0]["reason"]
    before = store.embeddings().copy()

    # new files, a copy of a stored image under a new path, and two identical new files
    _cells(images, 2, seed=1, start=100)
    shutil.copy(files[0], images / "b" / "copy_of_0.png")
    twin = _cells(tmp_path / "twins", 1, seed=2)[0]
    shutil.copy(twin, images / "a" / "twin_1.jpg")
    shutil.copy(twin, images / "b" / "twin_2.jpg")
    (images / "a" / "broken.jpg").unlink()
    second = run_embed(model, record, store, load_manifest(images), batch_size=4, part_size=100)
    assert (second.embedded, second.present, second.reused, second.rejected) == (3, 6, 2, 0)
    assert len(second.parts) == 1 and len(store) == 11
    assert len(store.paths) == len(set(store.paths))
    emb = dict(zip(store.paths, store.embeddings()))
    np.testing.assert_array_equal(emb["b/copy_of_0.png"], emb[files[0].relative_to(images).as_posix()])
    np.testing.assert_array_equal(emb["a/twin_1.jpg"], emb["b/twin_2.jpg"])
    np.testing.assert_array_equal(store.embeddings()[:6], before)

    third = run_embed(model, record, store, load_manifest(images), batch_size=4)
    assert (third.embedded, third.present, third.parts) == (0, 11, [])


def test_metadata_columns_stored_but_never_labels(tmp_path, encoder):
    _, model, record, fp = encoder
    files = _cells(tmp_path / "img", 3)
    manifest_csv = tmp_path / "img" / "manifest.csv"
    rows = [f"{f.relative_to(tmp_path / 'img').as_posix()},s{i},p{i},{'ab'[i % 2]}" for i, f in enumerate(files)]
    manifest_csv.write_text("path,site,patient,label\n" + "\n".join(rows) + "\n")
    store = EmbeddingStore.open_or_create(tmp_path / "store", fp, record, 1280)
    run_embed(model, record, store, read_manifest_csv(manifest_csv), batch_size=8)
    assert store.metadata_columns == ["site", "patient"]
    assert store.column("site") == ["s0", "s1", "s2"]
    with pytest.raises(InputError, match="no column 'ward'"):
        run_embed(model, record, store, read_manifest_csv(manifest_csv), metadata=["ward"])


def test_strict_refuses_before_writing(tmp_path, encoder):
    _, model, record, fp = encoder
    images = tmp_path / "images"
    _cells(images, 2)
    (images / "a" / "empty.png").write_bytes(b"")
    store = EmbeddingStore.open_or_create(tmp_path / "store", fp, record, 1280)
    with pytest.raises(InputError, match="a/empty.png: empty file"):
        run_embed(model, record, store, load_manifest(images), strict=True)
    assert store.part_files() == []


def test_a_second_writer_is_refused_while_one_embeds(tmp_path, encoder):
    """Two embeds into one store at once would embed the same images twice: the second is refused."""
    from hemoembed.store.lock import LOCK_FILE, writer_lock

    _, model, record, fp = encoder
    images = tmp_path / "images"
    _cells(images, 2)
    store = EmbeddingStore.open_or_create(tmp_path / "store", fp, record, 1280)
    with writer_lock(store.directory):  # another writer, as far as flock is concerned (its own open file)
        with pytest.raises(InputError, match=rf"another hemoembed process \(pid {os.getpid()}\) is writing"):
            run_embed(model, record, store, load_manifest(images))
        assert store.part_files() == []
    result = run_embed(model, record, store, load_manifest(images))  # released: the next writer goes ahead
    assert result.embedded == 2 and len(store.part_files()) == 1
    # a finished writer leaves the lock file empty: the next refused writer must not name a finished process
    assert (store.directory / LOCK_FILE).read_text() == ""


def _cli(*args):
    """Invoke the real ``hemoembed`` command line in this process (the encoder is small; TF is loaded once)."""
    from click.testing import CliRunner

    from hemoembed.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_embed_info_neighbors_and_fingerprint_refusal(tmp_path, encoder):
    enc_path, _model, _record, fp = encoder
    images = tmp_path / "images"
    files = _cells(images, 8)
    out = _cli("embed", enc_path, images, "--store", tmp_path / "store", "--batch-size", "4")
    assert out.exit_code == 0, out.output[-2000:]
    assert "8 embedded, 0 already present, 0 rejected" in out.stdout

    info = _cli("store", "info", tmp_path / "store")
    assert info.exit_code == 0 and "8 rows, 8 unique" in info.stdout and fp in info.stdout

    query = files[3].relative_to(images).as_posix()
    nn = _cli("neighbours", tmp_path / "store", "--encoder", enc_path, "--image", files[3], "-k", "3",
              "--out", tmp_path / "nn.csv")
    assert nn.exit_code == 0, nn.output[-2000:]
    with open(tmp_path / "nn.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["neighbor"] == query and float(rows[0]["distance"]) < 1e-5
    store = EmbeddingStore.open(tmp_path / "store")
    expected, _ = store.neighbors(store.embeddings()[store.paths.index(query)], k=4)
    by_path = _cli("neighbours", tmp_path / "store", "--path", query, "-k", "3")
    assert [line.split()[2] for line in by_path.stdout.splitlines()] == [store.paths[i] for i in expected[0, 1:]]
    again = _cli("neighbours", tmp_path / "store", "--path", query, "--out", tmp_path / "nn.csv")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    neither = _cli("neighbours", tmp_path / "store")
    assert neither.exit_code == 2 and "either --path" in neither.stderr
    missing = _cli("neighbours", tmp_path / "store", "--path", "a/nope.jpg")
    assert missing.exit_code == 2 and "'a/nope.jpg' is not in the store" in missing.stderr

    other_fp = "f" * 64  # a store built by another encoder
    EmbeddingStore.create(tmp_path / "other_store", other_fp, PreprocessingRecord(image_size=32), 1280)
    refused = _cli("embed", enc_path, images, "--store", tmp_path / "other_store")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert fp[:12] in refused.stderr and other_fp[:12] in refused.stderr
    assert not list((tmp_path / "other_store").glob("part-*"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    not_store = _cli("embed", enc_path, images, "--store", tmp_path / "notes")
    assert not_store.exit_code == 2 and "not an embedding store" in not_store.stderr
    into_images = _cli("embed", enc_path, images, "--store", images, "--overwrite")
    assert into_images.exit_code == 2 and "is the input folder" in into_images.stderr
    assert len(list(images.rglob("*.*"))) == 8
    assert len(EmbeddingStore.open(tmp_path / "store")) == 8


def test_kill_at_any_moment_then_rerun_completes_without_duplicates(tmp_path, encoder):
    enc_path, model, record, fp = encoder
    images = tmp_path / "images"
    files = _cells(images, 64)
    store_dir = tmp_path / "store"
    args = [sys.executable, "-m", "hemoembed", "embed", enc_path, images, "--store", store_dir,
            "--batch-size", "2", "--part-size", "2"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    deadline = time.monotonic() + 300
    while not list(store_dir.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "embed finished before it could be killed"

    killed = EmbeddingStore.open(store_dir)  # valid right after the kill
    n_killed = len(killed)
    assert 0 < n_killed < 64 and len(set(killed.paths)) == n_killed
    assert killed.embeddings().shape == (n_killed, 1280)

    store = EmbeddingStore.open_or_create(store_dir, fp, record, 1280)
    rerun = run_embed(model, record, store, load_manifest(images), batch_size=16)
    assert rerun.summary() == f"{64 - n_killed} embedded, {n_killed} already present, 0 rejected"
    assert len(store) == 64 and sorted(store.paths) == sorted(f.relative_to(images).as_posix() for f in files)
    assert not list(store_dir.glob(".part.tmp-*"))
    order = [store.paths.index(f.relative_to(images).as_posix()) for f in files[:8]]
    np.testing.assert_allclose(store.embeddings()[order], _direct(model, record, files[:8]), atol=1e-5)


@pytest.mark.realdata
def test_real_pbc_sample_embeds_and_joins_wbcatt(tmp_path, encoder):
    if not SHARED.is_dir():
        pytest.skip(f"real data folder {SHARED.resolve()} is absent")
    _, model, record, fp = encoder
    root = SHARED / "pbc256"
    wbcatt = SHARED / "wbcatt" / "pbc_attr_v1_val.csv"
    with open(wbcatt) as handle:
        labelled = [row["path"] for row in csv.DictReader(handle)][:150]
    unlabelled = sorted((root / "PBC_dataset_normal_DIB" / "platelet").glob("*.jpg"))[:50]
    paths = labelled + [p.relative_to(root).as_posix() for p in unlabelled]
    manifest_csv = tmp_path / "sample.csv"
    manifest_csv.write_text("path\n" + "\n".join(paths) + "\n")
    store = EmbeddingStore.open_or_create(tmp_path / "store", fp, record, 1280)
    result = run_embed(model, record, store, read_manifest_csv(manifest_csv, image_root=root), batch_size=64)
    assert (result.embedded, result.rejected, len(store)) == (200, 0, 200)
    assert set(store.table().column("width").to_pylist()) == {256}

    vectors, labels, keys = store.join(wbcatt, missing="drop")
    assert keys == labelled and vectors.shape == (150, 1280)
    assert set(labels["label"]) <= {"Neutrophil", "Eosinophil", "Monocyte", "Basophil", "Lymphocyte"}
    with pytest.raises(InputError, match="are not in store"):
        store.join(wbcatt)
    idx, dist = store.neighbors(vectors[:10], k=1)
    assert idx[:, 0].tolist() == [store.paths.index(k) for k in keys[:10]] and float(dist.max()) < 1e-5


def _tree_digest(folder: Path) -> dict[str, str]:
    import hashlib

    from hemoembed.store.lock import is_lock_file

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not is_lock_file(p.name)}


def test_overwrite_takes_the_lock_first_and_refuses_while_another_writer_runs(tmp_path, encoder):
    """The store another writer holds is never removed (it once ended up with rows of two encoders)."""
    from hemoembed.store.lock import writer_lock

    enc_path, _model, _record, fp = encoder
    images = tmp_path / "images"
    _cells(images, 4)
    assert _cli("embed", enc_path, images, "--store", tmp_path / "store").exit_code == 0
    before = _tree_digest(tmp_path / "store")
    with writer_lock(tmp_path / "store"):  # a running embed, as far as flock is concerned
        result = _cli("embed", enc_path, images, "--store", tmp_path / "store", "--overwrite")
        assert result.exit_code == 2 and "another hemoembed process" in result.stderr, result.output
        assert _tree_digest(tmp_path / "store") == before
    again = _cli("embed", enc_path, images, "--store", tmp_path / "store", "--overwrite")
    assert again.exit_code == 0 and "4 embedded" in again.stdout, again.output
    assert EmbeddingStore.open(tmp_path / "store").fingerprint == fp


def test_a_failed_embed_leaves_no_store_and_keeps_the_last_config(tmp_path, encoder):
    enc_path, _model, _record, _fp = encoder
    images = tmp_path / "images"
    _cells(images, 3)
    for args in (["--batch-size", "0"], ["--part-size", "-1"], ["--metadata", "ward"], ["--metadata", "path"]):
        result = _cli("embed", enc_path, images, "--store", tmp_path / "new", *args)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.output)
        assert not (tmp_path / "new").exists(), args  # no empty store left bound to the encoder
    (images / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    strict = _cli("embed", enc_path, images, "--store", tmp_path / "new", "--strict")
    assert strict.exit_code == 2 and "broken.jpg" in strict.stderr and not (tmp_path / "new").exists()
    (images / "a" / "broken.jpg").unlink()
    assert _cli("embed", enc_path, images, "--store", tmp_path / "store", "--batch-size", "2").exit_code == 0
    config = (tmp_path / "store" / "embed_config.json").read_text()
    (images / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    failed = _cli("embed", enc_path, images, "--store", tmp_path / "store", "--strict", "--batch-size", "3")
    assert failed.exit_code == 2
    assert (tmp_path / "store" / "embed_config.json").read_text() == config  # the last good run's settings


def test_embed_and_check_apply_one_size_rule(tmp_path, encoder):
    """A 3x3 image: check rejects it, and so does embed (with the same reason), instead of embedding noise."""
    enc_path, _model, _record, _fp = encoder
    images = tmp_path / "images"
    _cells(images, 2)
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(images / "a" / "tiny.png")
    check = _cli("check", images)
    assert check.exit_code == 2 and "tiny image (3x3 < 16 px)" in check.stderr, check.output
    result = _cli("embed", enc_path, images, "--store", tmp_path / "store")
    assert result.exit_code == 0 and "2 embedded, 0 already present, 1 rejected" in result.stdout, result.output
    assert "a/tiny.png,tiny image (3x3 < 16 px)" in (tmp_path / "store" / "rejects.csv").read_text()
