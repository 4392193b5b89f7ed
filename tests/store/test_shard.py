"""Several writers, one store: ``embed --shard I/N`` processes side by side, a killed shard re-run, the
per-shard lock, ``--strategy mirrored`` on two logical CPUs, and the parts read by pyarrow.dataset."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import CliResult, invoke_cli

from hemoembed.data.synthetic import make_synthetic_dataset
from hemoembed.errors import InputError
from hemoembed.store.embed import parse_shard, shard_rows
from hemoembed.store.lock import writer_lock
from hemoembed.store.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    make_synthetic_dataset(root, n_per_class=12, sites=2, size=40, seed=4)  # 120 cells in 5 class folders
    return root


@pytest.fixture(scope="module")
def whole(cells, saved_encoder, tmp_path_factory) -> EmbeddingStore:
    """The reference: one writer, every image."""
    store = tmp_path_factory.mktemp("whole") / "store"
    result = _embed(saved_encoder[1], cells, store)
    assert result.exit_code == 0, result.stderr
    return EmbeddingStore.open(store)


def _start(encoder: Path, cells: Path, store: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hemoembed", "embed", str(encoder), str(cells), "--store",
                             str(store), "--batch-size", "4", *extra], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def _embed(encoder: Path, cells: Path, store: Path, *extra: str) -> CliResult:
    """The same command run to its end in this process (no interpreter or TensorFlow start to pay)."""
    return invoke_cli("embed", encoder, cells, "--store", store, "--batch-size", "4", *extra)


def _rows(store: EmbeddingStore) -> dict[str, np.ndarray]:
    return dict(zip(store.paths, store.embeddings()))


def test_shards_are_disjoint_deterministic_and_cover_everything():
    paths = [f"c{k}/img_{i:04d}.png" for k in range(3) for i in range(400)]
    shards = [shard_rows(paths, (i, 3)) for i in (1, 2, 3)]
    assert sorted(r for s in shards for r in s) == list(range(len(paths)))
    assert all(340 < len(s) < 460 for s in shards)  # balanced by the hash (400 each on average)
    shuffled = list(reversed(paths))  # another machine lists the files in another order: the same shard
    assert {shuffled[i] for i in shard_rows(shuffled, (2, 3))} == {paths[i] for i in shards[1]}
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1-2", "a/b"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


@pytest.mark.slow
def test_two_shard_processes_fill_one_store_like_one_writer(cells, saved_encoder, whole, tmp_path):
    store = tmp_path / "store"
    procs = [_start(saved_encoder[1], cells, store, "--shard", f"{i}/2", "--part-size", "8") for i in (1, 2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    sharded = EmbeddingStore.open(store)
    assert len(sharded.part_files()) >= 4 and sharded.header.store_id  # both wrote parts, one header
    got, want = _rows(sharded), _rows(whole)
    assert sorted(got) == sorted(want) and len(sharded.paths) == len(set(sharded.paths))
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-5)
    info = sharded.info()  # from the newest part's footer, or counted when two parts were committed in a race
    assert (info["rows"], info["unique_images"]) == (len(whole), len(set(whole.sha256)))
    assert sorted(p.name for p in store.glob("rejects*.csv")) == ["rejects-shard-1-of-2.csv",
                                                                    "rejects-shard-2-of-2.csv"]
    assert (store / "embed_config-shard-2-of-2.json").is_file() and not (store / "rejects.csv").exists()

    # an existing engine reads the store's Parquet parts in place: counts per label (the class folder) over
    # every part, as in the README
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    parts = ds.dataset(sorted(str(p) for p in store.glob("part-*.parquet")), format="parquet")
    paths = parts.to_table(columns=["path"])
    labels = pc.struct_field(pc.extract_regex(paths["path"], r"(?P<label>[^/]+)/[^/]+$"), "label")
    counts = paths.append_column("label", labels).group_by("label").aggregate([("label", "count")])
    got_counts = dict(zip(counts["label"].to_pylist(), counts["label_count"].to_pylist()))
    folders = [Path(p).parent.name for p in whole.paths]
    assert got_counts == {c: folders.count(c) for c in folders} and len(got_counts) == 5


@pytest.mark.slow
def test_a_killed_shard_rerun_fills_only_its_gap(cells, saved_encoder, whole, tmp_path):
    store = tmp_path / "store"
    mine = len(shard_rows(load_paths(cells), (1, 2)))
    proc = _start(saved_encoder[1], cells, store, "--shard", "1/2", "--part-size", "4", "--batch-size", "2")
    deadline = time.time() + 600
    while not list(store.glob("part-*.parquet")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(EmbeddingStore.open(store))
    assert 4 <= done < mine, "killed before its first part or after its last"
    rerun = _embed(saved_encoder[1], cells, store, "--shard", "1/2", "--part-size", "4")
    assert rerun.exit_code == 0, rerun.stderr
    assert f"{mine - done} embedded, {done} already present" in rerun.stdout
    other = _embed(saved_encoder[1], cells, store, "--shard", "2/2")
    assert other.exit_code == 0, other.stderr
    got = EmbeddingStore.open(store)
    assert sorted(got.paths) == sorted(whole.paths) and len(got.paths) == len(set(got.paths))


def load_paths(cells: Path) -> list[str]:
    from hemoembed.data.manifest import load_manifest

    return load_manifest(cells).paths


def test_one_writer_per_shard_and_none_beside_a_whole_store_writer(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    with writer_lock(store, (1, 2)):
        with writer_lock(store, (2, 2)):  # another shard: side by side
            pass
        with pytest.raises(InputError, match=r"shard 1/2 is already being written \(pid \d+\)"):
            with writer_lock(store, (1, 2)):
                pass
        with pytest.raises(InputError, match="another hemoembed process .* is writing to this store"):
            with writer_lock(store):  # a whole-store writer (or --overwrite) waits for every shard
                pass
    with writer_lock(store):
        with pytest.raises(InputError, match=r"another hemoembed process \(pid \d+\)"):
            with writer_lock(store, (2, 2)):
                pass
    with writer_lock(store, (1, 2)):  # all released
        pass


def test_overwrite_with_a_shard_is_refused(cells, saved_encoder, tmp_path):
    result = _embed(saved_encoder[1], cells, tmp_path / "store", "--shard", "1/2", "--overwrite")
    assert result.exit_code == 2 and "--overwrite with --shard" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


TWO_DEVICES = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hemoembed.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_mirrored_embedding_on_two_devices_equals_one_device(cells, saved_encoder, whole, tmp_path):
    store = tmp_path / "mirrored"
    run = subprocess.run([sys.executable, "-c", TWO_DEVICES, "embed", str(saved_encoder[1]), str(cells), "--store",
                          str(store), "--strategy", "mirrored", "--batch-size", "6"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "120 embedded on 2 devices" in run.stdout
    import json

    assert json.loads((store / "embed_config.json").read_text())["strategy"] == "mirrored"
    got, want = _rows(EmbeddingStore.open(store)), _rows(whole)
    assert sorted(got) == sorted(want)
    for path, vector in want.items():
        np.testing.assert_allclose(got[path], vector, atol=1e-5)


@pytest.mark.slow
def test_float16_store_from_embed(cells, saved_encoder, whole, tmp_path):
    store = tmp_path / "half"
    result = _embed(saved_encoder[1], cells, store, "--dtype", "float16")
    assert result.exit_code == 0, result.stderr
    half = EmbeddingStore.open(store)
    assert half.dtype == "float16" and half.embeddings().dtype == np.float16
    got, want = _rows(half), _rows(whole)
    for path, vector in want.items():  # float16 keeps about 3 significant digits of a unit vector's entries
        np.testing.assert_allclose(got[path].astype(np.float32), vector, rtol=1e-3, atol=1e-4)
    again = _embed(saved_encoder[1], cells, store, "--dtype", "float32")
    assert again.exit_code == 2 and "store embeddings are float16, not float32" in again.stderr
