"""Linear SVMs on the embedding (``fit-svm``, ``predict``): the estimator, its saved form, the run.

A saved model's metadata (:mod:`.meta`) and the predict run load without scikit-learn; the estimator and
the fit-svm run load it on first use of their names (:mod:`hemoembed.lazy`).
"""
from typing import TYPE_CHECKING

from ...lazy import lazy_attributes
from .meta import DEFAULT_SOLVER, SOLVERS, check_fingerprint, column_folder, model_folders, read_meta
from .predict import PredictConfig, Predictions, prediction_table, run_predict
from .support_curve import parse_sizes, summarize_curve, support_curve, write_support_curve

if TYPE_CHECKING:
    from .estimator import DEFAULT_C, EmbeddingSVM, load_svm
    from .workflow import FitSVMConfig, fit_column, run, split_data

__getattr__ = lazy_attributes(__name__, {
    **dict.fromkeys(("DEFAULT_C", "EmbeddingSVM", "load_svm"), f"{__name__}.estimator"),
    **dict.fromkeys(("FitSVMConfig", "fit_column", "run", "split_data"), f"{__name__}.workflow"),
})

__all__ = [
    "DEFAULT_C", "DEFAULT_SOLVER", "EmbeddingSVM", "FitSVMConfig", "PredictConfig", "Predictions", "SOLVERS",
    "check_fingerprint", "column_folder", "fit_column", "load_svm", "model_folders", "parse_sizes",
    "prediction_table", "read_meta", "run", "run_predict", "split_data", "summarize_curve", "support_curve",
    "write_support_curve",
]
