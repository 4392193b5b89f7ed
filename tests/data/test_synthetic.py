"""Synthetic leukocytes: layout, determinism, class separability, site shift and Reinhard recovery."""
from __future__ import annotations

import contextlib
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hemoembed.data.colour import ReinhardReference, image_lab_stats, reinhard_normalize
from hemoembed.data.synthetic import (
    CLASSES,
    SiteStyle,
    make_synthetic_dataset,
    render_cell,
    site_style,
)
from hemoembed.errors import InputError

N_PER_CLASS, SITES, SIZE = 40, 2, 64


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def _load(root: Path, rows: list[dict[str, str]]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / r["path"])) for r in rows])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """One 2-site dataset shared by the statistical tests (400 images of 64 px, ~1.5 s)."""
    root = tmp_path_factory.mktemp("synthetic") / "cells"
    manifest = make_synthetic_dataset(root, n_per_class=N_PER_CLASS, sites=SITES, size=SIZE, seed=3)
    rows = _rows(manifest)
    return root, manifest, rows, _load(root, rows)


def test_layout_and_manifest(dataset):
    root, manifest, rows, images = dataset
    assert manifest == root / "manifest.csv"
    with open(manifest, newline="") as handle:
        assert next(csv.reader(handle)) == ["path", "label", "site"]
    assert len(rows) == len(CLASSES) * N_PER_CLASS * SITES
    assert Counter(r["label"] for r in rows) == {c: N_PER_CLASS * SITES for c in CLASSES}
    assert Counter((r["label"], r["site"]) for r in rows) == {
        (c, f"site{s}"): N_PER_CLASS for c in CLASSES for s in range(SITES)
    }
    paths = [r["path"] for r in rows]
    assert len(set(paths)) == len(paths)
    for r in rows:
        assert "\\" not in r["path"]
        label, name = r["path"].split("/")
        assert label == r["label"] and name.startswith(r["site"] + "_") and name.endswith(".png")
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert on_disk == sorted(paths)
    site_manifests = [f"site{k}.csv" for k in range(SITES)]
    assert sorted(p.name for p in root.iterdir()) == sorted([*CLASSES, "manifest.csv", *site_manifests])
    for k, name in enumerate(site_manifests):  # one manifest per site, same columns, that site's rows in order
        assert _rows(root / name) == [r for r in rows if r["site"] == f"site{k}"]
    assert images.shape == (len(rows), SIZE, SIZE, 3) and images.dtype == np.uint8
    # Sortable names: lexical order equals index order within a class folder.
    names = sorted(p.name for p in (root / "monocyte").glob("site0_*.png"))
    assert [int(n[6:-4]) for n in names] == list(range(N_PER_CLASS))


def test_rerun_with_fewer_sites_removes_the_stale_site_manifests(tmp_path):
    make_synthetic_dataset(tmp_path / "cells", n_per_class=1, sites=3, size=32, seed=0)
    (tmp_path / "cells" / "site_notes.csv").write_text("mine\n")
    make_synthetic_dataset(tmp_path / "cells", n_per_class=1, sites=2, size=32, seed=0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "cells").glob("*.csv")) == [
        "manifest.csv", "site0.csv", "site1.csv", "site_notes.csv"]


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", n_per_class=3, sites=2, size=48, seed=7)
    again = make_synthetic_dataset(tmp_path / "b", n_per_class=3, sites=2, size=48, seed=7)
    other = make_synthetic_dataset(tmp_path / "c", n_per_class=3, sites=2, size=48, seed=8)
    assert first.read_bytes() == again.read_bytes()
    rows = _rows(first)
    a, b = _load(first.parent, rows), _load(again.parent, rows)
    np.testing.assert_array_equal(a, b)
    for r in rows:  # byte-identical files, not only pixels
        assert (first.parent / r["path"]).read_bytes() == (again.parent / r["path"]).read_bytes()
    c = _load(other.parent, rows)
    assert np.mean(np.abs(a.astype(int) - c.astype(int))) > 10.0
    assert all(not np.array_equal(x, y) for x, y in zip(a, c))


def test_render_cell_shape_and_sizes():
    style = site_style(0, 0)
    for size in (32, 96, 150):
        img = render_cell(np.random.default_rng(0), "neutrophil", style, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
    with pytest.raises(InputError, match="platelet"):
        render_cell(np.random.default_rng(0), "platelet", style, 64)


def test_classes_show_their_characteristic_colours():
    """Eosinophils are the only cells with many red-orange granule pixels; lymphocytes are small."""
    style = site_style(0, 0)
    orange, dark = {}, {}
    for c, cls in enumerate(CLASSES):
        imgs = np.stack([render_cell(np.random.default_rng([11, c, i]), cls, style, 96)
                         for i in range(12)]).astype(int)
        r, g, b = imgs[..., 0], imgs[..., 1], imgs[..., 2]
        orange[cls] = float(np.mean((r - b > 120) & (g < 130)))
        dark[cls] = float(np.mean(r + g + b < 330))  # nucleus and basophilic granules
    others = max(v for k, v in orange.items() if k != "eosinophil")
    assert orange["eosinophil"] > 0.03 and orange["eosinophil"] > 10 * others
    assert dark["basophil"] > dark["neutrophil"]  # granules hide the nucleus in dark purple
    assert dark["lymphocyte"] > 0.05  # nucleus fills most of the small cell


def test_linear_model_separates_classes_within_a_site(dataset):
    _, _, rows, images = dataset
    # Measured (seeds 0-3, 40 cells/class, 64 px): site0 0.83-0.88; site1 0.63-0.90 (its blur and
    # magnification vary; 0.90 for seed 3, used here). Chance is 0.2.
    for site, threshold in (("site0", 0.7), ("site1", 0.6)):
        keep = [i for i, r in enumerate(rows) if r["site"] == site]
        small = images[keep].reshape(len(keep), 16, SIZE // 16, 16, SIZE // 16, 3).mean(axis=(2, 4))
        x = small.reshape(len(keep), -1) / 255.0
        y = np.array([CLASSES.index(rows[i]["label"]) for i in keep])
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        accuracy = cross_val_score(model, x, y, cv=cv).mean()
        assert accuracy >= threshold, (site, accuracy)


def test_site_styles_differ_and_reference_is_fixed():
    assert site_style(0, 0) == site_style(0, 99) == SiteStyle(site=0)
    assert site_style(1, 0) == site_style(1, 0)
    assert site_style(1, 0) != site_style(1, 1)
    for seed in range(5):
        ref, other = site_style(0, seed), site_style(1, seed)
        assert abs(other.scale - 1.0) >= 0.1
        assert other.blur_sigma >= ref.blur_sigma + 0.4
        assert np.linalg.norm(np.subtract(other.nucleus_gain, ref.nucleus_gain)) >= 0.15
    with pytest.raises(InputError, match="-1"):
        site_style(-1, 0)


def _site_images(rows, images, site):
    return images[[i for i, r in enumerate(rows) if r["site"] == site]]


def _mean_lab_stats(images) -> np.ndarray:
    return np.mean([np.concatenate(image_lab_stats(img)) for img in images], axis=0)


def test_site_shift_in_colour_and_reinhard_reduces_it(dataset):
    _, _, rows, images = dataset
    site0, site1 = _site_images(rows, images, "site0"), _site_images(rows, images, "site1")
    rgb0 = site0.reshape(-1, 3).mean(axis=0)
    rgb_distance = np.linalg.norm(rgb0 - site1.reshape(-1, 3).mean(axis=0))
    assert rgb_distance > 12.0  # measured 17-57 grey levels over seeds 0-9, sites 1-3; 33 here

    reference = ReinhardReference.from_images(list(site0))
    normalised = np.stack([reinhard_normalize(img, reference) for img in site1])
    before = np.linalg.norm(_mean_lab_stats(site0) - _mean_lab_stats(site1))
    after = np.linalg.norm(_mean_lab_stats(site0) - _mean_lab_stats(normalised))
    assert before > 0.02  # measured 0.03-0.21 over seeds 0-9, sites 1-3; 0.078 here
    assert after < 0.3 * before, (before, after)  # measured ratio 0.03-0.12
    rgb_after = np.linalg.norm(rgb0 - normalised.reshape(-1, 3).mean(axis=0))
    assert rgb_after < 0.4 * rgb_distance


def test_refuses_non_empty_folder_and_overwrite_replaces(tmp_path):
    out = tmp_path / "cells"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="cells"):
        make_synthetic_dataset(out, n_per_class=2, sites=1, size=32)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    make_synthetic_dataset(out, n_per_class=3, sites=2, size=32, overwrite=True)
    manifest = make_synthetic_dataset(out, n_per_class=2, sites=1, size=32, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert len(_rows(manifest)) == 2 * len(CLASSES)
    assert len(list(out.rglob("*.png"))) == 2 * len(CLASSES)  # stale images removed
    with pytest.raises(InputError, match="not empty"):
        make_synthetic_dataset(out, n_per_class=1, sites=1, size=32)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        make_synthetic_dataset(tmp_path / "file", n_per_class=1, size=32)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"n_per_class": 0}, "n_per_class.*0"),
        ({"sites": 0}, "sites.*0"),
        ({"sites": 9}, "sites.*9"),
        ({"size": 31}, "size.*31"),
        ({"size": 1025}, "size.*1025"),
        ({"n_per_class": 2.5}, "n_per_class.*2.5"),
        ({"seed": -1}, "seed.*-1"),
        ({"sites": True}, "sites.*True"),
    ],
)
def test_bad_arguments_raise_input_error(tmp_path, kwargs, shown):
    with pytest.raises(InputError, match=shown):
        make_synthetic_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_progress_advances_once_per_image_up_to_its_length(tmp_path):
    """The progress protocol: one stage whose advances add up to its length (a bar never overshoots)."""
    stages: list[tuple[int, str, list[int]]] = []

    @contextlib.contextmanager
    def progress(length, label):
        stages.append((length, label, []))
        yield stages[-1][2].append

    make_synthetic_dataset(tmp_path / "p", n_per_class=2, sites=2, size=32, progress=progress)
    [(length, label, steps)] = stages
    assert (length, label) == (2 * 2 * len(CLASSES), "rendering") and steps == [1] * length
