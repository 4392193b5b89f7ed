"""What every task shares: label joining and checks, splits, class-balanced sampling, metrics, reports."""
from .labels import Labelled, check_trainable, load_labelled, manifest_labels
from .metrics import (
    bootstrap_intervals,
    chance,
    confusion,
    encode_labels,
    evaluate,
    macro_f1,
    neg_log_error,
    scores_from_confusion,
    top_two,
)
from .priors import em_priors
from .reports import f1_axis, per_class_rows, summarize, write_json, write_report, write_summary
from .sampling import ALL, class_permutations, nested_support_sets, per_class_sample, select_shots
from .splits import cv_splits, refuse_overlap, stratified_test_split

__all__ = [
    "ALL", "Labelled", "bootstrap_intervals", "chance", "check_trainable", "class_permutations", "confusion",
    "cv_splits",
    "em_priors", "encode_labels", "evaluate", "f1_axis", "load_labelled", "macro_f1", "manifest_labels",
    "neg_log_error",
    "nested_support_sets", "per_class_rows", "per_class_sample", "refuse_overlap", "scores_from_confusion",
    "select_shots", "stratified_test_split", "summarize", "top_two", "write_json", "write_report",
    "write_summary",
]
