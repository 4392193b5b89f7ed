"""The encoder, its losses and its training.

Importing this package loads nothing heavy: configuration and option checks (:mod:`.pretrain_config`,
:mod:`.options`) run without TensorFlow. hemoembed's Keras layers and losses (``hemoembed>...``), which
safe-mode loading of a saved encoder needs, are registered by :mod:`.registry` as soon as Keras loads.
"""
