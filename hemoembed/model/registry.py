"""Importing this module registers hemoembed's Keras layers and losses (``hemoembed>...``) for safe-mode
loading; :mod:`hemoembed._quiet` imports it as soon as Keras loads, whoever imports Keras."""
from . import layers, losses  # noqa: F401  (registration)
