"""Comparing raygrid's results with scikit-learn's, shared by the parity tests."""
from __future__ import annotations

import numpy as np


def assert_cv_results_equal(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key, expected in theirs.items():
        got = ours[key]
        if key.endswith("_time"):
            assert np.shape(got) == np.shape(expected), key
            continue
        if key == "params":
            assert got == expected
        elif isinstance(expected, np.ma.MaskedArray):
            assert isinstance(got, np.ma.MaskedArray), key
            assert got.dtype == expected.dtype, key
            np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
            keep = ~np.ma.getmaskarray(expected)
            assert list(got.data[keep]) == list(expected.data[keep]), key
        else:
            assert isinstance(got, np.ndarray), key
            assert got.dtype == expected.dtype, key
            np.testing.assert_array_equal(got, expected, err_msg=key, strict=True)
