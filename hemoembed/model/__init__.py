"""The encoder, its losses and its training. Importing this package registers hemoembed's Keras layers and
losses (``hemoembed>...``), which safe-mode loading of a saved encoder needs."""
from . import layers, losses  # noqa: F401  (registration)
