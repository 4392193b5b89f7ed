"""Image datasets: a folder (folder-per-class or flat, any depth) or a CSV manifest with a ``path`` column.

A :class:`Manifest` holds paths relative to an image root plus string metadata columns (``label`` for a
folder-per-class tree; every other CSV column as it is). Paths that escape the root are refused unless
explicitly allowed, so a manifest received from elsewhere cannot read arbitrary files; containment is
decided on the resolved path, so a symbolic link (a file, or a folder on the way) cannot lead outside either.

CSV files are read and written with the csv module end to end: a cell may hold commas, quotes, line breaks
and Unicode line separators (``\r``, U+0085, U+2028) and comes back unchanged; only the spaces and tabs
around a cell are dropped (spreadsheets add them), so a file name that begins or ends with one is not
supported in a CSV.
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
CELL_SPACE = " \t"  # stripped around every CSV cell; line separators and other whitespace are content
# What spreadsheets and data-frame libraries write for a missing value: never a class (compared lower-case).
MISSING_VALUES = frozenset({"", "nan", "na", "n/a", "#n/a", "<na>", "null"})


def label_value(value: object) -> str:
    """A label cell as the project reads it: stripped, and ``""`` (no label) for a missing-value marker."""
    text = str(value).strip()
    return "" if text.lower() in MISSING_VALUES else text


@dataclass
class Manifest:
    """Images (relative POSIX paths under ``root``) with aligned string metadata columns."""

    root: Path
    paths: list[str]
    columns: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    # the user allowed paths outside ``root`` (--allow-outside-root): a companion CSV read against the same
    # root (a pretraining run's probe labels) is held to the same rule
    allow_outside_root: bool = False

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
                        {k: [v[i] for i in idx] for k, v in self.columns.items()}, self.source,
                        self.allow_outside_root)

    def class_counts(self, column: str = "label") -> Counter:
        return Counter(self.columns.get(column, []))

    def write_csv(self, path: str | os.PathLike) -> None:
        """Write as a CSV manifest (``path`` first, then the metadata columns)."""
        from ..config import atomic_write_text, csv_text

        lines = [[PATH_COLUMN, *self.columns]]
        lines += [[p, *(self.columns[c][i] for c in self.columns)] for i, p in enumerate(self.paths)]
        atomic_write_text(Path(path), csv_text(lines))


def ensure_apart(out: str | os.PathLike, manifest: Manifest | str | os.PathLike, option: str = "--out",
                 writes_images: bool = False) -> None:
    """Refuse an output (file or folder) that is the input, contains it, or holds any of its images or its
    manifest: writing there (``--overwrite`` first removes an output) would destroy what is being read.
    ``writes_images`` also refuses a folder inside a scanned input folder (the outputs would join the input).
    ``manifest`` may also be any input file or folder (a store, a labels CSV, a saved model); an output
    inside such a folder is refused when it exists already (replacing it would change the input).
    """
    target = Path(out).resolve()
    if not isinstance(manifest, Manifest):
        source = Path(manifest).resolve()
        if source == target or source.is_relative_to(target):
            raise InputError(f"{option} {out}: {'is' if source == target else 'contains'} the input {manifest}; "
                             "choose an output apart from the input")
        if target.is_relative_to(source) and (target.exists() or Path(out).is_symlink()):
            raise InputError(f"{option} {out}: would replace part of the input {manifest}; choose an output "
                             "apart from the input")
        return
    root = manifest.root.resolve()
    source = Path(manifest.source).resolve() if manifest.source else None
    scanned = source is not None and source.is_dir()
    if target == root or root.is_relative_to(target) or (writes_images and scanned and target.is_relative_to(root)):
        where = "is" if target == root else "contains" if root.is_relative_to(target) else "lies inside"
        raise InputError(f"{option} {out}: {where} the input folder {root}; choose an output apart from the input")
    if source is not None and not scanned and source.is_relative_to(target):
        raise InputError(f"{option} {out}: would replace the input manifest {source}")
    held = next((p for p in manifest.absolute() if Path(p).is_relative_to(target)), None)
    if held is not None:
        raise InputError(f"{option} {out}: holds input image {held}; choose an output apart from the input")


def load_manifest(images: str | os.PathLike, image_root: str | os.PathLike | None = None,
                  allow_outside_root: bool = False) -> Manifest:
    """Open an ``IMAGES`` argument: a folder of images or a CSV manifest."""
    images = Path(images)
    if images.is_dir():
        if image_root is not None:
            raise InputError(f"{images}: --image-root applies to CSV manifests only, not to a folder")
        return scan_folder(images, allow_outside_root)
    if images.is_file():
        if images.suffix.lower() not in (".csv", ".tsv", ".txt"):
            raise InputError(f"{images}: expected a folder of images or a CSV manifest with a 'path' column")
        return read_manifest_csv(images, image_root, allow_outside_root)
    raise InputError(f"{images}: no such folder or manifest")


def scan_folder(folder: Path, allow_outside_root: bool = False) -> Manifest:
    """All image files below ``folder``; labels are the parent folder names when every image has one.

    Linked folders are not entered; a linked file that resolves outside ``folder`` is refused unless allowed.
    """
    folder = folder.resolve()
    paths: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                rel = Path(dirpath, name).relative_to(folder).as_posix()
                if os.path.islink(folder / rel):  # walked folders are never links: only a linked file can lead out
                    _check_inside(folder / rel, folder, allow_outside_root, f"{folder}: {rel}")
                paths.append(rel)
    if not paths:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    paths.sort()
    columns: dict[str, list[str]] = {}
    if all("/" in p for p in paths):
        columns["label"] = [PurePosixPath(p).parent.name for p in paths]
    return Manifest(folder, paths, columns, str(folder), allow_outside_root)


def read_manifest_csv(csv_path: Path, image_root: str | os.PathLike | None = None,
                      allow_outside_root: bool = False) -> Manifest:
    """Read a CSV manifest; ``path`` values are relative to ``image_root`` (default: the CSV's folder)."""
    root = Path(image_root).resolve() if image_root is not None else csv_path.resolve().parent
    if not root.is_dir():
        raise InputError(f"{root}: image root is not a folder")
    lines: list[int] = []
    header, rows = read_csv_rows(csv_path, lines)
    if PATH_COLUMN not in header:
        raise InputError(f"{csv_path}: no '{PATH_COLUMN}' column (columns: {', '.join(header) or 'none'})")
    if not rows:
        raise InputError(f"{csv_path}: manifest has no rows")
    col = header.index(PATH_COLUMN)
    paths = []
    for line, row in zip(lines, rows):
        paths.append(resolve_relative(row[col], root, allow_outside_root, f"{csv_path}:{line}"))
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header) if name != PATH_COLUMN}
    return Manifest(root, paths, columns, str(csv_path), allow_outside_root)


def resolve_relative(value: str, root: Path, allow_outside_root: bool, where: str) -> str:
    """Normalise a manifest path to a POSIX path relative to ``root`` (a resolved folder); refuse escapes,
    textual (``..``, absolute paths) or through symbolic links."""
    value = value.strip(CELL_SPACE)
    if not value:
        raise InputError(f"{where}: empty path")
    if "\0" in value:
        raise InputError(f"{where}: path {value!r} contains a NUL character")
    candidate = Path(value)
    full = Path(os.path.normpath(candidate if candidate.is_absolute() else root / candidate))
    _check_inside(full, root, allow_outside_root, f"{where}: path {value!r}")
    if full.is_relative_to(root):
        return full.relative_to(root).as_posix()
    return os.path.relpath(full, root).replace(os.sep, "/")


def _check_inside(path: Path, root: Path, allow_outside_root: bool, what: str) -> None:
    """Refuse ``path`` when it, or the file a link in it leads to, lies outside ``root``."""
    if allow_outside_root:
        return
    if not path.is_relative_to(root):
        raise InputError(f"{what} is outside the image root {root} (use --allow-outside-root to permit)")
    try:
        target = path.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop
        raise InputError(f"{what}: cannot resolve ({exc})") from None
    if not target.is_relative_to(root):
        raise InputError(f"{what} is a symbolic link to {target}, outside the image root {root} "
                         "(use --allow-outside-root to permit)")


def read_csv_rows(csv_path: str | os.PathLike,
                  lines: list[int] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (or TSV) file; ragged rows are an error naming the line.

    Parsed by the csv module from the file itself (quoted cells keep their line breaks); cells are stripped
    of surrounding spaces and tabs only; blank rows are skipped. ``lines``, when given, receives the line
    number each returned row starts on.
    """
    csv_path = Path(csv_path)
    dialect = csv.excel_tab if csv_path.suffix.lower() == ".tsv" else csv.excel
    rows: list[list[str]] = []
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, dialect)
            header = [h.strip(CELL_SPACE) for h in next(reader, [])]
            if not header or not any(header):
                raise InputError(f"{csv_path}: empty CSV (no header)")
            dupes = [h for h, n in Counter(header).items() if n > 1]
            if dupes:
                raise InputError(f"{csv_path}: duplicate column(s) {', '.join(dupes)}")
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                cells = [cell.strip(CELL_SPACE) for cell in row]
                if not any(cells):
                    continue
                if len(row) != len(header):
                    raise InputError(f"{csv_path}:{line}: {len(row)} fields, header has {len(header)}")
                rows.append(cells)
                if lines is not None:
                    lines.append(line)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{csv_path}: cannot read CSV ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{csv_path}:{reader.line_num}: not a valid CSV ({exc})") from None
    return header, rows


def read_csv_records(csv_path: str | os.PathLike, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV as ``{column: cell}``; a file without every ``required`` column is refused as not
    being ``what`` (e.g. "an active-learning results CSV")."""
    header, rows = read_csv_rows(csv_path)
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{csv_path}: not {what} (missing column(s) {', '.join(missing)})")
    return [dict(zip(header, row)) for row in rows]
