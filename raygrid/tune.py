"""``from raygrid.tune import TuneSearchCV``: tune-sklearn's import path, kept for its users.

The package itself is :mod:`raygrid.search.tune`."""
from raygrid.search.tune import ASHA, TuneBaseSearch, TuneGridSearchCV, TuneSearchCV, incremental_kind

__all__ = ["TuneSearchCV", "TuneGridSearchCV", "TuneBaseSearch", "ASHA", "incremental_kind"]
