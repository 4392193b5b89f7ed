"""The supervised baseline (``baseline``): the same encoder with a softmax head, trained on the labels."""
from .model import MODEL_FILE, BaselineConfig, balanced_class_weights, build_classifier, schedule, train_baseline
from .workflow import run, split

__all__ = [
    "BaselineConfig", "MODEL_FILE", "balanced_class_weights", "build_classifier", "run", "schedule", "split",
    "train_baseline",
]
