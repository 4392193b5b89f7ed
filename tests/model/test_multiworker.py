"""``pretrain --strategy multiworker`` with two real worker processes on 127.0.0.1 (``TF_CONFIG``): equal to a
one-process run of the same global batch split over two replicas, killed mid-run and resumed."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hemoembed.data.synthetic import make_synthetic_dataset

ROOT = Path(__file__).parents[2]
# Two epochs (one before the kill, one after) on 25 cells (two steps of 8 an epoch): every collective costs a
# round trip between the workers, so the run is kept to what the kill and the resume need.
ARGS = ["--weights", "none", "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--lr", "3e-3",
        "--warmup-epochs", "0", "--val-fraction", "0.2", "--seed", "3"]
# The one-process reference: the same global batch on two replicas (two logical CPUs, --strategy mirrored).
# Dropout and stochastic-depth masks are drawn per replica, so a one-replica run (--strategy one) differs by
# those masks only (about 0.01 in loss per epoch here; README); with two replicas the runs are the same.
TWO_REPLICAS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hemoembed.cli import main
main(sys.argv[1:])
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), **extra}


def _workers(cells: Path, run: Path, tmp: Path, *extra: str) -> list[subprocess.Popen]:
    """Start worker 0 (the chief) and worker 1, each with its own TMPDIR, sharing --out."""
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "hemoembed", "pretrain", str(cells), "--out", str(run), *ARGS,
             "--strategy", "multiworker", *extra], cwd=ROOT, env=_env(tmp / f"worker{index}", TF_CONFIG=config),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv") as handle:
        # a probe column without labels to score is empty ("" -> NaN)
        return [{k: float(v or "nan") for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_two_workers_equal_one_process_and_resume_after_a_worker_is_killed(tmp_path, request):
    cells = tmp_path / "cells"
    make_synthetic_dataset(cells, n_per_class=5, sites=1, size=40, seed=1)
    reference = tmp_path / "one_process"
    # the one-process reference runs beside the workers (each process spends most of its time importing
    # TensorFlow and tracing on one core): the test's wall time is the workers', not the sum
    one = subprocess.Popen([sys.executable, "-c", TWO_REPLICAS, "pretrain", str(cells), "--out", str(reference), *ARGS,
                            "--strategy", "mirrored"], cwd=ROOT, env=_env(tmp_path / "tmp_ref"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    request.addfinalizer(lambda: one.poll() is None and (one.kill(), one.wait()))  # a failed assert leaves none

    run = tmp_path / "run"
    chief, worker = _workers(cells, run, tmp_path)
    pointer = run / "checkpoints" / "checkpoint.json"
    deadline = time.time() + 1200
    while not pointer.exists() and chief.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert chief.poll() is None, chief.stdout.read()[-3000:]  # epoch 1 saved, still training
    os.kill(worker.pid, signal.SIGKILL)  # one worker dies mid-run: the chief's collectives fail
    worker.wait()
    try:
        chief.wait(timeout=180)
    except subprocess.TimeoutExpired:
        chief.kill()
        chief.wait()
    assert not (run / "encoder.keras").exists()
    done = json.loads(pointer.read_text())["epoch"]
    assert done == 1  # the chief cannot finish epoch 2 without the killed worker

    procs = _workers(cells, run, tmp_path, "--resume")  # both restart, on new ports
    outputs = [p.communicate(timeout=1800)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert f"run written to {run}" in outputs[0] and "worker done; the chief wrote the run" in outputs[1]
    assert "epoch 2/2" in outputs[0] and "epoch 1/2" not in outputs[0]  # from the last epoch saved

    reference_output = one.communicate(timeout=1800)[0]
    assert one.returncode == 0, reference_output[-3000:]
    got, want = _history(run), _history(reference)
    assert [r["epoch"] for r in got] == [1, 2]
    for column in ("loss", "val_loss", "lr"):  # equal to the one-process run, epoch by epoch
        np.testing.assert_allclose([r[column] for r in got], [r[column] for r in want], rtol=1e-4, atol=1e-6)
    # the chief wrote the run; no worker left run files in its temporary folder (TensorFlow's own autograph
    # sources of the killed processes may remain there)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in reference.iterdir())
    for index in range(2):
        left = [p.relative_to(tmp_path) for p in (tmp_path / f"worker{index}").rglob("*")
                if p.suffix in (".npz", ".keras", ".csv", ".json") or p.name == "checkpoints"]
        assert not left, left
