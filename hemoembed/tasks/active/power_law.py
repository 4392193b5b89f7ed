"""Learning-curve analysis of active-learning runs: power-law fits, labels needed, rate comparison.

Each curve (a strategy, a class or the macro average, the mean over repeats) is fitted with
``P(n) = Pmax − k / (n − n0)^r``: ``Pmax`` is the F1 the strategy tends to, ``r`` how fast it gets there.
Strategies are compared by their per-class rates with a one-sided Wilcoxon signed-rank test, and by the
labels needed to come within 0.5 F1 points of the score with every pool label.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .simulation import ALL_LABELS

MACRO = "macro"
TOLERANCE = 0.005  # 0.5 F1 points
R_MAX = 5.0  # upper bound of the fitted rate: a curve already flat after its first points sits here
# Curves stopped early (--max-labels) end before they level off; where the two strategies' fitted ceilings then
# differ by more than this, their rates measure the approach to different limits and are not comparable. On PBC
# (15,382 pool cells, stopped at 3,150) 5 of 8 classes differed by 3-11 points and the test said p = 0.77
# although uncertainty sampling led random sampling by 2.5-3.5 points at every point from 900 labels.
CEILING_GAP = 0.01
FIT_COLUMNS = ("strategy", "class", "pmax", "k", "n0", "r", "rmse", "flat", "n_points", "final_f1",
               "full_label_f1", "labels_needed")


def power_law(n: np.ndarray, pmax: float, k: float, n0: float, r: float) -> np.ndarray:
    """``Pmax − k / (n − n0)^r`` (n0 < min n)."""
    return pmax - k / np.power(np.asarray(n, dtype=np.float64) - n0, r)


@dataclass
class PowerLawFit:
    """Fitted parameters; ``flat`` curves (no visible trend) get ``k = 0`` and an undefined rate."""

    pmax: float
    k: float
    n0: float
    r: float
    rmse: float
    flat: bool
    n_points: int

    def __call__(self, n: np.ndarray) -> np.ndarray:
        if self.flat:
            return np.full(np.shape(n), self.pmax)
        return power_law(n, self.pmax, self.k, self.n0, self.r)


def fit_power_law(n: Sequence[float], p: Sequence[float], *, flat_range: float = 2e-3) -> PowerLawFit:
    """Bounded robust least squares (soft-L1) from several starts; flat or short curves do not fail."""
    from scipy.optimize import least_squares

    n, p = np.asarray(n, dtype=np.float64), np.asarray(p, dtype=np.float64)
    order = np.argsort(n)
    n, p = n[order], p[order]
    if len(n) < 4 or np.ptp(p) < flat_range:
        level = float(np.mean(p)) if len(p) else float("nan")
        return PowerLawFit(level, 0.0, 0.0, float("nan"), float(np.std(p)) if len(p) else float("nan"), True, len(n))
    n_min, n_max = float(n[0]), float(n[-1])
    upper_p = max(1.0, float(p.max()) + 1e-6)
    lower = [float(p.min()), 0.0, -10.0 * n_max, 1e-3]
    upper = [upper_p, np.inf, n_min - 1e-3 * max(1.0, n_min), R_MAX]

    def residuals(theta: np.ndarray) -> np.ndarray:
        return power_law(n, *theta) - p

    best = None
    for r0 in (0.3, 0.8, 1.5):
        for n0_0 in (0.0, n_min / 2.0, -n_min):
            pmax0 = min(upper_p - 1e-6, float(p.max()) + 0.3 * np.ptp(p))
            n0_0 = min(n0_0, upper[2] - 1e-6)
            k0 = max(1e-9, (pmax0 - p[0]) * (n_min - n0_0) ** r0)
            start = np.clip([pmax0, k0, n0_0, r0], lower, [u - 1e-9 if np.isfinite(u) else 1e12 for u in upper])
            try:
                result = least_squares(residuals, start, bounds=(lower, upper), loss="soft_l1",
                                       f_scale=max(1e-3, 0.1 * np.ptp(p)), max_nfev=2000)
            except ValueError:
                continue
            if best is None or result.cost < best.cost:
                best = result
    if best is None:
        return PowerLawFit(float(np.mean(p)), 0.0, 0.0, float("nan"), float(np.std(p)), True, len(n))
    pmax, k, n0, r = (float(v) for v in best.x)
    rmse = float(np.sqrt(np.mean(residuals(best.x) ** 2)))
    return PowerLawFit(pmax, k, n0, r, rmse, False, len(n))


def labels_to_reach(n: Sequence[float], p: Sequence[float], target: float,
                    tolerance: float = TOLERANCE) -> int | None:
    """Fewest labels from which the curve stays within ``tolerance`` of ``target`` (None: never)."""
    n, p = np.asarray(n), np.asarray(p, dtype=np.float64)
    order = np.argsort(n)
    n, p = n[order], p[order]
    ok = p >= target - tolerance
    if len(ok) == 0 or not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    first = 0 if len(bad) == 0 else int(bad[-1]) + 1
    return int(n[first])


def mean_curves(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(strategy, class) → (n_labels, F1 averaged over repeats); class ``macro`` is the macro-F1."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for row in rows:
        cls = MACRO if row["metric"] == "macro_f1" else str(row["class"])
        groups.setdefault((str(row["strategy"]), cls), {}).setdefault(int(row["n_labels"]), []).append(
            float(row["value"]))
    out = {}
    for key, by_n in groups.items():
        ns = np.array(sorted(by_n))
        out[key] = ns, np.array([np.mean(by_n[n]) for n in ns])
    return out


def fit_curves(rows: Sequence[dict[str, Any]], tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """One fit per strategy and class (and macro), with final F1, full-label F1 and labels needed."""
    curves = mean_curves(rows)
    out = []
    for (strategy, cls), (n, p) in sorted(curves.items()):
        if strategy == ALL_LABELS:
            continue
        full = curves.get((ALL_LABELS, cls))
        full_f1 = float(full[1][-1]) if full is not None else float(p[-1])
        fit = fit_power_law(n, p)
        out.append({"strategy": strategy, "class": cls, **asdict(fit), "final_f1": float(p[-1]),
                    "full_label_f1": full_f1, "labels_needed": labels_to_reach(n, p, full_f1, tolerance)})
    return out


def at_bound(r: float) -> bool:
    """A fitted rate at (within 2 % of) the fit's upper bound :data:`R_MAX`: the curve rose before the first
    sampled label count, so the data do not tell how fast (not identifiable)."""
    return bool(np.isfinite(r) and r >= 0.98 * R_MAX)


def compare_rates(fits: Sequence[dict[str, Any]], better: str = "uncertainty",
                  baseline: str = "random", stop: tuple[int, int] | None = None) -> dict[str, Any]:
    """One-sided Wilcoxon signed-rank test that ``better`` learns faster (larger r) than ``baseline``
    across classes (macro excluded; classes with a flat curve under either strategy are dropped). When
    every rate sits at the bound :data:`R_MAX` the rates are not identifiable and no test is made.
    ``stop``: (labels where the curves stop, pool size) for curves stopped early; the result then notes the
    classes whose two fitted ceilings differ by more than :data:`CEILING_GAP` (rates not comparable)."""
    from scipy.stats import wilcoxon

    rate = {(f["strategy"], f["class"]): f["r"] for f in fits if f["class"] != MACRO and not f["flat"]}
    classes = sorted(c for s, c in rate if s == better and (baseline, c) in rate)
    a = np.array([rate[(better, c)] for c in classes])
    b = np.array([rate[(baseline, c)] for c in classes])
    bound = sum(at_bound(r) for r in [*a, *b])
    result: dict[str, Any] = {"better": better, "baseline": baseline, "classes": classes,
                              "r_better": a.tolist(), "r_baseline": b.tolist(), "n_at_bound": bound,
                              "statistic": None, "p_value": None}
    if classes and bound == 2 * len(classes):
        result["note"] = (f"every fitted rate sits at the fit's upper bound r = {R_MAX:g}: the curves rise before "
                          "the first sampled label count, so the rates are not identifiable; sample smaller "
                          "--init/--batch to compare strategies")
        return result
    if len(classes) < 2 or np.all(a == b):
        result["note"] = f"{len(classes)} class(es) with a fitted rate under both strategies: no test"
        return result
    test = wilcoxon(a, b, alternative="greater")
    result.update(statistic=float(test.statistic), p_value=float(test.pvalue),
                  median_rate_ratio=float(np.median(a / np.maximum(b, 1e-12))))
    notes = [f"{bound} of {2 * len(classes)} rates sit at the fit's upper bound r = {R_MAX:g}"] if bound else []
    if stop is not None:
        ceiling = {(f["strategy"], f["class"]): f["pmax"] for f in fits}
        apart = [c for c in classes if abs(ceiling[(better, c)] - ceiling[(baseline, c)]) > CEILING_GAP]
        result["ceilings_apart"] = apart
        if apart:
            notes.append(f"the curves stop at {stop[0]:,} of {stop[1]:,} pool labels and in {len(apart)} of "
                         f"{len(classes)} classes the two fitted ceilings differ by more than "
                         f"{100 * CEILING_GAP:g} F1 point: rates toward different ceilings are not comparable "
                         "(read the labels needed instead)")
    if notes:
        result["note"] = "; ".join(notes)
    return result


def rate_test_text(test: dict[str, Any], sep: str = "; ", alpha: float = 0.05) -> str:
    """A :func:`compare_rates` result in words, the same in the terminal and on ``fig_rates.png``: the p-value
    as a question with its answer at ``alpha`` (a large p is no evidence either way), then any note."""
    better, baseline = test["better"], test["baseline"]
    p = test.get("p_value")
    if p is None:
        return f"{better} vs {baseline}: no rate test ({test.get('note', 'no fitted rates')})"
    answer = "yes" if p < alpha else "not shown"
    text = (f"does {better} learn faster than {baseline}? one-sided Wilcoxon p = {p:.3g} over "
            f"{len(test['classes'])} classes: {answer} at {alpha:g}")
    return text + (f"{sep}{test['note']}" if test.get("note") else "")


def analyse(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike | None = None,
            tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Fits, labels needed and the rate test; with ``out_dir`` writes ``curve_fits.csv``, ``analysis.json``
    and the figures drawn from exactly these fits (``fig_curves.png``, ``fig_rates.png``)."""
    fits = fit_curves(rows, tolerance)
    strategies = sorted({f["strategy"] for f in fits})
    summary: dict[str, Any] = {
        "tolerance": tolerance,
        "labels_needed": {f["strategy"]: f["labels_needed"] for f in fits if f["class"] == MACRO},
        "full_label_macro_f1": next((f["full_label_f1"] for f in fits if f["class"] == MACRO), None),
        "macro_fits": {f["strategy"]: {k: f[k] for k in ("pmax", "k", "n0", "r", "rmse", "flat")}
                       for f in fits if f["class"] == MACRO},
    }
    last = max((int(r["n_labels"]) for r in rows if r["strategy"] != ALL_LABELS), default=0)
    pool = max((int(r["n_labels"]) for r in rows if r["strategy"] == ALL_LABELS), default=0)
    stop = (last, pool) if 0 < last < pool else None
    for name in ("uncertainty", "margin", "entropy"):
        if name in strategies and "random" in strategies:
            summary[f"rate_test_{name}_vs_random"] = compare_rates(fits, name, "random", stop)
    if out_dir is not None:
        from ...config import atomic_write_text, csv_text
        from ..common.reports import write_json
        from .figures import draw_study

        out = Path(out_dir)
        table = [list(FIT_COLUMNS)] + [["" if f[c] is None else f[c] for c in FIT_COLUMNS] for f in fits]
        atomic_write_text(out / "curve_fits.csv", csv_text(table))
        write_json(out / "analysis.json", summary)
        draw_study(rows, fits, summary, out)
    return {"fits": fits, **summary}

