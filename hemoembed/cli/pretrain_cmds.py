"""``hemoembed pretrain``: self-supervised pretraining of the encoder."""
from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import (
    NON_NEGATIVE,
    NON_NEGATIVE_FLOAT,
    PIXELS,
    POSITIVE,
    POSITIVE_FLOAT,
    SEED,
    UNIT,
    FiniteFloat,
    echo,
    images_argument,
    number_list,
    overwrite_option,
    prepare_output_dir,
    progress,
)

AUGMENT_OPTIONS = ("zoom", "resolution", "crop_scale", "hue", "stain")


@main.command()
@images_argument
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="JSON/YAML file of PretrainConfig settings; options given here override it.")
@click.option("--preset", type=click.Choice(["imagenet", "scratch", "site"]), default=None,
              help="imagenet: the paper (semi-hard triplet, no head, lr 1e-5, BN frozen, 30 epochs); scratch: "
                   "for --weights none (NT-Xent + MLP head, random-resized crops, stain jitter and no hue, BN "
                   "training, constant lr 1e-3, batch 128, 60 epochs); site: scratch's recipe with hue jitter 0.2 "
                   "for 10 epochs, to continue --weights RUN/encoder.keras on a new site's unlabelled cells before "
                   "adapt. Default: scratch for --weights none.")
@click.option("--weights", default=None,
              help="imagenet (needs internet), none, or PATH (.keras encoder / an adapter's encoder.json: its "
                   "backbone / .h5 backbone weights).")
@click.option("--epochs", type=POSITIVE, default=None, help="Epochs [preset: 30 / 60].")
@click.option("--batch-size", type=click.IntRange(min=2), default=None,
              help="Images per batch, --views views each [preset: 100 / 128].")
@click.option("--views", type=click.IntRange(2, 16), default=None,
              help="Augmented views of every image in a batch [2]; more give NT-Xent several positives per "
                   "anchor at proportionally more compute per epoch.")
@click.option("--lr", type=POSITIVE_FLOAT, default=None, help="Adam learning rate [preset: 1e-5 / 1e-3].")
@click.option("--lr-decay", type=click.Choice(["constant", "cosine"]), default=None, help="LR schedule [constant].")
@click.option("--warmup-epochs", type=NON_NEGATIVE_FLOAT, default=None, help="Linear LR warm-up in epochs [0].")
@click.option("--cooldown", type=FiniteFloat(0.0, 1.0), default=None,
              help="Share of the run, at its end, where a constant LR falls linearly to 0 [0: none]; a run may "
                   "be trained longer (--resume --epochs) until its cool-down has begun.")
@click.option("--freeze-bn/--no-freeze-bn", default=None, help="Freeze BatchNorm layers [preset: frozen / training].")
@click.option("--image-size", type=PIXELS, default=None, help="Encoder input side in px [224]; 64 for CPU runs.")
@click.option("--loss", type=click.Choice(["semihard", "hard", "ntxent", "dcl"]), default=None,
              help="semihard/hard: triplet loss with online mining (tfa parity); ntxent: SimCLR's contrastive "
                   "loss; dcl: NT-Xent with the positives out of its denominator (decoupled) "
                   "[preset: semihard / ntxent].")
@click.option("--head", default=None,
              help="Projection head used only for the loss, never stored: none or mlp:W1,...,OUT "
                   "[preset: none / mlp:512,128].")
@click.option("--temperature", type=POSITIVE_FLOAT, default=None,
              help="NT-Xent and DCL temperature [0.2].")
@click.option("--margin", type=NON_NEGATIVE_FLOAT, default=None, help="Triplet margin [0.5].")
@click.option("--weight-decay", type=NON_NEGATIVE_FLOAT, default=None,
              help="Decoupled weight decay (AdamW) [0: plain Adam].")
@click.option("--drop-path", type=FiniteFloat(0.0, 0.99), default=None,
              help="Stochastic depth of the backbone's blocks, at the last block [0.2; 0: off].")
@click.option("--val-fraction", type=FiniteFloat(0.0, 0.5), default=None,
              help="Held-out share of images for the val loss [0.05].")
@click.option("--early-stopping", type=NON_NEGATIVE, default=None,
              help="Stop after N epochs without val-loss gain [0: off].")
@click.option("--lr-plateau", type=NON_NEGATIVE, default=None,
              help="Halve the LR after N epochs without gain [0: off].")
@click.option("--strategy", type=click.Choice(["auto", "one", "mirrored", "multiworker"]), default=None,
              help="tf.distribute strategy [auto].")
@click.option("--precision", type=click.Choice(["float32", "mixed_float16", "mixed_bfloat16"]), default=None,
              help="Keras dtype policy [float32].")
@click.option("--jit/--no-jit", default=None, help="Compile the train step with XLA [off].")
@click.option("--cache/--no-cache", default=None, help="Keep decoded images in memory [off].")
@click.option("--strict/--no-strict", default=None, help="Refuse unreadable images instead of skipping them.")
@click.option("--tensorboard/--no-tensorboard", default=None, help="Write TensorBoard logs to RUN/tensorboard.")
@click.option("--zoom", type=UNIT, default=None, help="Random zoom, fraction of the side [preset: 0.1 / 0].")
@click.option("--crop-scale", default=None,
              help="Random-resized crop: MIN,MAX share of the area, or none [preset: none / 0.3,1].")
@click.option("--colour-jitter", "colour_jitter", type=UNIT, default=None,
              help="Brightness, contrast and saturation jitter strength [preset: 0.2 / 0.3].")
@click.option("--hue", type=FiniteFloat(0.0, 0.5), default=None,
              help="Hue jitter, fraction of the colour circle [preset: 0.2 / 0]; colour marks cell types.")
@click.option("--stain-jitter", "stain", type=UNIT, default=None,
              help="HED stain-concentration jitter strength [preset: 0 (off) / 0.05].")
@click.option("--resolution", type=UNIT, default=None,
              help="Degradation: down-sample by up to this fraction of the side and back up, so a source of sharp "
                   "images also sees blurrier ones [0: off; e.g. 0.5].")
@click.option("--probe-labels", type=click.Path(path_type=Path), default=None,
              help="Labelled images to watch training with (CSV with path,label relative to the images' root, or "
                   "a class-per-folder tree; never a test set): k-NN and linear-probe macro-F1 per epoch.")
@click.option("--probe-every", type=POSITIVE, default=None, help="Epochs between probe scores [1].")
@click.option("--keep", type=click.Choice(["last", "best-probe"]), default=None,
              help="Which epoch becomes encoder.keras: the last, or the one with the best probe score [last].")
@click.option("--view-average", type=click.Choice(["none", "dihedral"]), default=None,
              help="How encoder.keras embeds an image: as it is, or the mean of its eight rotations by 90° and "
                   "mirror images (exactly invariant to them; 8 passes per image; training unchanged) "
                   "[preset: none / dihedral].")
@click.option("--keep-checkpoints", type=NON_NEGATIVE, default=None,
              help="Epoch checkpoints kept in RUN/checkpoints, the newest N (--resume needs only the last) [1]; "
                   "0: the last only while training (an interrupted run resumes; a finished run cannot be "
                   "trained longer).")
@click.option("--seed", type=SEED, default=None, help="Random seed (order, augmentation, initialisation) [0].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch (with a constant "
              "learning rate, a larger --epochs or a --cooldown trains it longer).")
@overwrite_option
def pretrain(manifest, out: Path, config_file: Path | None, resume: bool, overwrite: bool, **options) -> None:
    """Pretrain the encoder on unlabelled images (two or more augmented views per image).

    Writes RUN/config.json, RUN/history.csv (losses; probe scores with --probe-labels), RUN/checkpoints/
    (the last epoch, what --resume needs; with --keep-checkpoints 0 only while the run trains),
    RUN/colour_reference.json (the source style for `adapt`),
    RUN/encoder.keras (the encoder only; a projection head is used for the loss and dropped; with
    --view-average dihedral, the scratch preset's, it embeds the mean of an image's eight symmetric views).
    An interrupted run continues with the same command plus --resume.

    \b
    Example (CPU, synthetic cells, about 2 minutes):
      hemoembed demo-data cells --n-per-class 40 --sites 1 --size 64
      hemoembed pretrain cells --out run --weights none --image-size 64 --epochs 3 --batch-size 32
    Example (GPU, the paper):
      hemoembed pretrain ../shared/data/pbc256 --out runs/pbc --weights imagenet --image-size 224
    """
    from ..errors import InputError
    from ..model.pretrain import pretrain as run_pretrain
    from ..model.pretrain_config import load_run_config, resolve_config

    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other: choose one")
    augment = {name: options.pop(name) for name in AUGMENT_OPTIONS}
    jitter = options.pop("colour_jitter")
    if jitter is not None:
        augment.update(brightness=jitter, contrast=jitter, saturation=jitter)
    if augment["crop_scale"] not in (None, "none"):
        augment["crop_scale"] = tuple(number_list(augment["crop_scale"], "--crop-scale"))
    if options.get("probe_labels") is not None:
        options["probe_labels"] = str(options["probe_labels"])
    base = None
    if resume and config_file is None and (out / "config.json").is_file():
        base = load_run_config(out)  # a bare --resume continues with the saved settings
    config = resolve_config(base, config_file=config_file, augment=augment, **options)
    from ..model.distribute import is_chief

    chief = is_chief()
    if chief:  # other workers never create, clear or write the run folder (shared with the chief)
        inputs = [manifest, options.get("probe_labels")] + ([] if resume else [config_file])
        prepare_output_dir(out, overwrite, allow_resume=resume, inputs=inputs)
    result = run_pretrain(manifest, out, config, resume=resume, progress=progress, log=echo)
    if result.stopped_early:
        echo(f"stopped early after {len(result.history)} epochs (no validation-loss gain)")
    echo(f"run written to {out}" if chief else f"worker done; the chief wrote the run to {out}")
