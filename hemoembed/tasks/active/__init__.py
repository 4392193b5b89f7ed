"""Active learning on the embedding (``active-learn``): the incremental SVM, query strategies, the
simulation study with its power-law analysis, and the real labelling session."""
from .estimator import IncrementalLinearSVM, pool_standardiser, standardise
from .learner import ActiveLearner
from .power_law import PowerLawFit, analyse, compare_rates, fit_curves, fit_power_law, labels_to_reach
from .session import LabellingSession, SessionConfig
from .simulation import (
    ALL_LABELS,
    TIDY_COLUMNS,
    ActiveConfig,
    f1_rows,
    n_iterations,
    read_tidy_csv,
    simulate,
    simulate_curve,
    tidy_csv_text,
)
from .strategies import INIT_STRATEGIES, STRATEGIES, initial_indices, make_learner, query_strategy
from .workflow import run

__all__ = [
    "ALL_LABELS", "ActiveConfig", "ActiveLearner", "INIT_STRATEGIES", "IncrementalLinearSVM",
    "LabellingSession", "PowerLawFit", "STRATEGIES", "SessionConfig", "TIDY_COLUMNS", "analyse",
    "compare_rates", "f1_rows", "fit_curves", "fit_power_law", "initial_indices", "labels_to_reach",
    "make_learner", "n_iterations", "pool_standardiser", "query_strategy", "read_tidy_csv", "run", "simulate",
    "simulate_curve", "standardise", "tidy_csv_text",
]
