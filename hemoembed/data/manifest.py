"""Image datasets: a folder (folder-per-class or flat, any depth) or a CSV manifest with a ``path`` column.

A :class:`Manifest` holds paths relative to an image root plus string metadata columns (``label`` for a
folder-per-class tree; every other CSV column as it is). Paths that escape the root are refused unless
explicitly allowed, so a manifest received from elsewhere cannot read arbitrary files.
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .imageio import IMAGE_EXTENSIONS

PATH_COLUMN = "path"


@dataclass
class Manifest:
    """Images (relative POSIX paths under ``root``) with aligned string metadata columns."""

    root: Path
    paths: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        for name, values in self.columns.items():
            if len(values) != len(self.paths):
                raise InputError(f"{self.source}: column {name!r} has {len(values)} values for {len(self.paths)} paths")

    def __len__(self) -> int:
        return len(self.paths)

    def absolute(self) -> list[str]:
        """Absolute file paths, in manifest order."""
        return [str(self.root / p) for p in self.paths]

    def column(self, name: str) -> list[str]:
        """One metadata column; a clear error names the available ones."""
        if name not in self.columns:
            have = ", ".join(self.columns) or "none"
            raise InputError(f"{self.source}: no column {name!r} (columns: {have})")
        return self.columns[name]

    @property
    def labels(self) -> list[str] | None:
        return self.columns.get("label")

    def subset(self, indices: Sequence[int]) -> Manifest:
        """A manifest of the rows at ``indices`` (same root and columns)."""
        idx = list(indices)
        return Manifest(self.root, [self.paths[i] for i in idx],
                        {k: [v[i] for i in idx] for k, v in self.columns.items()}, self.source)

    def class_counts(self, column: str = "label") -> Counter:
        return Counter(self.columns.get(column, []))

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write as a CSV manifest (``path`` first, then the metadata columns)."""
        from ..config import atomic_write_text, csv_text

        lines = [[PATH_COLUMN, *self.columns]]
        lines += [[p, *(self.columns[c][i] for c in self.columns)] for i, p in enumerate(self.paths)]
        atomic_write_text(Path(path), csv_text(lines))


def load_manifest(images: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  allow_outside_root: bool = False) -> Manifest:
    """Open an ``IMAGES`` argument: a folder of images or a CSV manifest."""
    images = Path(images)
    if images.is_dir():
        if image_root is not None:
            raise InputError(f"{images}: --image-root applies to CSV manifests only, not to a folder")
        return scan_folder(images)
    if images.is_file():
        if images.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise InputError(f"{images}: expected a folder of images or a CSV manifest with a 'path' column")
        return read_manifest_csv(images, image_root, allow_outside_root)
    raise InputError(f"{images}: no such folder or manifest")


def scan_folder(folder: Path) -> Manifest:
    """All image files below ``folder``; labels are the parent folder names when every image has one."""
    folder = folder.resolve()
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(Path(dirpath, name).relative_to(folder).as_posix())
    if not paths:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    paths.sort()
    columns: dict[str, list[str]] = {}
    if all("/" in p for p in paths):
        columns["label"] = [PurePosixPath(p).parent.name for p in paths]
    return Manifest(folder, paths, columns, str(folder))


def read_manifest_csv(csv_path: Path, image_root: str | os.PathLike | None = None,
                      allow_outside_root: bool = False) -> Manifest:
    """Read a CSV manifest; ``path`` values are relative to ``image_root`` (default: the CSV's folder)."""
    root = Path(image_root).resolve() if image_root is not None else csv_path.resolve().parent
    if not root.is_dir():
        raise InputError(f"{root}: image root is not a folder")
    header, rows = read_csv_rows(csv_path)
    if PATH_COLUMN not in header:
        raise InputError(f"{csv_path}: no '{PATH_COLUMN}' column (columns: {', '.join(header) or 'none'})")
    if not rows:
        raise InputError(f"{csv_path}: manifest has no rows")
    col = header.index(PATH_COLUMN)
    paths = []
    for line, row in enumerate(rows, start=2):
        paths.append(resolve_relative(row[col], root, allow_outside_root, f"{csv_path}:{line}"))
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header) if name != PATH_COLUMN}
    return Manifest(root, paths, columns, str(csv_path))


def resolve_relative(value: str, root: Path, allow_outside_root: bool, where: str) -> str:
    """Normalise a manifest path to a POSIX path relative to ``root``; refuse escapes."""
    value = value.strip()
    if not value:
        raise InputError(f"{where}: empty path")
    candidate = Path(value)
    full = candidate if candidate.is_absolute() else root / candidate
    full = Path(os.path.normpath(full))
    try:
        return full.relative_to(root).as_posix()
    except ValueError:
        if not allow_outside_root:
            raise InputError(f"{where}: path {value!r} is outside the image root {root} "
                             "(use --allow-outside-root to permit)") from None
        return os.path.relpath(full, root).replace(os.sep, "/")


def read_csv_rows(csv_path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (or TSV) file; ragged rows are an error naming the line."""
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: cannot read CSV ({exc})") from None
    dialect = csv.excel_tab if csv_path.suffix.lower() == ".tsv" else csv.excel
    reader = csv.reader(text.splitlines(), dialect)
    header = [h.strip() for h in next(reader, [])]
    if not header or not any(header):
        raise InputError(f"{csv_path}: empty CSV (no header)")
    dupes = [h for h, n in Counter(header).items() if n > 1]
    if dupes:
        raise InputError(f"{csv_path}: duplicate column(s) {', '.join(dupes)}")
    rows = []
    for line, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{csv_path}:{line}: {len(row)} fields, header has {len(header)}")
        rows.append([cell.strip() for cell in row])
    return header, rows
