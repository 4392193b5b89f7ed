"""Dataset health check: counts, sizes, every file that would be rejected (with the reason), and warnings.

Rejected files cannot be used (unreadable, truncated, empty, tiny, missing). Byte-identical copies of
another file are usable and only a warning: public datasets hold some (PBC has), and a user decides
whether they matter; ``hemoembed check --strict`` turns every finding into an error.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE, ImageInfo, probe_many
from .manifest import Manifest

SHOWN = 3  # findings named in a message; the --out CSV lists all of them


@dataclass
class CheckReport:
    """What ``hemoembed check`` found: ``rejects`` maps relative path → reason, ``duplicates`` maps a
    byte-identical copy → the first file with those bytes."""

    n_images: int
    class_counts: dict[str, int]
    size_histogram: dict[str, int]
    rejects: dict[str, str] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """No file is rejected (warnings allowed)."""
        return not self.rejects

    @property
    def spotless(self) -> bool:
        """No finding at all: nothing rejected, no duplicate, no ignored file (``--strict``)."""
        return self.clean and not self.duplicates and not self.ignored_files

    def reject_counts(self) -> Counter:
        return Counter(reason.split(" (")[0].split(" of ")[0] for reason in self.rejects.values())

    def summary_lines(self) -> list[str]:
        usable = self.n_images - len(self.rejects)
        lines = [f"{self.n_images} images, {usable} usable, {len(self.rejects)} rejected"]
        if self.class_counts:
            lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.class_counts.items())))
        lines.append("sizes: " + (", ".join(f"{k} {v}" for k, v in self.size_histogram.items()) or "none readable"))
        for reason, count in sorted(self.reject_counts().items()):
            lines.append(f"rejected {count}: {reason}")
        return lines

    def warning_lines(self) -> list[str]:
        """One sentence per kind of warning, naming the first few files."""
        lines = []
        if self.duplicates:
            pairs = sorted(self.duplicates.items())
            named = "; ".join(f"{copy} is a copy of {first}" for copy, first in pairs[:SHOWN])
            more = f" (and {len(pairs) - SHOWN} more)" if len(pairs) > SHOWN else ""
            lines.append(f"{len(pairs)} file(s) are byte-identical copies of another file and count twice if "
                         f"kept: {named}{more}.")
        if self.ignored_files:
            lines.append(f"{len(self.ignored_files)} non-image file(s) were ignored, for example "
                         f"{self.ignored_files[0]}.")
        return lines

    def error_line(self) -> str:
        """The one-line error when files are rejected (a sentence, never a repr)."""
        first, reason = sorted(self.rejects.items())[0]
        return (f"{len(self.rejects)} of {self.n_images} images cannot be used; the first is {first}: {reason}. "
                "Pass --out FILE.csv for the full list.")

    def rejects_csv_rows(self) -> list[list[str]]:
        """``path,reason`` for every finding: rejected files, then duplicates (a warning, still usable)."""
        rows = [[p, r] for p, r in sorted(self.rejects.items())]
        rows += [[p, f"duplicate of {first} (byte-identical; a warning, the file is usable)"]
                 for p, first in sorted(self.duplicates.items())]
        return [["path", "reason"], *rows]


def size_bucket(width: int, height: int) -> int:
    """Histogram bucket of the longer side: the next power of two (at least 16)."""
    edge = 16
    while edge < max(width, height):
        edge *= 2
    return edge


def check_manifest(manifest: Manifest, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
                   progress=None) -> CheckReport:
    """Decode-check every image of ``manifest``; copies after the first file with the same bytes are
    listed as duplicates (a warning)."""
    infos: list[ImageInfo] = probe_many(manifest.absolute(), full=True, max_pixels=max_pixels, min_side=min_side,
                                        progress=progress)
    rejects: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    first_by_hash: dict[str, str] = {}
    sizes: Counter = Counter()
    for rel, info in zip(manifest.paths, infos):
        if not info.ok:
            rejects[rel] = "missing file" if "No such file" in info.error else info.error
            continue
        sizes[size_bucket(info.width, info.height)] += 1
        if info.sha256 in first_by_hash:
            duplicates[rel] = first_by_hash[info.sha256]
        else:
            first_by_hash[info.sha256] = rel
    histogram = {f"<={edge}px": count for edge, count in sorted(sizes.items())}
    counts = dict(Counter(manifest.labels)) if manifest.labels else {}
    return CheckReport(len(manifest), counts, histogram, rejects, _ignored_files(manifest), duplicates)


# Tables that live beside images (a manifest, labels): expected in a data folder, never warned about.
TABLES = (".csv", ".tsv")


def _ignored_files(manifest: Manifest) -> list[str]:
    """Files in a scanned folder that are neither images nor tables (CSV manifests have none)."""
    root = Path(manifest.source)
    if not root.is_dir():
        return []
    ignored = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        ignored += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                    if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS + TABLES)]
    return sorted(ignored)
