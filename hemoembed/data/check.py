"""Dataset health check: counts, sizes, and every file that would be rejected, with the reason."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS, MAX_PIXELS, MIN_SIDE, ImageInfo, probe_many
from .manifest import Manifest


@dataclass
class CheckReport:
    """What ``hemoembed check`` found; ``rejects`` maps relative path → reason."""

    n_images: int
    class_counts: dict[str, int]
    size_histogram: dict[str, int]
    rejects: dict[str, str] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.rejects

    def reject_counts(self) -> Counter:
        return Counter(reason.split(" (")[0].split(" of ")[0] for reason in self.rejects.values())

    def summary_lines(self) -> list[str]:
        lines = [f"{self.n_images} images, {self.n_images - len(self.rejects)} usable, {len(self.rejects)} rejected"]
        if self.class_counts:
            lines.append("classes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.class_counts.items())))
        lines.append("sizes: " + ", ".join(f"{k} {v}" for k, v in self.size_histogram.items()))
        for reason, count in sorted(self.reject_counts().items()):
            lines.append(f"rejected {count}: {reason}")
        if self.ignored_files:
            lines.append(f"ignored {len(self.ignored_files)} non-image file(s), e.g. {self.ignored_files[0]}")
        return lines

    def rejects_csv_rows(self) -> list[list[str]]:
        return [["path", "reason"], *([p, r] for p, r in sorted(self.rejects.items()))]


def size_bucket(width: int, height: int) -> int:
    """Histogram bucket of the longer side: the next power of two (at least 16)."""
    edge = 16
    while edge < max(width, height):
        edge *= 2
    return edge


def check_manifest(manifest: Manifest, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
                   progress=None) -> CheckReport:
    """Decode-check every image of ``manifest``; duplicates after the first copy are rejected."""
    infos: list[ImageInfo] = probe_many(manifest.absolute(), full=True, max_pixels=max_pixels, min_side=min_side,
                                        progress=progress)
    rejects: dict[str, str] = {}
    first_by_hash: dict[str, str] = {}
    sizes: Counter = Counter()
    for rel, info in zip(manifest.paths, infos):
        if not info.ok:
            rejects[rel] = "missing file" if "No such file" in info.error else info.error
            continue
        sizes[size_bucket(info.width, info.height)] += 1
        if info.sha256 in first_by_hash:
            rejects[rel] = f"duplicate of {first_by_hash[info.sha256]} (sha256 {info.sha256[:12]})"
        else:
            first_by_hash[info.sha256] = rel
    histogram = {f"<={edge}px": count for edge, count in sorted(sizes.items())}
    counts = dict(Counter(manifest.labels)) if manifest.labels else {}
    return CheckReport(len(manifest), counts, histogram, rejects, _ignored_files(manifest))


def _ignored_files(manifest: Manifest) -> list[str]:
    """Files in a scanned folder that are not images by extension (CSV manifests have none)."""
    root = Path(manifest.source)
    if not root.is_dir():
        return []
    ignored = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        ignored += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                    if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(ignored)
