"""The plan: every (candidate, fold) fit as a small immutable record, built before anything runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Trial:
    """One fit to run: candidate ``candidate`` on split ``fold``.

    ``seed`` is the per-fit seed handed to estimators that take one from raygrid (Keras models);
    ``None`` leaves the estimator's own ``random_state`` untouched.
    """

    candidate: int
    fold: int
    params: Mapping[str, Any]
    seed: int | None = None


def fit_seed(random_state: int | None, candidate: int, fold: int) -> int | None:
    """A reproducible 31-bit seed for one fit, derived from (random_state, candidate, fold)."""
    if random_state is None:
        return None
    state = np.random.SeedSequence([int(random_state), int(candidate), int(fold)]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def build_trials(
    candidates: Sequence[Mapping[str, Any]],
    n_splits: int,
    *,
    first_candidate: int = 0,
    random_state: int | None = None,
) -> list[Trial]:
    """Trials for ``candidates`` (numbered from ``first_candidate``) on every fold, candidate-major."""
    return [
        Trial(c, f, params, fit_seed(random_state, c, f))
        for c, params in enumerate(candidates, start=first_candidate)
        for f in range(n_splits)
    ]
