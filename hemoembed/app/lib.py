"""The library functions the review app uses, imported in one place.

The app is a client of hemoembed's public API: store reading, the encoder, the checked image decoder, the
SVM, neighbours, t-SNE placement, GradCAM++ and the labelling session. Keeping every import here means a
reorganisation of the library changes this file only.
"""
from __future__ import annotations

from ..config import atomic_write_bytes, csv_text, save_config
from ..data.imageio import MAX_PIXELS, probe_bytes
from ..data.imageio import load_image as decode_image
from ..data.preprocess import finish_batch_tf, load_inputs, prepare_bytes_tf
from ..errors import HemoembedError, InputError, MismatchError, one_line
from ..explain.gallery import store_image_root
from ..explain.gradcam import LinearDecision, explain_class, overlay
from ..explain.tsne import TsneMap
from ..model.encoder import fingerprint, load_encoder
from ..store.embed import CONFIG_FILE as EMBED_CONFIG
from ..store.embed import UNDECODABLE
from ..store.store import EmbeddingStore, make_part_table, short
from ..tasks.active import IncrementalLinearSVM, LabellingSession, SessionConfig
from ..tasks.common import load_labelled
from ..tasks.svm import column_folder, load_svm, read_meta

__all__ = [
    "EMBED_CONFIG", "MAX_PIXELS", "UNDECODABLE", "EmbeddingStore", "HemoembedError", "IncrementalLinearSVM",
    "InputError", "LabellingSession", "LinearDecision", "MismatchError", "SessionConfig", "TsneMap",
    "atomic_write_bytes", "csv_text", "decode_image", "explain_class", "finish_batch_tf", "fingerprint",
    "load_encoder", "load_inputs", "load_labelled", "load_svm", "make_part_table", "column_folder", "one_line",
    "overlay", "probe_bytes", "prepare_bytes_tf", "read_meta", "save_config", "short", "store_image_root",
]
