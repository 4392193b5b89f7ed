"""``hemoembed gradcam``: GradCAM++ maps of image files written as overlays, raw maps and one panel.

:func:`run_gradcam` is the command's work, callable from Python: pairs (``against`` one image), triplets
(``against`` two) or an SVM class decision (``model`` + ``class_name``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import safe_name
from ..errors import InputError
from ..progress import ProgressFactory, stage


@dataclass(frozen=True)
class GradcamRun:
    """Settings of one ``hemoembed gradcam`` run (saved as gradcam_run.json)."""

    encoder: str
    images: tuple[str, ...]
    against: tuple[str, ...] = ()
    model: str = ""
    class_name: str = ""
    target: str = ""

    def check(self) -> None:
        """Refuse a run that is neither pairs/triplets (``against``) nor a class (``model`` + ``class_name``),
        and an encoder or image files that do not exist (before TensorFlow loads)."""
        from ..model.options import encoder_file

        if bool(self.against) == bool(self.model) or bool(self.model) != bool(self.class_name):
            raise InputError("give either --against IMAGE (1 or 2 times) or --model SVM_DIR --class X")
        if len(self.against) > 2:
            raise InputError(f"--against takes one image (pair) or two (positive, negative), got {len(self.against)}")
        for path in (*self.images, *self.against):
            if not Path(path).is_file():
                raise InputError(f"{path}: image file not found")
        encoder_file(self.encoder)



# What each target's score means, in words (the figure says it under its title).
SCORE_WORDS = {
    "margin": "score = d(anchor, negative) − d(anchor, positive): how much nearer the positive is than the negative",
    "similarity": "score = cosine similarity of the two embeddings: what makes the two cells alike",
    "distance": "score = L2 distance between the two embeddings: what makes the two cells differ",
    "decision": "score = the SVM's decision value for class {cls} (positive: the SVM says {cls})",
}


@dataclass
class Explained:
    """One explanation: its images (paths, roles), the maps, the images in their raw colours (the network's
    crop and size, no colour normalisation) and, for a class, the SVM's predicted class per image."""

    paths: list[str]
    roles: list[str]
    result: object  # gradcam.CamResult
    raw: object  # (n, S, S, 3) uint8
    predicted: list[str]


def run_gradcam(config: GradcamRun, out: str | os.PathLike, *, column: str | None = None,
                pair_target: str = "similarity",
                progress: ProgressFactory | None = None) -> tuple[int, str, Path]:
    """Explain every image of ``config``; writes per image its input (raw colours), overlay and raw map,
    ``results.csv``, ``panel.png`` and ``gradcam_run.json``. Returns (maps written, target, panel path)."""
    import dataclasses

    import numpy as np

    from ..config import save_config
    from ..data.preprocess import load_inputs, refuse_unusable
    from ..tasks.svm import column_folder, read_meta

    config.check()
    images, against = config.images, config.against
    refuse_unusable([*against, *images])  # in the order they are read below
    folder = column_folder(config.model, column) if config.model else None
    if folder is not None:
        read_meta(folder)  # a damaged model.json is refused before TensorFlow loads
    from ..model.encoder import fingerprint, load_encoder
    from . import gradcam as gc

    model, record = load_encoder(config.encoder)
    raw_record = dataclasses.replace(record, colour="none")

    def raw(paths):
        return np.clip(np.round(load_inputs(paths, raw_record)), 0, 255).astype(np.uint8)

    out = Path(out)
    results = []
    with stage(progress, len(images), "GradCAM++") as advance:
        if config.model:
            decision = gc.LinearDecision.from_svm(folder, fingerprint(model))
            for image in images:
                inputs = load_inputs([image], record)
                result = gc.explain_class(model, inputs, decision, config.class_name)
                embedding = model(inputs, training=False).numpy()
                values = [decision.numpy_value(embedding, c)[0] for c in decision.classes]
                results.append(Explained([image], ["image"], result, raw([image]),
                                         [decision.classes[int(np.argmax(values))]]))
                advance(1)
        else:
            others = load_inputs(against, record)
            roles = ["anchor", "positive", "negative"] if len(against) == 2 else ["image", "compared with"]
            for image in images:
                anchor = load_inputs([image], record)[0]
                result = (gc.explain_triplet(model, anchor, *others) if len(against) == 2
                          else gc.explain_pair(model, anchor, others[0], pair_target))
                results.append(Explained([image, *against], roles, result, raw([image, *against]),
                                         [""] * (1 + len(against))))
                advance(1)
    panel = write_cams(results, out)
    save_config(dataclasses.replace(config, target=results[0].result.target), out / "gradcam_run.json")
    return sum(len(r.paths) for r in results), results[0].result.target, panel


CSV_COLUMNS = ("explanation", "role", "image", "target", "score", "predicted", "input", "overlay", "map")


def write_cams(results: list[Explained], out: Path) -> Path:
    """Per image: input PNG (raw colours), overlay PNG, raw map .npy; plus results.csv and panel.png."""
    import io

    import numpy as np

    from ..config import atomic_write_bytes, atomic_write_text, csv_text
    from ..data.imageio import save_png
    from .gradcam import overlay

    rows = [list(CSV_COLUMNS)]
    for e, item in enumerate(results):
        cams = item.result.upsampled()
        for i, (path, role) in enumerate(zip(item.paths, item.roles)):
            stem = f"{e:03d}_{i}_{safe_name(role)}_{safe_name(Path(path).stem)}"
            save_png(item.raw[i], out / f"{stem}_input.png")
            save_png(overlay(item.raw[i], cams[i]), out / f"{stem}_gradcam.png")
            buffer = io.BytesIO()
            np.save(buffer, item.result.maps[i].astype(np.float32), allow_pickle=False)
            atomic_write_bytes(out / f"{stem}_gradcam.npy", buffer.getvalue())
            rows.append([str(e), role, str(path), item.result.target, f"{item.result.score[i]:.6f}",
                         item.predicted[i], f"{stem}_input.png", f"{stem}_gradcam.png", f"{stem}_gradcam.npy"])
    atomic_write_text(out / "results.csv", csv_text(rows))
    return panel_from_csv(out, out / "panel.png")


def panel_from_csv(cam_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The panel of a ``gradcam`` output folder, drawn from its ``results.csv`` and PNGs (the command and
    ``scripts/fig_gradcam.py`` draw the same figure)."""
    from ..data.imageio import load_image
    from ..data.manifest import read_csv_records
    from .plots import save_figure

    cam_dir = Path(cam_dir)
    items: list[dict] = read_csv_records(cam_dir / "results.csv", CSV_COLUMNS, "a gradcam results file")
    for item in items:
        item["input"], item["overlay"] = load_image(cam_dir / item["input"]), load_image(cam_dir / item["overlay"])
    return save_figure(cam_figure(items), out)


def cam_figure(items: list[dict]):
    """Per explanation two rows: the images in their raw colours (role and class folder in the title) and
    their GradCAM++ overlays below; one colour bar; the score explained in words."""
    from ..plotting import pyplot

    plt = pyplot()
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(item["explanation"], []).append(item)
    rows = [groups[k] for k in sorted(groups, key=int)]
    n_cols = max(len(r) for r in rows)
    thumb = 2.1
    fig, axes = plt.subplots(2 * len(rows), n_cols, figsize=(thumb * n_cols + 1.2, (thumb + 0.6) * 2 * len(rows) + 0.9),
                             squeeze=False)
    target = rows[0][0]["target"]
    for r, row in enumerate(rows):  # per explanation: the images on one row, their overlays below
        for ax in (*axes[2 * r], *axes[2 * r + 1]):
            ax.axis("off")
        for i, item in enumerate(row):
            folder = Path(item["image"]).parent.name
            kind = f" ({folder})" if folder and folder != "." else ""
            axes[2 * r][i].imshow(item["input"])
            axes[2 * r][i].set_title(f"{item['role']}{kind}\n{Path(item['image']).name[:24]}", fontsize=9)
            axes[2 * r + 1][i].imshow(item["overlay"])
            if item["predicted"]:
                caption = f"SVM predicts {item['predicted']}\nscore {float(item['score']):.3f}"
            else:
                caption = f"where it looked\nscore {float(item['score']):.3f}"
            axes[2 * r + 1][i].set_title(caption, fontsize=9)
    kind, _, cls = target.partition(":")
    words = SCORE_WORDS.get(kind, f"score = {target}").format(cls=cls)
    fig.suptitle(f"Where the encoder looked: GradCAM++ on its last convolution\n{words}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    bar_axes = fig.add_axes((0.88, 0.12, 0.025, 0.6))
    bar = fig.colorbar(plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1)), cax=bar_axes)
    bar.set_label("importance for the score\n(1: the strongest region of the image)", fontsize=8)
    return fig
