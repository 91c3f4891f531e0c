"""raygrid: scikit-learn's GridSearchCV, RandomizedSearchCV, cross_validate, cross_val_score,
cross_val_predict, learning_curve, validation_curve and permutation_test_score, with every
(candidate x fold) fit running as a Ray task on a laptop's cores or a cluster.

``import raygrid`` is light: it neither imports TensorFlow nor starts Ray, and the searches (with
scikit-learn, pandas and scipy) are imported on first use of their names, so the ``raygrid``
command answers ``--help`` and ``--version`` without them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from raygrid.version import __version__

#: Each public name and the module that defines it (imported when the name is first used).
_EXPORTS = {
    "GridSearchCV": "raygrid.search.grid",
    "RandomizedSearchCV": "raygrid.search.grid",
    "HalvingGridSearchCV": "raygrid.search.halving",
    "HalvingRandomSearchCV": "raygrid.search.halving",
    "TuneGridSearchCV": "raygrid.search.tune",
    "TuneSearchCV": "raygrid.search.tune",
    "cross_validate": "raygrid.search.validation",
    "cross_val_score": "raygrid.search.validation",
    "cross_val_predict": "raygrid.search.predict",
    "learning_curve": "raygrid.search.curves",
    "validation_curve": "raygrid.search.curves",
    "permutation_test_score": "raygrid.search.permutation",
    "save_search": "raygrid.cli.api",
    "run_spec": "raygrid.cli.api",
}

__all__ = list(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from raygrid.cli.api import run_spec, save_search
    from raygrid.search.grid import GridSearchCV, RandomizedSearchCV
    from raygrid.search.halving import HalvingGridSearchCV, HalvingRandomSearchCV
    from raygrid.search.tune import TuneGridSearchCV, TuneSearchCV
    from raygrid.search.curves import learning_curve, validation_curve
    from raygrid.search.permutation import permutation_test_score
    from raygrid.search.predict import cross_val_predict
    from raygrid.search.validation import cross_val_score, cross_validate


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raygrid' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
