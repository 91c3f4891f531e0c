"""Failed fits that say the same thing are one group, whatever order a worker printed a set in."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import FitFailedWarning

from raygrid.outputs import report
from raygrid.engine.failures import failure_key, group_failures
from raygrid.engine.fitting import FitResult
from raygrid.outputs.results import warn_or_raise_about_failures

A = ("sklearn.utils._param_validation.InvalidParameterError: The 'kernel' parameter of SVC must be a "
     "str among {'linear', 'poly', 'rbf', 'sigmoid', 'precomputed'} or a callable. Got 'rfb' instead.")
B = A.replace("{'linear', 'poly', 'rbf', 'sigmoid', 'precomputed'}", "{'rbf', 'precomputed', 'poly', 'sigmoid', 'linear'}")
OTHER = A.replace("Got 'rfb'", "Got 'lin'")


def test_the_key_ignores_set_order_and_addresses():
    assert failure_key(A) == failure_key(B) and failure_key(A) != failure_key(OTHER)
    assert failure_key("<function f at 0x7f00aa> failed") == failure_key("<function f at 0x7f11bb> failed")
    assert failure_key("a {b} c {'x': 1, 'y': 2}") == failure_key("a {b} c {'y': 2, 'x': 1}")
    assert failure_key("f(x) {not, a literal set!}") == "f(x) {not, a literal set!}"
    assert group_failures([A, B, OTHER, B]) == [(A, 3), (OTHER, 1)]


def _result(fold, error):
    return FitResult(candidate=0, fold=fold, test_scores={"score": np.nan if error else 0.5},
                     train_scores=None, fit_time=0.0, score_time=0.0, n_test_samples=1, error=error)


def test_the_fit_failed_warning_counts_one_group():
    results = [_result(0, "Traceback:\n" + A), _result(1, "Traceback:\n" + B), _result(2, None)]
    with pytest.warns(FitFailedWarning) as caught:
        warn_or_raise_about_failures(results, np.nan)
    message = str(caught[0].message)
    assert "2 fits failed with the following error" in message and message.count("fits failed with") == 1


def test_the_report_shows_one_row_per_failure(tmp_path, monkeypatch):
    from raygrid.outputs import plots

    monkeypatch.setattr(plots, "save_all", lambda *args, **kwargs: {})
    results = pd.DataFrame({
        "candidate": [0, 0, 1, 1], "fold": [0, 1, 0, 1], "param_C": [1, 1, 2, 2],
        "params": [{"C": 1}, {"C": 1}, {"C": 2}, {"C": 2}], "test_score": [np.nan, np.nan, np.nan, 0.5],
        "fit_time": [0.1] * 4, "score_time": [0.01] * 4,
        "error": ["Traceback:\n" + A, "Traceback:\n" + B, "Traceback:\n" + OTHER, None],
        "node": ["n1", "n2", "n1", "n2"],
    })
    summary = pd.DataFrame({"param_C": [2, 1], "params": [{"C": 2}, {"C": 1}],
                            "mean_test_score": [0.5, np.nan], "std_test_score": [0.0, np.nan],
                            "rank_test_score": [1, 2], "mean_fit_time": [0.1, 0.1], "n_failed": [1, 2]},
                           index=pd.Index([1, 0], name="candidate"))
    best = {"params": {"C": 2}, "metric": "score", "mean_score": 0.5, "candidate": 1}
    page = report.write_report(results, summary, best, tmp_path).read_text()
    failures = page.split('id="failures"')[1].split("</table>")[0]
    assert failures.count("<tr>") == 1 + 2  # the header, the kernel group (2 fits), the other one
    assert '<td class="num">2</td>' in failures
