"""Figure building blocks of the explanations: categorical scatters and image grids."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..plotting import pyplot, save_figure

__all__ = ["MAX_LEGEND", "NO_VALUE", "PANEL_PALETTES", "category_colours", "image_grid", "save_figure",
           "scatter_categories"]
plt = pyplot()

MAX_LEGEND = 20  # more categories than this are grouped as "other" (a legend must stay readable)
NO_VALUE = "(no value)"  # how an empty label is shown: a cell the labels CSV says nothing about
OTHER_GREY, NO_VALUE_GREY = (0.6, 0.6, 0.6), (0.85, 0.85, 0.85)
# Side-by-side panels colour different columns from palettes that share no colour (cell type and site must
# never both be "blue"); a column with more categories than its palette falls back to tab20.
PANEL_PALETTES = ("tab10", "Set2", "Dark2", "Pastel1")


def category_colours(values: Sequence[str], palette: str = "tab10") -> dict[str, tuple]:
    """A stable colour per category (in sorted order, from ``palette``; tab20 beyond its size), the most
    frequent :data:`MAX_LEGEND` kept and the rest grey as "other"; cells without a value light grey."""
    order = [v for v, _ in Counter(values).most_common() if v != NO_VALUE]
    colours_of = plt.get_cmap(palette).colors
    palette = colours_of if len(order) <= len(colours_of) else plt.get_cmap("tab20").colors
    colours = {v: palette[i % len(palette)] for i, v in enumerate(sorted(order[:MAX_LEGEND]))}
    for v in order[MAX_LEGEND:]:
        colours[v] = OTHER_GREY
    if NO_VALUE in values:
        colours[NO_VALUE] = NO_VALUE_GREY
    return colours


def scatter_categories(ax, coords: np.ndarray, values: Sequence[str] | None, title: str = "",
                       legend_title: str = "", size: float | None = None, alpha: float = 0.8,
                       palette: str = "tab10") -> None:
    """Scatter 2-d points coloured by a categorical column (``palette``), with a legend outside the axes."""
    coords = np.asarray(coords)
    size = size if size is not None else float(np.clip(3000 / max(len(coords), 1), 1.0, 30.0))
    if values is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c="tab:blue", alpha=alpha, linewidths=0)
    else:
        values = [str(v) if str(v).strip() else NO_VALUE for v in values]
        colours = category_colours(values, palette)
        counts = Counter(values)
        for value in sorted(colours, key=lambda v: (v != NO_VALUE, colours[v] == OTHER_GREY, v)):  # unlabelled below
            mask = np.array([v == value for v in values])
            label = f"{value} ({counts[value]})" if colours[value] != OTHER_GREY else None
            ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=colours[value], alpha=alpha,
                       linewidths=0, label=label)
        ax.legend(title=legend_title or None, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  title_fontsize=9, markerscale=max(1.0, 6.0 / np.sqrt(size)), frameon=False)
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1", fontsize=9)
    ax.set_ylabel("t-SNE 2", fontsize=9)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[Sequence[str]], *, thumb: float = 1.9,
               row_labels: Sequence[str] | None = None, suptitle: str = ""):
    """A figure of image rows (ragged rows allowed) with a small title under each image."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(thumb * n_cols, (thumb + 0.45) * n_rows), squeeze=False)
    for r, (images, names) in enumerate(zip(rows, titles)):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
                ax.set_title(names[c], fontsize=7.5, pad=3)
        if row_labels is not None:
            axes[r][0].text(-0.08, 0.5, row_labels[r], transform=axes[r][0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig
