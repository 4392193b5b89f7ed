"""The embedding network: EfficientNetV2-B0 → global average pooling → dropout → unit L2 → 1280-d, optionally
averaged at inference over each image's eight dihedral views (:func:`with_view_average`).

The encoder takes float32 images in [0, 255] of ``record.image_size`` (EfficientNetV2's own rescaling
layer is kept) and carries its :class:`~hemoembed.data.preprocess.PreprocessingRecord` in a
``PreprocessingSpec`` layer, so a saved ``encoder.keras`` is self-describing and loads in safe mode.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import keras
import numpy as np

from ..data.preprocess import PreprocessingRecord
from ..errors import InputError, MismatchError
from .layers import DIHEDRAL, DihedralViews, L2Normalize, PreprocessingSpec, ViewAverage
from .options import WEIGHTS_KINDS, check_view_average, encoder_file

EMBEDDING_DIM = 1280
SPEC_LAYER = "hemoembed_preprocessing"
BACKBONE = "efficientnetv2-b0"
FINGERPRINT_SCHEME = "hemoembed-fingerprint/2"
KERAS_DROP_PATH = 0.2  # keras.applications' EfficientNetV2 drop_connect_rate (its B0 builder fixes it)
# Configuration keys that never change what an encoder computes: where a class is defined, whether a layer
# trains (BatchNorm frozen or not), the shapes a layer was built for (implied by the wiring).
_NEUTRAL_KEYS = frozenset({"module", "trainable", "build_config", "compile_config"})


def build_encoder(record: PreprocessingRecord, weights: str = "none", dropout: float = 0.2,
                  freeze_bn: bool = True, name: str = "hemoembed_encoder",
                  drop_path: float = KERAS_DROP_PATH, view_average: str = "none") -> keras.Model:
    """Functional encoder; ``weights`` is ``imagenet``, ``none`` or a path (.keras encoder or .h5 backbone).

    ``drop_path``: the backbone's stochastic depth (a residual block's chance of being skipped while
    training, rising linearly to this at the last block); only training sees it. ``view_average``: see
    :func:`with_view_average` (training never sees it either)."""
    size = int(record.image_size)
    inputs = keras.Input((size, size, 3), name="image")
    x = PreprocessingSpec(record.to_dict(), name=SPEC_LAYER)(inputs)
    backbone = _backbone(size, weights)
    set_drop_path(backbone, drop_path)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = L2Normalize(name="l2_normalize", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights not in ("imagenet", "none"):
        _load_weights_from_path(model, backbone, Path(weights))
    set_batchnorm_trainable(model, not freeze_bn)
    return with_view_average(model, view_average)


def with_view_average(model: keras.Model, view_average: str = "dihedral") -> keras.Model:
    """The encoder whose embedding is the mean of an image's eight dihedral views (``dihedral``), sharing
    ``model``'s layers and weights; ``model`` itself for ``none`` or when it already averages views.

    Inference costs eight passes per image; training (``training=True``) is unchanged, so a run's checkpoints
    load into either form. The embedding becomes exactly invariant to rotations by 90° and mirroring."""
    check_view_average(view_average)
    if view_average == "none" or any(isinstance(layer, DihedralViews) for layer in model.layers):
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    x = DihedralViews(name="dihedral_views")(inputs)
    for layer in _chain(model):
        x = layer(x)
    outputs = ViewAverage(len(DIHEDRAL), name="view_average")(x)
    return keras.Model(inputs, outputs, name=model.name)


def view_average_of(model: keras.Model) -> str:
    """``dihedral`` when the encoder averages its images' dihedral views, else ``none``."""
    return "dihedral" if any(isinstance(layer, DihedralViews) for layer in all_layers(model)) else "none"


def set_drop_path(backbone: keras.Model, drop_path: float) -> None:
    """Scale the stochastic-depth rates Keras gives EfficientNetV2's blocks (up to ``KERAS_DROP_PATH``) so
    the last block's is ``drop_path``; the other dropout layers are not the backbone's (it has no top)."""
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = layer.rate * drop_path / KERAS_DROP_PATH


def _backbone(size: int, weights: str) -> keras.Model:
    kind = weights if weights in ("imagenet", "none") else "none"
    try:
        return keras.applications.EfficientNetV2B0(
            include_top=False, weights="imagenet" if kind == "imagenet" else None,
            input_shape=(size, size, 3), include_preprocessing=True)
    except Exception as exc:  # noqa: BLE001 - the download error type varies by platform
        if kind == "imagenet":
            raise InputError("--weights imagenet: could not obtain the ImageNet weights for EfficientNetV2-B0 "
                             f"(needs internet access to storage.googleapis.com; {type(exc).__name__}: "
                             f"{str(exc)[:120]}); use --weights none or --weights PATH") from None
        raise


def _load_weights_from_path(model: keras.Model, backbone: keras.Model, path: Path) -> None:
    """The backbone's weights from a hemoembed encoder (``.keras``, or an adapter's ``encoder.json``
    reference: the backbone inside its source encoder) or from ``.h5`` backbone weights."""
    if not path.exists():
        raise InputError(f"--weights {path}: no such file (expected {WEIGHTS_KINDS})")
    source = load_encoder(path)[0] if path.suffix.lower() in (".keras", ".json") else None
    try:
        if source is not None:
            backbone.set_weights(backbone_of(source).get_weights())
        else:
            backbone.load_weights(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(f"--weights {path}: does not fit an EfficientNetV2-B0 backbone ({str(exc)[:160]})") from None


def set_batchnorm_trainable(model: keras.Model, trainable: bool) -> int:
    """Freeze (inference-mode, no statistics updates) or unfreeze every BatchNormalization layer."""
    count = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = trainable
            count += 1
    return count


def all_layers(model: keras.Model):
    """Every layer of ``model``, nested models (the backbone) expanded."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def backbone_of(model: keras.Model) -> keras.Model:
    """The convolutional backbone (EfficientNetV2), however deeply the encoder nests it: see
    :func:`backbone_chain`."""
    return backbone_chain(model)[1]


def backbone_chain(model: keras.Model) -> tuple[list, keras.Model, list]:
    """The encoder as one chain around its convolutional backbone: (layers before, backbone, layers after).

    Found by structure, not by name: the backbone is the last sub-model on the chain whose output is a
    feature map (rank 4). A sub-model whose output is not a feature map is opened and its layers spliced in,
    so an adapted encoder (colour layers → the source encoder → backbone) gives the same split as a plain one
    with its colour layers in front. Calling the layers in order computes ``model`` exactly (GradCAM runs it
    so to differentiate through the backbone's last activation). A model that is not a chain is refused.
    """
    layers = _chain(model)
    nets = [i for i, layer in enumerate(layers) if _is_feature_model(layer)]
    if not nets:
        raise MismatchError(f"{model.name}: no convolutional backbone found (no sub-model with a feature-map "
                            "output on its chain of layers)")
    at = nets[-1]
    return layers[:at], layers[at], layers[at + 1:]


def _is_feature_model(layer) -> bool:
    return isinstance(layer, keras.Model) and len(layer.output.shape) == 4


def _chain(model: keras.Model) -> list:
    """The layers from ``model``'s input to its output, sub-models that are not backbones expanded; each must
    take exactly the previous layer's output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise MismatchError(f"{model.name}: an encoder has one input and one output, not "
                            f"{len(model.inputs)} and {len(model.outputs)}")
    layers, tensor, start = [], model.outputs[0], model.inputs[0]
    while tensor is not start:
        operation, node_index, _ = tensor._keras_history
        inputs = operation._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            raise MismatchError(f"{model.name}: layer {operation.name!r} takes {len(inputs)} inputs; an encoder "
                                "is a chain of single-input layers")
        if isinstance(operation, keras.Model) and not _is_feature_model(operation):
            layers = _chain(operation) + layers
        else:
            layers.insert(0, operation)
        tensor = inputs[0]
    return layers


def preprocessing_record(model: keras.Model) -> PreprocessingRecord:
    """The record saved inside an encoder; a model without one is not a hemoembed encoder."""
    try:
        spec = model.get_layer(SPEC_LAYER)
    except ValueError:
        raise MismatchError(f"model {model.name!r} carries no hemoembed preprocessing record") from None
    return PreprocessingRecord.from_dict(spec.record)


def fingerprint(model: keras.Model) -> str:
    """Identity of what the encoder computes (not of its file): sha256 over, in order,

    1. ``FINGERPRINT_SCHEME``;
    2. the architecture: :func:`architecture`, the model's Keras configuration (layer classes and settings,
       dtype policies, wiring, the weightless layers such as Reinhard or gray-world normalisation) as
       canonical JSON, with layer names replaced by their order of appearance (Keras numbers unnamed layers
       per session) and without ``_NEUTRAL_KEYS``;
    3. the preprocessing record the model carries (canonical JSON; ``{}`` when it carries none);
    4. every weight's shape and float32 bytes, in ``model.weights`` order.

    Equal for a saved and a reloaded encoder, and for the same architecture rebuilt with the same weights
    (BatchNorm frozen or not); different whenever the embedding of some image can differ. Format 1 stores
    and older ``model.json`` files hold the weights-only fingerprint of hemoembed before this scheme.
    """
    digest = hashlib.sha256(FINGERPRINT_SCHEME.encode() + b"\0")
    digest.update(architecture(model).encode() + b"\0")
    try:
        record = preprocessing_record(model).to_dict()
    except MismatchError:
        record = {}
    digest.update(json.dumps(record, sort_keys=True).encode() + b"\0")
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value), dtype=np.float32)
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def architecture(model: keras.Model) -> str:
    """The model's configuration as canonical JSON (see :func:`fingerprint`)."""
    config = model.get_config()
    names: dict[str, str] = {}

    def collect(node) -> None:
        if isinstance(node, dict):
            for layer in node.get("layers") or []:
                if isinstance(layer, dict) and isinstance(layer.get("name"), str):
                    names.setdefault(layer["name"], f"#{len(names)}")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    def canonical(node):
        if isinstance(node, dict):
            return {k: canonical(v) for k, v in node.items() if k not in _NEUTRAL_KEYS}
        if isinstance(node, (list, tuple)):
            return [canonical(v) for v in node]
        return names.get(node, node) if isinstance(node, str) else node

    collect(config)
    return json.dumps(canonical(config), sort_keys=True, separators=(",", ":"), default=str)


def save_encoder(model: keras.Model, path: str | os.PathLike) -> str:
    """Save atomically as ``.keras`` (temporary name, then rename); returns the fingerprint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves neither a half-written encoder nor a temporary
        raise
    return fingerprint(model)


def load_encoder(path: str | os.PathLike) -> tuple[keras.Model, PreprocessingRecord]:
    """Load an encoder in Keras safe mode; returns the model and its preprocessing record. A ``.json`` path
    is an adapter's encoder reference (:mod:`hemoembed.model.adapted`), rebuilt from its source encoder."""
    path = encoder_file(path)
    if path.suffix.lower() == ".json":
        from .adapted import load_encoder_reference

        return load_encoder_reference(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        raise InputError(f"{path}: not a loadable Keras encoder ({type(exc).__name__}: {str(exc)[:160]})") from None
    return model, preprocessing_record(model)
