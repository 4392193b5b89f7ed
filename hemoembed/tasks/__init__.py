"""Downstream tasks on an embedding store, one subpackage each, all with the same three layers:

(a) estimators and functions on arrays (scikit-learn conventions), (b) ``run(config, out)``: a whole
command's work on files, configured by a typed dataclass saved next to its outputs, and (c) the
subpackage's ``__init__`` exporting the public names. :mod:`.common` holds what tasks share (splits,
class-balanced sampling, metrics, report files, label joining and checks). Tasks import data/, model/ and
store/; those never import tasks/.
"""
