"""Linear SVMs on the embedding (``fit-svm``, ``predict``): the estimator, its saved form, the run."""
from .estimator import (
    DEFAULT_C,
    DEFAULT_SOLVER,
    SOLVERS,
    EmbeddingSVM,
    check_fingerprint,
    column_folder,
    load_svm,
    model_folders,
    read_meta,
)
from .predict import PredictConfig, Predictions, prediction_table, run_predict
from .support_curve import parse_sizes, summarize_curve, support_curve, write_support_curve
from .workflow import FitSVMConfig, fit_column, run, split_data

__all__ = [
    "DEFAULT_C", "DEFAULT_SOLVER", "EmbeddingSVM", "FitSVMConfig", "PredictConfig", "Predictions", "SOLVERS",
    "check_fingerprint", "column_folder", "fit_column", "load_svm", "model_folders", "parse_sizes",
    "prediction_table", "read_meta", "run", "run_predict", "split_data", "summarize_curve", "support_curve",
    "write_support_curve",
]
