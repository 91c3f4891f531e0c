"""raygrid: scikit-learn's GridSearchCV, RandomizedSearchCV, cross_validate and cross_val_score,
with every (candidate x fold) fit running as a Ray task on a laptop's cores or a cluster.

``import raygrid`` is light: it neither imports TensorFlow nor starts Ray.
"""
from raygrid.cli.api import run_spec, save_search
from raygrid.search.halving import HalvingGridSearchCV, HalvingRandomSearchCV
from raygrid.search.grid import GridSearchCV, RandomizedSearchCV
from raygrid.search.tune import TuneGridSearchCV, TuneSearchCV
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
    "save_search",
    "run_spec",
    "__version__",
]
