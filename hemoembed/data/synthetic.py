"""Synthetic stained leukocyte crops: the embedded default data for the demo and the tests.

Each image is rendered in optical-density space (Beer-Lambert: stains absorb, overlapping material
darkens) so that red cells overlap naturally and a site's stain change acts like a real stain change.
Classes differ the way real leukocytes do: nucleus shape, granules, cell size and cytoplasm colour.
Every site has its own stain gains, background tint, illumination gradient, blur, magnification and
noise, so a site shift (and what colour normalisation recovers) can be shown without real data.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..config import atomic_write_text
from ..errors import InputError
from ..progress import ProgressFactory, stage
from .imageio import save_png

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class SiteStyle:
    """How one acquisition site stains, lights, focuses and magnifies its smears.

    Gains multiply and offsets add to the optical density (absorbance) of each stained component;
    the background gain/offset act on the light (0..1) seen through an empty part of the slide.
    """

    site: int
    nucleus_gain: Vec3 = (1.0, 1.0, 1.0)
    nucleus_offset: Vec3 = (0.0, 0.0, 0.0)
    cytoplasm_gain: Vec3 = (1.0, 1.0, 1.0)
    cytoplasm_offset: Vec3 = (0.0, 0.0, 0.0)
    background_gain: Vec3 = (1.0, 1.0, 1.0)
    background_offset: Vec3 = (0.0, 0.0, 0.0)
    illumination: float = 0.03  # relative brightness change across the field (linear gradient)
    illumination_angle: float = 0.0  # direction of the gradient, radians
    blur_sigma: float = 0.45  # Gaussian blur in pixels at 96 px (focus / optics)
    scale: float = 1.0  # magnification relative to the reference site
    noise: float = 0.006  # sensor noise, standard deviation as a fraction of full scale


def site_style(site: int, seed: int) -> SiteStyle:
    """Style of ``site``: site 0 is the fixed CellaVision-like reference, others differ clearly.

    Other sites are drawn from (seed, site) and redrawn until their typical field colour is
    20-55 grey levels away from the reference: a visible shift, never an implausible one.
    """
    _check_range("site", site, 0, 10**6)
    if site == 0:
        return SiteStyle(site=0)
    rng = np.random.default_rng([int(seed), int(site), 0x57A1E])
    for _ in range(200):
        style = _draw_style(rng, int(site))
        if 20.0 <= _colour_shift(style) <= 55.0:
            break
    return style


def _draw_style(rng: np.random.Generator, site: int) -> SiteStyle:
    def gain(magnitude: tuple[float, float], low: float) -> Vec3:
        amount = rng.uniform(0.7, 0.85) if rng.random() < 0.4 else rng.uniform(1.15, 1.4)
        values = amount * (1.0 + rng.uniform(*magnitude) * _unit(rng))
        return _vec(np.maximum(values, low))

    tint = rng.uniform(0.9, 1.02) + _unit(rng) * rng.uniform(0.05, 0.1)
    scale = rng.uniform(0.78, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.25)
    return SiteStyle(
        site=site,
        nucleus_gain=gain((0.3, 0.5), 0.4),
        nucleus_offset=_vec(rng.uniform(-0.04, 0.08, 3)),
        cytoplasm_gain=gain((0.3, 0.55), 0.4),
        cytoplasm_offset=_vec(rng.uniform(-0.02, 0.08, 3)),
        background_gain=_vec(np.minimum(tint, 1.06)),
        background_offset=_vec(rng.uniform(-0.03, 0.03, 3)),
        illumination=float(rng.uniform(0.1, 0.25)),
        illumination_angle=float(rng.uniform(0.0, 2 * np.pi)),
        blur_sigma=float(rng.uniform(0.9, 1.6)),
        scale=float(scale),
        noise=float(rng.uniform(0.012, 0.03)),
    )


def _unit(rng: np.random.Generator) -> np.ndarray:
    direction = rng.normal(size=3)
    return direction / np.linalg.norm(direction)


def _colour_shift(style: SiteStyle) -> float:
    """RGB distance (0-255) of a typical field (background, red cells, cytoplasm, nucleus) to site 0."""

    def field(s: SiteStyle) -> np.ndarray:
        light = _LIGHT * s.background_gain + s.background_offset
        pink = np.asarray(_SPECS["neutrophil"].cytoplasm_od)
        ods = [od * s.cytoplasm_gain + s.cytoplasm_offset for od in (_RBC_OD, pink)]
        ods.append(_NUCLEUS_OD * s.nucleus_gain + s.nucleus_offset)
        seen = [light] + [light * np.exp(-np.maximum(od, 0.0)) for od in ods]
        return 255.0 * np.average(seen, axis=0, weights=[0.55, 0.25, 0.12, 0.08])

    return float(np.linalg.norm(field(style) - field(SiteStyle(site=0))))


def _vec(values) -> Vec3:
    a, b, c = (round(float(x), 6) for x in values)
    return (a, b, c)


# Reference optical densities (R, G, B absorbance) of the stained components at site 0.
_LIGHT = np.array([0.94, 0.91, 0.86])
_RBC_OD = np.array([0.10, 0.40, 0.34])
_NUCLEUS_OD = np.array([0.95, 1.45, 0.50])
_GRANULE_OD = {
    "neutrophil": np.array([0.16, 0.34, 0.16]),  # fine, pink-lilac
    "eosinophil": np.array([0.06, 0.78, 1.05]),  # coarse, red-orange
    "basophil": np.array([1.30, 1.80, 0.75]),  # coarse, dark purple
    "monocyte": np.array([0.20, 0.40, 0.15]),  # sparse azurophilic dust
}


@dataclass(frozen=True)
class _CellSpec:
    diameter: float  # cell diameter as a fraction of a 96-px field at scale 1
    cytoplasm_od: tuple[float, float, float]
    nucleus_density: float  # multiplies _NUCLEUS_OD (chromatin condensation)
    chromatin_texture: float


_SPECS = {
    "neutrophil": _CellSpec(0.50, (0.07, 0.17, 0.07), 1.0, 0.12),
    "eosinophil": _CellSpec(0.53, (0.05, 0.20, 0.20), 0.95, 0.10),
    "basophil": _CellSpec(0.45, (0.16, 0.24, 0.04), 0.55, 0.10),
    "lymphocyte": _CellSpec(0.37, (0.36, 0.19, 0.07), 1.15, 0.2),
    "monocyte": _CellSpec(0.63, (0.25, 0.23, 0.09), 0.75, 0.2),
}


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def _ellipse_sdf(u, v, cu, cv, a, b, angle):
    """Approximate signed distance (in cell radii) to an ellipse; negative inside."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = (u - cu) * c + (v - cv) * s, -(u - cu) * s + (v - cv) * c
    return (np.sqrt((x / a) ** 2 + (y / b) ** 2) - 1.0) * min(a, b)


def _arc_sdf(u, v, cu, cv, rho, start, span, half_width):
    """Signed distance to a thick circular arc (band, horseshoe or filament); negative inside."""
    mid = start + span / 2
    rel = np.angle(np.exp(1j * (np.arctan2(v - cv, u - cu) - mid)))
    ang = mid + np.clip(rel, -span / 2, span / 2)
    return np.hypot(u - cu - rho * np.cos(ang), v - cv - rho * np.sin(ang)) - half_width


def _lobes_on_arc(rng, u, v, n, rho, span, radius, filament):
    """Nucleus of ``n`` lobes strung along an arc and joined by a thin chromatin filament."""
    start = rng.uniform(0, 2 * np.pi)
    cu, cv = -rho * np.cos(start + span / 2) * 0.6, -rho * np.sin(start + span / 2) * 0.6
    sdf = _arc_sdf(u, v, cu, cv, rho, start, span, filament)
    for k in range(n):
        t = start + span * (k + rng.uniform(-0.12, 0.12)) / max(n - 1, 1)
        r = radius * rng.uniform(0.85, 1.15)
        lobe = _ellipse_sdf(u, v, cu + rho * np.cos(t), cv + rho * np.sin(t),
                            r, r * rng.uniform(0.7, 0.95), rng.uniform(0, np.pi))
        sdf = np.minimum(sdf, lobe)
    return sdf


def _nucleus_sdf(rng, cls: str, u, v):
    if cls == "neutrophil":
        n = int(rng.choice([3, 4, 5], p=[0.35, 0.45, 0.2]))
        return _lobes_on_arc(rng, u, v, n, rng.uniform(0.4, 0.52), rng.uniform(2.4, 3.6),
                             rng.uniform(0.24, 0.3), rng.uniform(0.04, 0.06))
    if cls == "eosinophil":
        return _lobes_on_arc(rng, u, v, 2, rng.uniform(0.4, 0.5), rng.uniform(1.6, 2.3),
                             rng.uniform(0.3, 0.36), rng.uniform(0.05, 0.07))
    if cls == "basophil":
        return _lobes_on_arc(rng, u, v, 2, rng.uniform(0.25, 0.35), rng.uniform(1.5, 2.5),
                             rng.uniform(0.35, 0.42), 0.15)
    if cls == "lymphocyte":
        off, ang = rng.uniform(0.04, 0.13), rng.uniform(0, 2 * np.pi)
        a = rng.uniform(0.76, 0.86)
        return _ellipse_sdf(u, v, off * np.cos(ang), off * np.sin(ang), a,
                            a * rng.uniform(0.88, 0.98), rng.uniform(0, np.pi))
    # monocyte: kidney (ellipse with a notch) or a thick horseshoe band
    if rng.random() < 0.55:
        ang = rng.uniform(0, 2 * np.pi)
        body = _ellipse_sdf(u, v, 0.08 * np.cos(ang), 0.08 * np.sin(ang), rng.uniform(0.6, 0.7),
                            rng.uniform(0.45, 0.55), ang + np.pi / 2)
        reach = rng.uniform(0.55, 0.7)
        notch = _ellipse_sdf(u, v, reach * np.cos(ang), reach * np.sin(ang), rng.uniform(0.35, 0.5),
                             rng.uniform(0.2, 0.3), ang + np.pi / 2)
        return np.maximum(body, -notch)
    start, span = rng.uniform(0, 2 * np.pi), rng.uniform(2.2, 3.4)
    return _arc_sdf(u, v, 0.0, 0.0, rng.uniform(0.36, 0.46), start, span, rng.uniform(0.24, 0.3))


def _splat(size, xs, ys, amps, sigma):
    """Gaussian blobs of peak ~``amps`` at sub-pixel positions (bilinear splat, then blur)."""
    img = np.zeros(size * size)
    x0, y0 = np.floor(xs - 0.5).astype(int), np.floor(ys - 0.5).astype(int)
    fx, fy = xs - 0.5 - x0, ys - 0.5 - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        np.add.at(img, y[ok] * size + x[ok], (amps * w)[ok])
    blurred = ndimage.gaussian_filter(img.reshape(size, size), sigma, mode="constant")
    return 1.0 - np.exp(-1.3 * blurred * (2 * np.pi * sigma**2 + 1.0))


def _granules(rng, cls, size, cx, cy, radius, nucleus, scale):
    """Granule density map (0..1) for the class, or None when it has no granules."""
    count, sigma, amp, avoid = {
        "neutrophil": (220, 0.55, (0.5, 1.0), 0.3),
        "eosinophil": (95, 1.25, (0.8, 1.3), 0.85),
        "basophil": (55, 1.35, (0.6, 1.4), 0.0),
        "monocyte": (22, 0.6, (0.3, 0.7), 0.9),
    }.get(cls, (0, 0, (0, 0), 0))
    if count == 0:
        return None
    n = int(count * rng.uniform(0.75, 1.25))
    r, t = radius * 0.93 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    xs, ys = cx + r * np.cos(t), cy + r * np.sin(t)
    ix, iy = np.clip(xs.astype(int), 0, size - 1), np.clip(ys.astype(int), 0, size - 1)
    keep = rng.random(n) >= avoid * nucleus[iy, ix]
    amps = rng.uniform(*amp, n)[keep]
    sigma_px = sigma * scale * (rng.uniform(0.85, 1.15) if cls != "neutrophil" else 1.0)
    return _splat(size, xs[keep], ys[keep], amps, max(sigma_px, 0.35))


def _red_cells(rng, size, xx, yy, radius, cx, cy, cell_r, gain, offset):
    """Optical density of pale pink discs with a lighter centre, some cut by the field edge."""
    n = int(rng.integers(5, 11) / max(radius / (0.15 * size), 0.6) ** 2)
    r = radius * rng.uniform(0.88, 1.12, n)
    x, y = rng.uniform(-0.12, 1.12, (2, n)) * size
    far = np.hypot(x - cx, y - cy) > cell_r * 0.7 + r * 0.5
    x, y, r = x[far], y[far], r[far]
    if r.size == 0:
        return np.zeros((size, size, 3))
    d = np.hypot(xx[None] - x[:, None, None], yy[None] - y[:, None, None]) / r[:, None, None]
    disc = np.clip(0.5 + (1.0 - d) * r[:, None, None] / 1.2, 0.0, 1.0)
    pallor = 1.0 - rng.uniform(0.4, 0.65, (r.size, 1, 1)) * np.exp(-((d / 0.5) ** 2))
    density = (disc * pallor * rng.uniform(0.85, 1.15, (r.size, 1, 1))).sum(axis=0)
    return density[..., None] * (_RBC_OD * gain + offset)


def _smooth_noise(rng, size, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-9)


def render_cell(rng: np.random.Generator, cls: str, style: SiteStyle, size: int) -> np.ndarray:
    """Render one ``size``×``size`` RGB uint8 crop of a ``cls`` leukocyte as seen at ``style``'s site."""
    if cls not in _SPECS:
        raise InputError(f"unknown cell class {cls!r}; expected one of {', '.join(CLASSES)}")
    _check_range("size", size, 8, 4096)
    spec, px = _SPECS[cls], size / 96.0
    xx, yy = _grid(size)
    mag = style.scale * px  # pixels per reference pixel
    n_gain, n_off = np.asarray(style.nucleus_gain), np.asarray(style.nucleus_offset)
    c_gain, c_off = np.asarray(style.cytoplasm_gain), np.asarray(style.cytoplasm_offset)

    radius = spec.diameter * 48.0 * mag * rng.uniform(0.88, 1.12)
    shift = float(np.clip(size / 2 - radius - 2 * px, 0.0, 0.08 * size))
    cx, cy = size / 2 + rng.uniform(-shift, shift, 2)
    od = _red_cells(rng, size, xx, yy, 14.5 * mag, cx, cy, radius, c_gain, c_off)

    theta, flip = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0])
    dx, dy = (xx - cx) / radius, (yy - cy) / radius
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = flip * (-dx * np.sin(theta) + dy * np.cos(theta))
    phi = np.arctan2(v, u)
    amp, ph = rng.uniform(0, [0.07, 0.035, 0.02]), rng.uniform(0, 2 * np.pi, 3)
    rim = 1.0 + sum(amp[k] * np.cos((k + 2) * (phi - ph[k])) for k in range(3))
    cell = np.clip(0.5 - (np.hypot(u, v) - rim) * radius / 1.1, 0.0, 1.0)
    od *= (1.0 - 0.9 * cell)[..., None]

    fine, coarse = _smooth_noise(rng, size, 0.7 * px), _smooth_noise(rng, size, 1.6 * px)
    cyto = np.asarray(spec.cytoplasm_od) * _jitter(rng) * c_gain + c_off
    od += (cell * (1.0 + 0.08 * fine))[..., None] * cyto
    nucleus = np.clip(0.5 - _nucleus_sdf(rng, cls, u, v) * radius / 1.1, 0.0, 1.0) * cell
    chromatin = np.clip(1.0 + spec.chromatin_texture * (0.6 * coarse + 0.4 * fine), 0.3, None)
    nuc_od = _NUCLEUS_OD * spec.nucleus_density * _jitter(rng) * n_gain + n_off
    od += (nucleus * chromatin)[..., None] * nuc_od

    granules = _granules(rng, cls, size, cx, cy, radius, nucleus, mag)
    if granules is not None:
        gain, off = (n_gain, n_off) if cls == "basophil" else (c_gain, c_off)
        od += (granules * cell)[..., None] * (_GRANULE_OD[cls] * _jitter(rng) * gain + off)
    if cls == "monocyte":  # a few cytoplasmic vacuoles
        k = int(rng.integers(0, 5))
        vac = _splat(size, *_ring_points(rng, k, cx, cy, radius * 0.8), np.ones(k), 1.4 * mag)
        od *= (1.0 - 0.6 * vac * (1.0 - nucleus))[..., None]

    light = _LIGHT * np.asarray(style.background_gain) + np.asarray(style.background_offset)
    ramp = ((xx - size / 2) * np.cos(style.illumination_angle)
            + (yy - size / 2) * np.sin(style.illumination_angle)) / size
    img = light * (1.0 + style.illumination * ramp)[..., None] * np.exp(-np.maximum(od, 0.0))
    if style.blur_sigma > 0:
        img = ndimage.gaussian_filter(img, (style.blur_sigma * px, style.blur_sigma * px, 0))
    img += rng.normal(0.0, style.noise, img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator) -> np.ndarray:
    """Per-cell stain uptake: overall ±10 % and per-channel ±5 %."""
    return rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, 3)


def _ring_points(rng, k, cx, cy, radius):
    r, t = radius * np.sqrt(rng.uniform(0.3, 1.0, k)), rng.uniform(0, 2 * np.pi, k)
    return cx + r * np.cos(t), cy + r * np.sin(t)


def _check_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


_OUR_FILE = re.compile(r"site\d+_\d+\.png")
_OUR_SITE_MANIFEST = re.compile(r"site\d+\.csv")


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    n_per_class: int = 60,
    sites: int = 2,
    size: int = 96,
    seed: int = 0,
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
) -> Path:
    """Write ``out_dir/<class>/site<k>_<index>.png``, ``out_dir/manifest.csv`` and one manifest per site,
    ``out_dir/site<k>.csv`` (a site plays a new lab: pretrain on one, adapt to another); return the manifest.

    The manifests have columns ``path,label,site`` (path relative to ``out_dir``). Every image has its
    own random stream derived from (seed, site, class, index), so output is byte-identical on rerun.
    A non-empty ``out_dir`` is refused unless ``overwrite``; then images and site manifests this function
    wrote earlier (``<class>/site*_*.png``, ``site*.csv``) are replaced so the folder matches the new
    manifest. ``progress`` is a progress factory (:mod:`hemoembed.progress`), advanced once per image.
    """
    _check_range("n_per_class", n_per_class, 1, 10**7)
    _check_range("sites", sites, 1, 8)
    _check_range("size", size, 32, 1024)
    _check_range("seed", seed, 0, 2**63 - 1)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: output folder is not empty (pass overwrite to replace it)")
        for old in out.glob("*/site*_*.png"):
            if old.parent.name in CLASSES and _OUR_FILE.fullmatch(old.name):
                old.unlink()
        for old in out.glob("site*.csv"):
            if _OUR_SITE_MANIFEST.fullmatch(old.name):
                old.unlink()
    styles = [site_style(s, seed) for s in range(sites)]
    width = max(4, len(str(n_per_class - 1)))
    rows = []
    with stage(progress, sites * n_per_class * len(CLASSES), "rendering") as advance:
        for c, cls in enumerate(CLASSES):
            (out / cls).mkdir(parents=True, exist_ok=True)
            for s, style in enumerate(styles):
                for i in range(n_per_class):
                    rng = np.random.default_rng([int(seed), s, c, i])
                    rel = f"{cls}/site{s}_{i:0{width}d}.png"
                    save_png(render_cell(rng, cls, style, size), out / rel)
                    rows.append((rel, cls, f"site{s}"))
                    advance(1)
    for s in range(sites):
        _write_manifest(out / f"site{s}.csv", [row for row in rows if row[2] == f"site{s}"])
    manifest = out / "manifest.csv"
    _write_manifest(manifest, rows)
    return manifest


def _write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "label", "site"))
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())

