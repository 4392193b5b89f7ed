"""How good is an embedding? ``hemoembed probe``: the same linear SVM on an encoder's embedding, on raw pixels
and on an untrained encoder's embedding, over the same held-out splits, beside chance."""
from ..common.metrics import chance
from .compare import linear_probe, probe_splits
from .workflow import CHANCE, ENCODER, PIXELS, RANDOM, ProbeConfig, raw_pixels, run, verdict

__all__ = ["CHANCE", "ENCODER", "PIXELS", "ProbeConfig", "RANDOM", "chance", "linear_probe", "probe_splits",
           "raw_pixels", "run", "verdict"]
