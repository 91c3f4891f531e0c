"""The driver's check that a worker ran the code the driver planned: a fit whose worker ran other
user code (a module edited or reloaded on one side after the other imported it) is an error,
never a result stored under the identity of code that did not run."""
from __future__ import annotations

from typing import Any, Mapping

from sklearn.base import clone

from raygrid.engine.describe import code_identity
from raygrid.engine.fitting import FitResult


class StaleCodeError(RuntimeError):
    """A worker ran other code than the driver for the same fit."""


class CodeCheck:
    """Compares the code identity a worker reports with a fit (``FitResult.code``) with the
    driver's own for the fit's candidate (computed once per candidate, when first needed)."""

    def __init__(self, estimator: Any):
        self.estimator = estimator
        self._expected: dict[int, dict[str, str] | None] = {}

    def expected(self, candidate: int, params: Mapping[str, Any]) -> dict[str, str] | None:
        if candidate not in self._expected:
            try:
                est = clone(self.estimator).set_params(**clone(dict(params), safe=False))
            except Exception:  # noqa: BLE001 - the fit reported this as its own error
                est = None
            self._expected[candidate] = None if est is None else code_identity(
                est, comparable_only=True)
        return self._expected[candidate]

    def __call__(self, result: FitResult, params: Mapping[str, Any]) -> None:
        if result.code is None:
            return
        mine = self.expected(result.candidate, params)
        if mine is None:
            return
        names = sorted(n for n in mine if n in result.code and mine[n] != result.code[n])
        if not names:
            return
        raise StaleCodeError(
            f"a Ray worker ran other code than this process for {', '.join(names)}: the code was "
            "edited or reloaded in this process after the workers imported it (or edited on disk "
            "since this process imported it). Restart Ray so that its workers import the current "
            "code (ray.shutdown(), or restart the kernel or script) and run the search again; "
            "nothing that worker ran was kept.")
