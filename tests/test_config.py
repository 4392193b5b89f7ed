"""Atomic writes: a failed write (full disk, file-size limit) leaves the old file and no temporary behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LIMITED_WRITE = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as a full disk fails with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from hemoembed.config import atomic_write_text
try:
    atomic_write_text(__import__("pathlib").Path(sys.argv[1]), "x" * 100_000)
except OSError as exc:
    print("failed", exc.errno)
"""


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("path,label\na.png,x\n")
    run = subprocess.run([sys.executable, "-c", LIMITED_WRITE, str(target)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.stdout.startswith("failed"), run.stdout + run.stderr
    assert target.read_text() == "path,label\na.png,x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
