"""raygrid: scikit-learn's GridSearchCV, RandomizedSearchCV, cross_validate, cross_val_score,
cross_val_predict, learning_curve, validation_curve and permutation_test_score, with every
(candidate x fold) fit running as a Ray task on a laptop's cores or a cluster.

``import raygrid`` is light: it neither imports TensorFlow nor starts Ray.
"""
from raygrid.cli.api import run_spec, save_search
from raygrid.search.halving import HalvingGridSearchCV, HalvingRandomSearchCV
from raygrid.search.grid import GridSearchCV, RandomizedSearchCV
from raygrid.search.tune import TuneGridSearchCV, TuneSearchCV
from raygrid.search.curves import learning_curve, validation_curve
from raygrid.search.permutation import permutation_test_score
from raygrid.search.predict import cross_val_predict
from raygrid.search.validation import cross_val_score, cross_validate

from raygrid.version import __version__

__all__ = [
    "GridSearchCV",
    "RandomizedSearchCV",
    "HalvingGridSearchCV",
    "HalvingRandomSearchCV",
    "TuneGridSearchCV",
    "TuneSearchCV",
    "cross_validate",
    "cross_val_score",
    "cross_val_predict",
    "learning_curve",
    "validation_curve",
    "permutation_test_score",
    "save_search",
    "run_spec",
    "__version__",
]
