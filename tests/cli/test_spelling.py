"""One spelling (colour, neighbours) on the command line; the old spellings work one more release, with a
warning on stderr."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import write_store

from hemoembed.cli import main
from hemoembed.data.synthetic_embeddings import structured_embeddings

FAST = ["--perplexity", "5", "--n-iter", "20", "--early-exaggeration-iter", "10", "--pca", "0", "--n-jobs", "1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    X, y = structured_embeddings(40, dim=8, n_classes=2, seed=0)
    return write_store(tmp_path_factory.mktemp("spelling") / "store", X, y)


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_neighbours_and_its_old_name(store):
    query = store.paths[0]
    new = _run("neighbours", store.directory, "--path", query, "-k", "3")
    old = _run("neighbors", store.directory, "--path", query, "-k", "3")
    assert new.exit_code == 0 == old.exit_code, (new.output, old.output)
    assert new.stdout == old.stdout and len(new.stdout.splitlines()) == 3
    assert new.stderr == ""
    assert "'hemoembed neighbors' is deprecated" in old.stderr and "'hemoembed neighbours'" in old.stderr
    listed = _run("--help").stdout
    assert "neighbours" in listed and "neighbors" not in listed


def test_colour_by_and_its_old_spelling(store, tmp_path):
    new = _run("tsne", store.directory, "--colour-by", "label", "--out", tmp_path / "new", *FAST)
    old = _run("tsne", store.directory, "--color-by", "label", "--out", tmp_path / "old", *FAST)
    assert new.exit_code == 0 == old.exit_code, (new.output, old.output)
    assert (tmp_path / "new" / "map_label.png").is_file() and (tmp_path / "old" / "map_label.png").is_file()
    assert new.stderr == "" and "--color-by is deprecated" in old.stderr and "use --colour-by" in old.stderr
    assert "--color-by" not in _run("tsne", "--help").stdout
