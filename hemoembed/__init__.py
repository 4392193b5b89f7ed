"""hemoembed: self-supervised leukocyte embeddings and few-label tasks on them."""
from ._version import __version__
from .data.imageio import load_image, load_images
from .data.manifest import Manifest, load_manifest
from .errors import HemoembedError, InputError, MismatchError

__all__ = [
    "__version__",
    "HemoembedError",
    "InputError",
    "MismatchError",
    "Manifest",
    "load_image",
    "load_images",
    "load_manifest",
]
