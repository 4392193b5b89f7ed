"""The library functions the review app uses, named in one place.

The app is a client of hemoembed's public API: store reading, the encoder, the checked image decoder, the
SVM, neighbours, t-SNE placement, GradCAM++ and the labelling session. Keeping every import here means a
reorganisation of the library changes this file only. Each name loads its module on first use
(:mod:`hemoembed.lazy`), so ``hemoembed serve`` checks its store, model and map before TensorFlow loads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import HemoembedError, InputError, MismatchError, one_line
from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from ..config import atomic_write_bytes, csv_text, save_config
    from ..data.imageio import MAX_PIXELS, probe_bytes
    from ..data.imageio import load_image as decode_image
    from ..data.preprocess import finish_batch_tf, load_inputs, prepare_bytes_tf
    from ..explain.gallery import store_image_root
    from ..explain.gradcam import LinearDecision, explain_class, overlay
    from ..explain.tsne import TsneMap
    from ..model.encoder import fingerprint, load_encoder
    from ..store.embed import CONFIG_FILE as EMBED_CONFIG
    from ..store.embed import UNDECODABLE
    from ..store.index import saved_index
    from ..store.store import EmbeddingStore, make_part_table, short
    from ..tasks.active import IncrementalLinearSVM, LabellingSession, SessionConfig
    from ..tasks.common import load_labelled
    from ..tasks.svm import check_fingerprint, column_folder, load_svm, read_meta

__getattr__ = lazy_attributes(__name__, {
    "atomic_write_bytes": "hemoembed.config", "csv_text": "hemoembed.config", "save_config": "hemoembed.config",
    "MAX_PIXELS": "hemoembed.data.imageio", "probe_bytes": "hemoembed.data.imageio",
    "decode_image": "hemoembed.data.imageio:load_image",
    "finish_batch_tf": "hemoembed.data.preprocess", "load_inputs": "hemoembed.data.preprocess",
    "prepare_bytes_tf": "hemoembed.data.preprocess",
    "store_image_root": "hemoembed.explain.gallery",
    "LinearDecision": "hemoembed.explain.gradcam", "explain_class": "hemoembed.explain.gradcam",
    "overlay": "hemoembed.explain.gradcam",
    "TsneMap": "hemoembed.explain.tsne",
    "fingerprint": "hemoembed.model.encoder", "load_encoder": "hemoembed.model.encoder",
    "EMBED_CONFIG": "hemoembed.store.embed:CONFIG_FILE", "UNDECODABLE": "hemoembed.store.embed",
    "saved_index": "hemoembed.store.index",
    "EmbeddingStore": "hemoembed.store.store", "make_part_table": "hemoembed.store.store",
    "short": "hemoembed.store.store",
    "IncrementalLinearSVM": "hemoembed.tasks.active", "LabellingSession": "hemoembed.tasks.active",
    "SessionConfig": "hemoembed.tasks.active",
    "load_labelled": "hemoembed.tasks.common",
    **dict.fromkeys(("check_fingerprint", "column_folder", "load_svm", "read_meta"), "hemoembed.tasks.svm"),
})

__all__ = [
    "EMBED_CONFIG", "MAX_PIXELS", "UNDECODABLE", "EmbeddingStore", "HemoembedError", "IncrementalLinearSVM",
    "InputError", "LabellingSession", "LinearDecision", "MismatchError", "SessionConfig", "TsneMap",
    "atomic_write_bytes", "check_fingerprint", "csv_text", "decode_image", "explain_class", "finish_batch_tf",
    "fingerprint", "load_encoder", "load_inputs", "load_labelled", "load_svm", "make_part_table", "column_folder",
    "one_line", "overlay", "probe_bytes", "prepare_bytes_tf", "read_meta", "save_config", "saved_index", "short",
    "store_image_root",
]
