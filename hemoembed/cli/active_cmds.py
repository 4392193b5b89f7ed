"""Active learning: ``active-learn`` (simulation study, or a real labelling session)."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_FLOAT,
    echo,
    given_options,
    overwrite_option,
    prepare_output_dir,
    progress,
    seed_option,
)


@main.command("active-learn")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--simulate", is_flag=True, help="Simulation study: reveal labels from --labels as they are queried.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Labels CSV, or a folder per class (simulation).")
@click.option("--column", default="label", show_default=True, help="Label column (simulation and session).")
@click.option("--key", default="path", show_default=True, help="Column joining --labels to the store.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (simulation).")
@click.option("--batch", type=POSITIVE, default=90, show_default=True,
              help="Images queried per iteration (a session's --query: by default the batch it was started with).")
@click.option("--init", "init", type=POSITIVE, default=90, show_default=True,
              help="Labels to start from (simulation).")
@click.option("--init-strategy", type=click.Choice(["stratified", "kmeans"]), default="stratified", show_default=True)
@click.option("--strategy", default="uncertainty,margin,entropy,random", show_default=True,
              help="Query strategies, comma-separated (a session uses the first): uncertainty, margin, entropy, "
              "random, or diverse (one pick per k-means group of the 10 x batch most uncertain cells).")
@click.option("--repeats", type=POSITIVE, default=1, show_default=True, help="Seeds per strategy (simulation).")
@click.option("--max-labels", type=NON_NEGATIVE, default=0,
              help="Stop at this many labels (default 0: until the pool is exhausted). Curves stopped "
                   "early compare best by the labels needed; the rate test says when their ceilings differ.")
@click.option("--test", "test_csv", type=click.Path(path_type=Path), default=None,
              help="Fixed held-out test labels CSV (default: --test-fraction of --labels).")
@click.option("--test-fraction", type=FRACTION, default=0.2, show_default=True)
@click.option("--C", "C", type=POSITIVE_FLOAT, default=1.0, show_default=True, help="SVM regularisation.")
@click.option("--session", type=click.Path(path_type=Path), default=None, help="Labelling session folder.")
@click.option("--query", is_flag=True, help="Session: write DIR/to_label.csv with the next --batch images.")
@click.option("--teach", type=click.Path(path_type=Path), default=None, help="Session: ingest a filled CSV.")
@click.option("--status", is_flag=True, help="Session: progress and cross-validated macro-F1.")
@click.option("--classes", default="", help="Session: the classes, comma-separated (when starting one).")
@seed_option
@overwrite_option
def active_learn(store: Path, simulate: bool, labels: Path | None, column: str, key: str, out: Path | None,
                 batch: int, init: int, init_strategy: str, strategy: str, repeats: int, max_labels: int,
                 test_csv: Path | None, test_fraction: float, C: float, session: Path | None, query: bool,
                 teach: Path | None, status: bool, classes: str, seed: int, overwrite: bool) -> None:
    """Active learning on an embedding store: a simulation study or a real labelling loop.

    \b
    Example, simulation (strategies side by side, tidy CSV, power-law fits, plots):
      hemoembed active-learn store --simulate --labels labels.csv --column label \\
          --batch 90 --init 90 --strategy uncertainty,random --repeats 3 --out al_study
    \b
    Example, real labelling loop (an expert fills the 'label' column of to_label.csv):
      hemoembed active-learn store --session lab --query --batch 50 --classes neutrophil,lymphocyte,monocyte
      hemoembed active-learn store --session lab --teach lab/to_label.csv
      hemoembed active-learn store --session lab --status
    """
    from ..errors import InputError

    modes = [name for name, on in (("--simulate", simulate), ("--query", query), ("--teach", teach is not None),
                                   ("--status", status)) if on]
    if len(modes) != 1:
        raise InputError("choose exactly one of --simulate, --query, --teach FILE, --status "
                         f"(got {', '.join(modes) or 'none'})")
    strategies = tuple(s.strip() for s in strategy.split(",") if s.strip())
    if simulate:
        if labels is None or out is None:
            raise InputError("--simulate needs --labels CSV and --out DIR")
        from ..tasks.active import ActiveConfig, run

        source = {"store": str(store), "labels": str(labels), "column": column, "test": str(test_csv or "")}
        if key != "path":
            source["key"] = key
        config = ActiveConfig(strategies=strategies, batch=batch, init=init, init_strategy=init_strategy,
                              repeats=repeats, max_labels=max_labels, test_fraction=test_fraction, C=C, seed=seed,
                              source=source)
        config.validate()
        out = prepare_output_dir(out, overwrite, inputs=[store, labels, test_csv])
        summary = run(config, out, progress=progress)
        _echo_study(summary, out)
        return
    from ..store.store import EmbeddingStore

    _session(EmbeddingStore.open(store), store, session, query, teach, classes, column, batch, strategies, C, seed,
             overwrite)


def _echo_study(summary: dict, out: Path) -> None:
    echo(f"pool {summary['n_pool']}, test {summary['n_test']}, "
         f"all-label macro-F1 {summary['full_label_macro_f1']:.4f}")
    for name, needed in summary["labels_needed"].items():
        fit = summary["macro_fits"][name]
        echo(f"{name:12s} labels to come within 0.5 F1 points: {needed if needed is not None else 'not reached'}; "
             f"Pmax {fit['pmax']:.4f}, rate r {fit['r']:.3f}")
    from ..tasks.active.power_law import rate_test_text

    for key_name, test in summary.items():
        if key_name.startswith("rate_test_"):
            echo(rate_test_text(test))
    echo(f"results in {out} (results.csv, curve_fits.csv, analysis.json, fig_curves.png, fig_rates.png)")


def _session(store, store_path: Path, folder: Path | None, query: bool, teach: Path | None, classes: str,
             column: str, batch: int, strategies: tuple[str, ...], C: float, seed: int, overwrite: bool) -> None:
    from ..errors import InputError
    from ..tasks.active import LabellingSession, SessionConfig

    if folder is None:
        raise InputError("--query, --teach and --status need --session DIR")
    names = [c.strip() for c in classes.split(",") if c.strip()]
    new = SessionConfig(store=str(store_path), classes=names, column=column, batch=batch,
                        strategy=strategies[0] if strategies else "uncertainty", C=C, seed=seed)
    session = LabellingSession.open(folder, store, new if names else None)
    given = given_options()
    session.check_settings({name: getattr(new, name) for name in ("classes", "column", "strategy", "C", "seed")
                            if name in given})
    if query:
        path = session.query(batch if "batch" in given else None, overwrite=overwrite)
        echo(f"fill the '{session.config.column}' column of {path}, then: "
             f"hemoembed active-learn {store_path} --session {folder} --teach {path}")
    elif teach is not None:
        event = session.teach(teach)
        cv = event["cv_macro_f1"]
        echo(f"taught {event['added']} new and {event['relabelled']} changed label(s); {event['n_labels']} in total; "
             f"cross-validated macro-F1 {'n/a' if cv is None else f'{cv:.3f}'}")
    else:
        info = session.status()
        cv = info["cv_macro_f1"]
        echo(f"{info['n_labelled']} of {info['n_images']} images labelled in {info['teach_rounds']} round(s); "
             f"cross-validated macro-F1 {'n/a' if cv is None else f'{cv:.3f}'} ({info['cv_folds']} folds)")
        echo("per class: " + ", ".join(f"{c} {n}" for c, n in info["per_class"].items()))
        if info["pending_query"]:
            echo(f"pending query: {info['pending_query']}")
