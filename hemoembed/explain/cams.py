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
        and image files that do not exist."""
        if bool(self.against) == bool(self.model) or bool(self.model) != bool(self.class_name):
            raise InputError("give either --against IMAGE (1 or 2 times) or --model SVM_DIR --class X")
        if len(self.against) > 2:
            raise InputError(f"--against takes one image (pair) or two (positive, negative), got {len(self.against)}")
        for path in (*self.images, *self.against):
            if not Path(path).is_file():
                raise InputError(f"{path}: image file not found")



def run_gradcam(config: GradcamRun, out: str | os.PathLike, *, column: str | None = None,
                pair_target: str = "similarity",
                progress: ProgressFactory | None = None) -> tuple[int, str, Path]:
    """Explain every image of ``config``; writes per image its input, overlay and raw map, ``results.csv``,
    ``panel.png`` and ``gradcam_run.json``. Returns (maps written, target, panel path)."""
    import dataclasses

    from ..config import save_config
    from ..data.preprocess import load_inputs
    from ..model.encoder import fingerprint, load_encoder
    from ..tasks.svm import column_folder
    from . import gradcam as gc

    config.check()
    images, against = config.images, config.against
    model, record = load_encoder(config.encoder)
    out = Path(out)
    results = []
    with stage(progress, len(images), "GradCAM++") as advance:
        if config.model:
            decision = gc.LinearDecision.from_svm(column_folder(config.model, column), fingerprint(model))
            for image in images:
                result = gc.explain_class(model, load_inputs([image], record), decision, config.class_name)
                results.append(([image], [f"class {config.class_name}"], result))
                advance(1)
        else:
            others = load_inputs(against, record)
            roles = ["anchor", "positive", "negative"] if len(against) == 2 else ["image", "compared with"]
            for image in images:
                anchor = load_inputs([image], record)[0]
                result = (gc.explain_triplet(model, anchor, *others) if len(against) == 2
                          else gc.explain_pair(model, anchor, others[0], pair_target))
                results.append(([image, *against], roles, result))
                advance(1)
    panel = write_cams(results, out)
    save_config(dataclasses.replace(config, target=results[0][2].target), out / "gradcam_run.json")
    return sum(len(r[0]) for r in results), results[0][2].target, panel


def write_cams(results, out: Path) -> Path:
    """Per image: input PNG, overlay PNG, raw map .npy; plus results.csv and panel.png."""
    import io

    import numpy as np

    from ..config import atomic_write_bytes, atomic_write_text, csv_text
    from ..data.imageio import save_png
    from .gradcam import overlay
    from .plots import image_grid, save_figure

    rows = [["explanation", "role", "image", "target", "score", "input", "overlay", "map"]]
    grid, titles = [], []
    for e, (paths, roles, result) in enumerate(results):
        cams = result.upsampled()
        grid_row, title_row = [], []
        for i, (path, role) in enumerate(zip(paths, roles)):
            stem = f"{e:03d}_{i}_{safe_name(role)}_{safe_name(Path(path).stem)}"
            blended = overlay(result.images[i], cams[i])
            save_png(result.images[i], out / f"{stem}_input.png")
            save_png(blended, out / f"{stem}_gradcam.png")
            buffer = io.BytesIO()
            np.save(buffer, result.maps[i].astype(np.float32), allow_pickle=False)
            atomic_write_bytes(out / f"{stem}_gradcam.npy", buffer.getvalue())
            rows.append([str(e), role, str(path), result.target, f"{result.score[i]:.6f}", f"{stem}_input.png",
                         f"{stem}_gradcam.png", f"{stem}_gradcam.npy"])
            grid_row += [result.images[i], blended]
            title_row += [f"{role}: {Path(path).name[:22]}", f"GradCAM++ {result.target}\nscore {result.score[i]:.3f}"]
        grid.append(grid_row)
        titles.append(title_row)
    atomic_write_text(out / "results.csv", csv_text(rows))
    return save_figure(image_grid(grid, titles, thumb=2.0), out / "panel.png")
