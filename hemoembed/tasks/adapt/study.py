"""The adapter study: every ablation condition and the shot-count curve on shared shot/test splits.

Every condition of a repeat sees the same shots and test images (one
:func:`~hemoembed.tasks.common.sampling.select_shots` draw per repeat). The ablation table gives mean ± sd
over repeats and a paired test (t-test and Wilcoxon signed-rank over repeats) between each condition and
the one above it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...config import atomic_write_text, csv_text
from ...errors import InputError
from ...progress import ProgressFactory, stage
from ..common.metrics import confusion, encode_labels, scores_from_confusion
from ..common.priors import em_priors
from ..common.reports import write_json
from ..common.sampling import select_shots
from .prepare import CONDITIONS, AdaptConfig, Prepared, finetune_grid, support_subset


def run_condition(prep: Prepared, name: str, shots: np.ndarray, test: np.ndarray, config: AdaptConfig, seed: int):
    """One ablation condition on one shot/test split → :class:`~.adapter.Outcome`."""
    from ..svm.estimator import EmbeddingSVM
    from .adapter import Outcome

    mode, colour, pretrained, with_support = CONDITIONS[name]
    if (mode == "source" or with_support) and prep.support is None:
        raise InputError(f"ablation condition {name!r} needs labelled --source-images")
    if mode == "source":
        enc, X = prep.adapter.frozen(colour=False)
        svm = EmbeddingSVM(random_state=seed).fit(*prep.support)
        return Outcome(svm.classes_.tolist(), svm.predict_proba(X[test]), enc, svm=svm)
    support = support_subset(prep.support, config.source_support or 20, seed) if with_support else None
    return prep.adapter.run(mode, shots, test, colour=colour, pretrained=pretrained, support=support,
                            grid=finetune_grid(config), folds=config.cv, smoothing=config.label_smoothing,
                            head_epochs=config.head_epochs, warm_head=config.warm_head, seed=seed)


def scores(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over the test classes and per-class recall (no bootstrap: for many repeats)."""
    k = len(classes)
    cm = confusion(encode_labels(y_true, classes, "test labels"), np.asarray(proba).argmax(axis=1), k)
    s = scores_from_confusion(cm)
    present = cm.sum(axis=1) > 0
    return {"accuracy": float(s["accuracy"]), "macro_f1": float(s["f1"][present].mean()),
            "recall": {c: float(r) for c, r, p in zip(classes, s["recall"], present, strict=True) if p}}


def run_ablation(prep: Prepared, config: AdaptConfig,
                 progress: ProgressFactory | None = None) -> list[dict[str, Any]]:
    """Every condition × ``repeats`` on shared shot/test splits; one row per (repeat, condition)."""
    unknown = sorted(set(config.conditions) - set(CONDITIONS))
    if unknown:
        raise InputError(f"--conditions: unknown {', '.join(unknown)} (known: {', '.join(CONDITIONS)})")
    labels = np.asarray(prep.labels)
    rows = []
    with stage(progress, config.repeats * len(config.conditions), "ablation") as advance:
        for repeat in range(config.repeats):
            seed = config.seed * 1000 + repeat
            shots, test = select_shots(labels, config.shots, config.min_per_class, seed)
            for name in config.conditions:
                out = run_condition(prep, name, shots, test, config, seed)
                row = {"repeat": repeat, "condition": name, "n_shots": len(shots), "n_test": len(test),
                       **scores(labels[test], out.proba, out.classes)}
                if len(test):  # the same probabilities re-weighted to the test images' estimated class mix
                    row["prior_shift"] = scores(labels[test], em_priors(out.proba)[1], out.classes)
                if out.cv:  # which fine-tuning point the CV inside the shots chose, and its CV accuracy
                    row["chosen"] = {**out.cv["chosen"], "cv_accuracy": max(
                        (s["cv_accuracy"] for s in out.cv["scores"]), default=None)}
                rows.append(row)
                advance(1)
    return rows


def shot_curve(prep: Prepared, config: AdaptConfig,
               progress: ProgressFactory | None = None) -> list[dict[str, Any]]:
    """Accuracy and per-class recall against the number of shots (``config.curve_mode``, ``repeats`` each)."""
    labels = np.asarray(prep.labels)
    k = len(set(prep.labels))
    rows = []
    with stage(progress, len(config.curve_shots) * config.repeats, "shot curve") as advance:
        for n in config.curve_shots:
            for repeat in range(config.repeats):
                seed = config.seed * 1000 + repeat
                per_class = min(config.min_per_class, max(1, n // k))
                if config.curve_mode == "svm":  # the SVM's calibration needs two images of every class
                    per_class = max(per_class, 2)
                shots, test = select_shots(labels, n, per_class, seed)
                out = prep.adapter.run(config.curve_mode, shots, test, grid=finetune_grid(config), folds=config.cv,
                                       smoothing=config.label_smoothing, head_epochs=config.head_epochs, seed=seed)
                rows.append({"shots": n, "repeat": repeat, "n_shots": len(shots),
                             **scores(labels[test], out.proba, out.classes)})
                advance(1)
    return rows


def domain_separability(prep: Prepared, seed: int = 0) -> dict[str, float]:
    """3-fold CV accuracy of a linear classifier telling source from target embeddings (0.5: the sites are
    indistinguishable), with and without the colour transform: how much of the site gap colour explains."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    if prep.support is None:
        raise InputError("domain separability needs labelled --source-images")
    out = {}
    for name, colour in (("without_colour", False), ("with_colour", True)):
        target = prep.adapter.frozen(colour)[1]
        X = np.concatenate([prep.support[0], target])
        y = np.r_[np.zeros(len(prep.support[0])), np.ones(len(target))]
        folds = StratifiedKFold(3, shuffle=True, random_state=seed)
        out[name] = float(cross_val_score(LogisticRegression(max_iter=2000), X, y, cv=folds).mean())
    return out


def paired_p(a: Sequence[float], b: Sequence[float]) -> dict[str, float | None]:
    """Paired t-test and Wilcoxon signed-rank p-values (``None`` when undefined, e.g. one repeat)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return {"t_test_p": None, "wilcoxon_p": None}
    if np.allclose(a, b):
        return {"t_test_p": 1.0, "wilcoxon_p": 1.0}
    t = stats.ttest_rel(a, b).pvalue
    w = stats.wilcoxon(a, b).pvalue
    return {"t_test_p": None if np.isnan(t) else float(t), "wilcoxon_p": float(w)}


def ablation_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd per condition (table order) and paired tests against the previous condition."""
    names = list(dict.fromkeys(r["condition"] for r in rows))
    table, previous = [], None
    for name in names:
        mine = sorted((r for r in rows if r["condition"] == name), key=lambda r: r["repeat"])
        acc, f1 = [r["accuracy"] for r in mine], [r["macro_f1"] for r in mine]
        row = {"condition": name, "repeats": len(mine), "accuracy_mean": float(np.mean(acc)),
               "accuracy_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
               "macro_f1_mean": float(np.mean(f1)), "macro_f1_sd": float(np.std(f1, ddof=1)) if len(f1) > 1 else 0.0,
               "vs": previous["condition"] if previous else "", "t_test_p": None, "wilcoxon_p": None}
        if previous:
            row.update(paired_p(previous["_acc"], acc))
        table.append({**row, "_acc": acc})
        previous = table[-1]
    return [{k: v for k, v in r.items() if k != "_acc"} for r in table]


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    """The ablation table as Markdown (accuracy and macro-F1 mean ± sd, paired p-values vs the row above)."""
    def p(v):
        return "" if v is None else f"{v:.3g}"

    lines = ["| condition | repeats | accuracy | macro-F1 | vs | t-test p | Wilcoxon p |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['condition']} | {r['repeats']} | {r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f} | "
              f"{r['macro_f1_mean']:.3f} ± {r['macro_f1_sd']:.3f} | {r['vs']} | {p(r['t_test_p'])} | "
              f"{p(r['wilcoxon_p'])} |" for r in table]
    return "\n".join(lines) + "\n"


def curve_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd accuracy and mean per-class recall per shot count."""
    out = []
    for n in dict.fromkeys(r["shots"] for r in rows):
        group = [r for r in rows if r["shots"] == n]
        acc = [r["accuracy"] for r in group]
        classes = sorted({c for r in group for c in r["recall"]})
        out.append({"shots": n, "repeats": len(group), "accuracy_mean": float(np.mean(acc)),
                    "accuracy_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                    "recall": {c: float(np.mean([r["recall"][c] for r in group if c in r["recall"]]))
                               for c in classes}})
    return out


def write_study(out_dir: str | os.PathLike, ablation: Sequence[dict] | None, curve: Sequence[dict] | None,
                subject: str = "") -> None:
    """``ablation.{json,csv,md}``, ``shot_curve.{json,csv}`` and ``ablation.png``; ``subject`` (which site,
    which source) heads the figure."""
    out = Path(out_dir)
    result: dict[str, Any] = {"subject": subject} if subject else {}
    if ablation:
        table = ablation_table(ablation)
        result.update(ablation_rows=list(ablation), ablation_table=table)
        keys = list(table[0])
        atomic_write_text(out / "ablation.csv", csv_text([keys] + [[r[k] for k in keys] for r in table]))
        atomic_write_text(out / "ablation.md", markdown_table(table))
    if curve:
        ctable = curve_table(curve)
        result.update(curve_rows=list(curve), curve_table=ctable)
        classes = sorted({c for r in ctable for c in r["recall"]})
        atomic_write_text(out / "shot_curve.csv", csv_text(
            [["shots", "repeats", "accuracy_mean", "accuracy_sd", *[f"recall_{c}" for c in classes]]]
            + [[r["shots"], r["repeats"], r["accuracy_mean"], r["accuracy_sd"],
                *[r["recall"].get(c, "") for c in classes]] for r in ctable]))
    write_json(out / "ablation.json", result)
    plot_study(result, out / "ablation.png")


def plot_study(result: dict[str, Any], path: Path) -> None:
    """One figure: accuracy per condition (mean ± sd, repeats as dots) and the shot-count curve."""
    from ...plotting import pyplot, save_figure

    plt = pyplot()
    panels = [k for k in ("ablation_table", "curve_table") if result.get(k)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.4), squeeze=False)
    if result.get("subject"):
        fig.suptitle(f"Few-shot adapter study: {result['subject']}", fontsize=11)
    axes = list(axes[0])
    if result.get("ablation_table"):
        ax, table = axes.pop(0), result["ablation_table"]
        x = np.arange(len(table))
        ax.bar(x, [r["accuracy_mean"] for r in table], yerr=[r["accuracy_sd"] for r in table], color="#c7c7c7",
               capsize=3, label="mean ± sd")
        for i, r in enumerate(table):
            pts = [a["accuracy"] for a in result["ablation_rows"] if a["condition"] == r["condition"]]
            ax.scatter(np.full(len(pts), i), pts, s=8, color="k", zorder=3, label="one repeat" if i == 0 else None)
        ax.set_xticks(x, [r["condition"] for r in table], rotation=35, ha="right", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("test accuracy")
        ax.set_title("Ablation: each adapter condition's test accuracy", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if result.get("curve_table"):
        ax, ctable = axes.pop(0), result["curve_table"]
        n = [r["shots"] for r in ctable]
        ax.errorbar(n, [r["accuracy_mean"] for r in ctable], yerr=[r["accuracy_sd"] for r in ctable], fmt="o-",
                    color="k", label="accuracy", capsize=3)
        for c in sorted({c for r in ctable for c in r["recall"]}):
            ax.plot(n, [r["recall"].get(c, np.nan) for r in ctable], lw=1, alpha=0.8, label=f"recall {c}")
        low = min([r["accuracy_mean"] - r["accuracy_sd"] for r in ctable]
                  + [v for r in ctable for v in r["recall"].values()])
        ax.set_ylim(max(0.0, low - 0.05), 1.02)
        ax.set_xlabel("labelled target images (shots)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_title("Accuracy and per-class recall against the number of shots", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
