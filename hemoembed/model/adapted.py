"""An adapted encoder: a new site's colour transfer in front of an unchanged source encoder, and the small
file that stands for it.

:func:`adapted_encoder` wraps a source encoder: raw crop → [Reinhard to the source style] → [the source's
gray world] → source encoder. Its weights are the source's, so a saved ``.keras`` copy repeats the source
file (24 MB for EfficientNetV2-B0). :func:`save_encoder_reference` writes instead a JSON *encoder
reference* (format ``REFERENCE_FORMAT``): the source encoder's path (relative to the reference's folder,
and absolute as a fallback), the source's fingerprint and preprocessing record, the Reinhard statistics and
the adapted encoder's own fingerprint. :func:`~hemoembed.model.encoder.load_encoder` loads such a ``.json``
like a ``.keras`` file (it calls :func:`load_encoder_reference`), so ``embed``, ``predict``, ``neighbours``,
``gradcam``, ``probe`` and ``serve`` accept either; the rebuilt model is the same model (same fingerprint,
bit-identical embeddings), and a reference whose source is missing or changed is refused in one sentence.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras

from ..config import atomic_write_text
from ..data.colour import ReinhardReference
from ..data.preprocess import PreprocessingRecord
from ..errors import InputError, MismatchError

REFERENCE_FORMAT = "hemoembed-encoder-reference/1"
REINHARD_LAYER = "reinhard"
_KEYS = frozenset({"format", "source", "source_absolute", "source_fingerprint", "record", "reinhard",
                   "fingerprint"})


def adapted_encoder(source: keras.Model, record: PreprocessingRecord,
                    reference: ReinhardReference | None) -> tuple[keras.Model, PreprocessingRecord]:
    """Wrap the source encoder: raw crop → [Reinhard to ``reference``] → [gray world] → source encoder.

    The wrapper's record has no colour step of its own: the source's gray world runs inside the model after
    the Reinhard transfer ("before anything else"). Saved, it loads in safe mode and works with ``predict``.
    """
    from .encoder import SPEC_LAYER
    from .layers import GrayWorld, PreprocessingSpec, ReinhardNormalization

    new_record = record.without_colour()
    size = int(record.image_size)
    inputs = keras.Input((size, size, 3), name="image")
    x = PreprocessingSpec(new_record.to_dict(), name=SPEC_LAYER)(inputs)
    if reference is not None:
        x = ReinhardNormalization(reference.mean, reference.std, name=REINHARD_LAYER)(x)
    if record.colour == "grayworld":
        x = GrayWorld(name="gray_world")(x)
    return keras.Model(inputs, source(x), name="hemoembed_adapted_encoder"), new_record


def save_encoder_reference(model: keras.Model, source: str | os.PathLike, path: str | os.PathLike) -> str:
    """Write ``path`` (JSON), an encoder reference that rebuilds ``model``, the :func:`adapted_encoder` of the
    encoder file ``source``; returns ``model``'s fingerprint. Refuses (:class:`MismatchError`) a model that
    is not that wrapper with the file's weights (a fine-tuned encoder must be saved as a copy)."""
    from .encoder import fingerprint, load_encoder

    source, path = Path(source), Path(path)
    base, record = load_encoder(source)
    try:
        layer = model.get_layer(REINHARD_LAYER)
        reference = ReinhardReference(tuple(layer.mean), tuple(layer.std))
    except ValueError:
        reference = None
    fp = fingerprint(model)
    if fingerprint(adapted_encoder(base, record, reference)[0]) != fp:
        raise MismatchError(f"{path}: the encoder is not {source} behind colour layers (its weights or layers "
                            "differ, e.g. fine-tuned): save it as a copy (save_encoder) instead")
    absolute = source.resolve()
    try:
        relative = Path(os.path.relpath(absolute, path.parent.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only the absolute path can point there
        relative = absolute.as_posix()
    data = {"format": REFERENCE_FORMAT, "source": relative, "source_absolute": absolute.as_posix(),
            "source_fingerprint": fingerprint(base), "record": record.to_dict(),
            "reinhard": None if reference is None else reference.to_dict(), "fingerprint": fp}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return fp


def load_encoder_reference(path: str | os.PathLike) -> tuple[keras.Model, PreprocessingRecord]:
    """Rebuild the adapted encoder an encoder reference stands for; returns the model and its record, as
    :func:`~hemoembed.model.encoder.load_encoder` does for a ``.keras`` file. The source is looked for at
    the relative path first (the reference and its source moved together), then at the absolute one."""
    return _load_reference(Path(path), frozenset())


def _load_reference(path: Path, seen: frozenset[Path]) -> tuple[keras.Model, PreprocessingRecord]:
    from .encoder import fingerprint, load_encoder

    data = _read_reference(path)
    source = _source_file(path, data)
    if source.resolve() in seen | {path.resolve()}:
        raise InputError(f"{path}: the encoder reference points back to itself through {source}")
    if source.suffix.lower() == ".json":
        base, _ = _load_reference(source, seen | {path.resolve()})
    else:
        base, _ = load_encoder(source)
    expected = data["source_fingerprint"]
    if fingerprint(base) != expected:
        raise MismatchError(f"{path}: its source encoder {source} has changed since the adapter referenced it "
                            f"(fingerprint {fingerprint(base)[:12]}, expected {expected[:12]}): restore that "
                            "encoder, or rerun adapt")
    reference = None if data["reinhard"] is None else ReinhardReference.from_dict(data["reinhard"], source=str(path))
    model, record = adapted_encoder(base, PreprocessingRecord.from_dict(data["record"]), reference)
    if fingerprint(model) != data["fingerprint"]:
        raise MismatchError(f"{path}: rebuilds encoder {fingerprint(model)[:12]}, not the {data['fingerprint'][:12]} "
                            "it was written for (written by another hemoembed version?): rerun adapt")
    return model, record


def _read_reference(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not a readable encoder reference ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
        raise InputError(f"{path}: not a hemoembed encoder reference (expected \"format\": "
                         f"\"{REFERENCE_FORMAT}\"; an encoder is a .keras file or such a reference)")
    missing = sorted(_KEYS - set(data))
    if missing:
        raise InputError(f"{path}: encoder reference lacks {', '.join(missing)}")
    return data


def _source_file(path: Path, data: dict[str, Any]) -> Path:
    candidates = [path.parent / str(data["source"]), Path(str(data["source_absolute"]))]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{path}: its source encoder is missing (looked for {candidates[0]} and {candidates[1]}); "
                     "this adapted encoder is a reference to that file: restore it, or rerun adapt with "
                     "--save-encoder copy")
