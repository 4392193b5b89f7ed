"""The test suite's own shared builders."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import built_once


def test_built_once_builds_once_and_builds_again_after_a_failed_build(tmp_path_factory):
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "made").write_text(str(len(calls)))

    first = built_once(tmp_path_factory, "helpers-test", build)
    again = built_once(tmp_path_factory, "helpers-test", build)
    assert first == again and len(calls) == 1 and (first / "made").read_text() == "1"

    def broken(folder: Path) -> None:
        (folder / "half").write_text("partial")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        built_once(tmp_path_factory, "helpers-broken", broken)
    rebuilt = built_once(tmp_path_factory, "helpers-broken", build)  # not taken for done, no leftovers
    assert sorted(p.name for p in rebuilt.iterdir()) == ["made"] and len(calls) == 2
