"""scikit-learn's callbacks (``search.set_callbacks(...)``) around a search's tasks.

The task tree is scikit-learn's: the search's fit, its "search" task, one
"candidate-split-evaluation" per (candidate, fold) (under a "halving-iteration" per rung in
successive halving) and the "refit-with-best-params". The driver calls every hook of the
search's own tasks with the search itself as ``estimator``: an evaluation begins when its fit is
handed to the executor and ends when its result is recorded. On the worker the evaluation's
context is propagated into the estimator being fitted, so auto-propagated callbacks see its
inner tasks; their messages reach the driver through scikit-learn's own transport (a local
socket: workers on other machines cannot reach it, as with joblib).
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

from sklearn.base import clone

from raygrid._compat import root_callback_context
from raygrid.engine.fitting import take


class SearchCallbacks:
    """The callback contexts of one ``fit`` of ``search``; does nothing without callbacks."""

    def __init__(self, search: Any, X: Any, y: Any, fit_params: Mapping[str, Any]):
        self.search = search
        self.X, self.y = X, y
        self.fit_params = fit_params
        self.root = root_callback_context(search, 1 + (search.refit is not False))
        self._search_ctx = None

    @property
    def active(self) -> bool:
        return self.root is not None

    def _metadata(self, rows: Any = None) -> dict | None:
        weight = self.fit_params.get("sample_weight")
        if weight is None:
            return None
        return {"sample_weight": weight if rows is None else take(weight, rows)}

    def begin(self) -> None:
        if self.active:
            self.root.call_on_fit_task_begin(estimator=self.search, X=self.X, y=self.y,
                                             metadata=self._metadata())

    def end(self) -> None:
        if self.active:
            self.root.call_on_fit_task_end(estimator=self.search, X=self.X, y=self.y,
                                           metadata=self._metadata())

    @contextlib.contextmanager
    def searching(self, rungs: bool):
        """The "search" task; with ``rungs``, each batch of candidates is a task of its own."""
        if self.active:
            self._search_ctx = self.root.subcontext(
                task_name="search", max_subtasks=None, sequential_subtasks=rungs,
            ).call_on_fit_task_begin(estimator=self.search)
            self._rungs = rungs
        yield
        if self.active:
            self._search_ctx.call_on_fit_task_end(estimator=self.search)

    @contextlib.contextmanager
    def batch(self, n_trials: int):
        """One call of ``evaluate_candidates``; yields the evaluations' parent context."""
        if not self.active:
            yield None
            return
        parent = self._search_ctx
        if self._rungs:
            parent = parent.subcontext(
                task_name="halving-iteration", max_subtasks=n_trials, sequential_subtasks=False,
            ).call_on_fit_task_begin(estimator=self.search)
        yield parent
        if self._rungs:
            parent.call_on_fit_task_end(estimator=self.search)

    def evaluations(self, parent: Any, trials: Sequence[Any], splits: Sequence) -> dict:
        """A begun context for each trial, by (candidate, fold), as its fit is handed out.

        Each is propagated (on the driver, to a copy of the trial's estimator) so that its
        ``on_fit_task_*`` hooks skip the callbacks the fitted estimator will call itself.
        """
        contexts = {}
        for i, trial in enumerate(trials):
            ctx = parent.subcontext(task_name="candidate-split-evaluation", task_id=i)
            probe = clone(self.search.estimator).set_params(**clone(dict(trial.params),
                                                                   safe=False))
            train = splits[trial.fold][0]
            with ctx.propagate_callback_context(probe):
                ctx.call_on_fit_task_begin(estimator=self.search, **self._task_data(train))
            contexts[(trial.candidate, trial.fold)] = (ctx, train)
        return contexts

    def evaluated(self, contexts: dict, result: Any) -> None:
        """End the evaluation of ``result``'s trial."""
        ctx, train = contexts[(result.candidate, result.fold)]
        ctx.call_on_fit_task_end(estimator=self.search, **self._task_data(train))

    def _task_data(self, train: Any) -> dict:
        # Lazy: scikit-learn's contexts call them only for hooks that ask for them.
        return {"X": lambda: take(self.X, train), "y": lambda: take(self.y, train),
                "metadata": lambda: self._metadata(train)}

    @contextlib.contextmanager
    def refitting(self, estimator: Any):
        """The refit of the best candidate on the whole data."""
        if not self.active:
            yield
            return
        ctx = self.root.subcontext(task_name="refit-with-best-params")
        data = {"X": self.X, "y": self.y, "metadata": self._metadata()}
        with ctx.propagate_callback_context(estimator):
            ctx.call_on_fit_task_begin(estimator=self.search, **data)
            yield
        ctx.call_on_fit_task_end(estimator=self.search, **data)

