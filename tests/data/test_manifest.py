"""Datasets as folders or CSV manifests, with labels, metadata and a root-escape guard."""
from __future__ import annotations

import os
import re

import pytest

from hemoembed.data.manifest import load_manifest
from hemoembed.errors import InputError


def test_folder_per_class_any_depth(image_factory, tmp_path):
    for rel in ["data/a/1.png", "data/a/2.jpg", "data/b/sub/3.png", "data/b/4.bmp"]:
        image_factory(rel)
    (tmp_path / "data" / "README.txt").write_text("ignored")
    m = load_manifest(tmp_path / "data")
    assert m.paths == ["a/1.png", "a/2.jpg", "b/4.bmp", "b/sub/3.png"]
    assert m.labels == ["a", "a", "b", "sub"]


def test_flat_folder_has_no_labels(image_factory, tmp_path):
    image_factory("flat/x.png")
    image_factory("flat/deeper/y.png")
    m = load_manifest(tmp_path / "flat")
    assert m.paths == ["deeper/y.png", "x.png"] and m.labels is None


def test_csv_manifest_keeps_columns_and_uses_image_root(image_factory, tmp_path):
    image_factory("imgs/k/1.png")
    (tmp_path / "m.csv").write_text("id,path,label,site\n7,k/1.png,neutrophil,s1\n")
    m = load_manifest(tmp_path / "m.csv", image_root=tmp_path / "imgs")
    assert m.paths == ["k/1.png"] and m.columns == {"id": ["7"], "label": ["neutrophil"], "site": ["s1"]}
    assert os.path.exists(m.absolute()[0])


def test_csv_paths_default_to_csv_folder(image_factory, tmp_path):
    image_factory("sub/1.png")
    (tmp_path / "sub" / "m.csv").write_text("path\n1.png\n")
    assert load_manifest(tmp_path / "sub" / "m.csv").absolute()[0] == str(tmp_path / "sub" / "1.png")
    assert load_manifest(tmp_path / "sub" / "m.csv").allow_outside_root is False


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "a/../../x.png"])
def test_paths_escaping_the_root_are_refused(tmp_path, bad):
    (tmp_path / "m.csv").write_text(f"path\n{bad}\n")
    with pytest.raises(InputError, match=r"m.csv:2: path .* is outside the image root"):
        load_manifest(tmp_path / "m.csv")
    allowed = load_manifest(tmp_path / "m.csv", allow_outside_root=True)
    assert allowed.paths and allowed.subset([0]).allow_outside_root  # remembered for the CSVs read beside it


def test_absolute_path_inside_root_is_accepted(image_factory, tmp_path):
    target = image_factory("in/1.png")
    (tmp_path / "m.csv").write_text(f"path\n{target}\n")
    assert load_manifest(tmp_path / "m.csv", image_root=tmp_path).paths == ["in/1.png"]


@pytest.mark.parametrize("text,message", [
    ("file,label\na.png,x\n", "no 'path' column (columns: file, label)"),
    ("path,label\n", "manifest has no rows"),
    ("path,label\na.png,x,extra\n", "m.csv:2: 3 fields, header has 2"),
    ("path,path\na,b\n", "duplicate column"),
])
def test_bad_csv_manifests(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        load_manifest(tmp_path / "m.csv")


def test_missing_dataset_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder or manifest"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        load_manifest(tmp_path / "empty")


@pytest.mark.realdata
@pytest.mark.parametrize("split,rows", [("train", 6169), ("val", 1030), ("test", 3099)])
def test_all_wbcatt_rows_resolve_under_pbc256(shared_data, split, rows):
    m = load_manifest(shared_data / "wbcatt" / f"pbc_attr_v1_{split}.csv", image_root=shared_data / "pbc256")
    assert len(m) == rows
    missing = [p for p in m.absolute() if not os.path.isfile(p)]
    assert missing == []
    assert set(m.column("label")) == {"Neutrophil", "Eosinophil", "Monocyte", "Basophil", "Lymphocyte"}
    assert len(m.columns) == 13  # img_name, label, 11 attributes


ODD_NAMES = ["car\rriage.png", "next\x85line.png", "line\u2028sep.png", "para\u2029sep.png", "new\nline.png",
             "vt\x0bff\x0c.png", "fs\x1cgs\x1drs\x1e.png", 'quote"comma,.png', "trailing\r.png", "\u2028lead.png"]


def test_odd_file_names_survive_the_projects_own_csvs(image_factory, tmp_path):
    """Folder scan → manifest.csv → read back (the path normalize → check takes) keeps every name exactly."""
    from hemoembed.config import csv_text
    from hemoembed.data.manifest import read_csv_rows

    for i, name in enumerate(ODD_NAMES):
        image_factory(f"odd/c{i}/{name}", seed=i)
    scanned = load_manifest(tmp_path / "odd")
    assert sorted(p.split("/", 1)[1] for p in scanned.paths) == sorted(ODD_NAMES)
    scanned.write_csv(tmp_path / "odd" / "manifest.csv")
    again = load_manifest(tmp_path / "odd" / "manifest.csv")
    assert again.paths == scanned.paths and again.columns == scanned.columns
    assert all(os.path.isfile(p) for p in again.absolute())
    rows = [["path", "label"], *[[name, f"l{i}\u2028x"] for i, name in enumerate(ODD_NAMES)]]
    (tmp_path / "t.csv").write_text(csv_text(rows))
    assert read_csv_rows(tmp_path / "t.csv") == (rows[0], rows[1:])


def test_csv_line_numbers_count_physical_lines_and_bad_bytes_are_one_line(tmp_path):
    (tmp_path / "m.csv").write_text('path,label\n"a\nb.png",x\n\nc.png,y,extra\n')
    with pytest.raises(InputError, match=r"m.csv:5: 3 fields, header has 2"):
        load_manifest(tmp_path / "m.csv")
    (tmp_path / "nul.csv").write_bytes(b"path\na\x00.png\n")
    with pytest.raises(InputError, match="nul.csv"):
        load_manifest(tmp_path / "nul.csv")
    (tmp_path / "latin.csv").write_bytes(b"path\n\xe9.png\n")
    with pytest.raises(InputError, match="cannot read CSV"):
        load_manifest(tmp_path / "latin.csv")


def test_symbolic_links_cannot_lead_outside_the_root(image_factory, tmp_path):
    """Containment is decided on the resolved path: linked files and linked folders on the way."""
    secret = image_factory("secret/cell.png")
    image_factory("root/a/ok.png")
    (tmp_path / "root" / "a" / "escape.png").symlink_to(secret)
    with pytest.raises(InputError, match=r"escape.png is a symbolic link to .*outside the image root"):
        load_manifest(tmp_path / "root")
    assert "a/escape.png" in load_manifest(tmp_path / "root", allow_outside_root=True).paths
    (tmp_path / "root" / "a" / "escape.png").unlink()
    (tmp_path / "root" / "a" / "inside.png").symlink_to(tmp_path / "root" / "a" / "ok.png")
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "secret", target_is_directory=True)
    assert load_manifest(tmp_path / "root").paths == ["a/inside.png", "a/ok.png"]  # linked folders not entered
    (tmp_path / "root" / "m.csv").write_text("path\na/ok.png\nlinked/cell.png\n")
    with pytest.raises(InputError, match=r"m.csv:3: path 'linked/cell.png' is a symbolic link to .*secret"):
        load_manifest(tmp_path / "root" / "m.csv")
    assert load_manifest(tmp_path / "root" / "m.csv", allow_outside_root=True).paths == ["a/ok.png", "linked/cell.png"]


def test_an_output_is_never_the_input(image_factory, tmp_path):
    """is, contains, holds an image of, or (for image outputs) lies inside the input: refused."""
    from hemoembed.data.manifest import ensure_apart

    image_factory("data/a/1.png")
    image_factory("data/b/2.png")
    (tmp_path / "data" / "m.csv").write_text("path\na/1.png\n")
    folder, listed = load_manifest(tmp_path / "data"), load_manifest(tmp_path / "data" / "m.csv")
    for out, manifest, message in ((tmp_path / "data", folder, "is the input folder"),
                                   (tmp_path, folder, "contains the input folder"),
                                   (tmp_path / "data" / "normed", folder, "lies inside the input folder"),
                                   (tmp_path / "data" / "a", listed, "holds input image"),
                                   (tmp_path / "data" / "m.csv", listed, "would replace the input manifest"),
                                   (tmp_path / "data" / "a" / "1.png", listed, "holds input image")):
        with pytest.raises(InputError, match=message):
            ensure_apart(out, manifest, writes_images=True)
    ensure_apart(tmp_path / "normed", folder, writes_images=True)
    ensure_apart(tmp_path / "data" / "b", listed, writes_images=True)  # inside a manifest's root, no input there
    ensure_apart(tmp_path / "data" / "store", folder)  # no images written: a store may sit there
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "store.json").write_text("{}")
    for out in (tmp_path / "store", tmp_path / "store" / "store.json"):  # plain inputs (a store, a model folder)
        with pytest.raises(InputError, match="is the input|would replace part of the input"):
            ensure_apart(out, tmp_path / "store")
    ensure_apart(tmp_path / "store" / "new.csv", tmp_path / "store")  # a new file beside the input's own
