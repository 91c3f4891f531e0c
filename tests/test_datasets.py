"""raygrid.datasets: the Pima loader's search order, the OpenML fallback and its errors."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from raygrid import datasets
from raygrid.datasets import (
    PIMA_COLUMNS,
    PIMA_TARGET,
    DatasetNotFoundError,
    load_breast_cancer,
    load_pima,
    pima_cache_path,
)

HEADER = ",".join([*PIMA_COLUMNS, PIMA_TARGET])


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No RAYGRID_PIMA, an empty cache folder, and a network that must not be used."""
    monkeypatch.delenv("RAYGRID_PIMA", raising=False)
    monkeypatch.setenv("RAYGRID_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("sklearn.datasets.fetch_openml", no_network)
    return tmp_path


def _small_csv(path, rows=((6, 148, 72, 35, 0, 33.6, 0.627, 50, 1), (1, 85, 66, 29, 0, 26.6, 0.351, 31, 0))):
    lines = [HEADER] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _fake_openml(calls):
    def fetch_openml(*, data_id, as_frame=True, **kwargs):
        calls.append(data_id)
        frame = pd.DataFrame(
            {
                "preg": [6.0, 1.0, 8.0],
                "plas": [148.0, 85.0, 183.0],
                "pres": [72.0, 66.0, 64.0],
                "skin": [35.0, 29.0, 0.0],
                "insu": [0.0, 0.0, 0.0],
                "mass": [33.6, 26.6, 23.3],
                "pedi": [0.627, 0.351, 0.672],
                "age": [50.0, 31.0, 32.0],
                "class": pd.Categorical(
                    ["tested_positive", "tested_negative", "tested_positive"]
                ),
            }
        )
        return Bunch(frame=frame, data=frame.drop(columns="class"), target=frame["class"])

    return fetch_openml


def test_load_pima_from_path(pima_csv):
    X, y = load_pima(pima_csv)
    assert X.shape == (768, 8) and X.dtype == np.float64
    assert y.shape == (768,) and np.issubdtype(y.dtype, np.integer)
    assert set(np.unique(y)) == {0, 1}
    assert (y == 0).sum() == 500 and (y == 1).sum() == 268


def test_load_pima_as_frame(pima_csv):
    X, y = load_pima(str(pima_csv), as_frame=True)
    assert isinstance(X, pd.DataFrame) and isinstance(y, pd.Series)
    assert list(X.columns) == list(PIMA_COLUMNS) and y.name == PIMA_TARGET
    assert X.shape == (768, 8)
    np.testing.assert_array_equal(X.to_numpy(), load_pima(pima_csv)[0])


def test_env_var_then_cache_order(isolated, monkeypatch, pima_csv):
    cached = pima_cache_path()
    cached.parent.mkdir(parents=True)
    _small_csv(cached)
    # The cache is used when nothing else is given ...
    assert load_pima()[0].shape == (2, 8)
    # ... RAYGRID_PIMA takes precedence over it ...
    monkeypatch.setenv("RAYGRID_PIMA", str(pima_csv))
    assert load_pima()[0].shape == (768, 8)
    # ... and an explicit path over both.
    assert load_pima(cached)[0].shape == (2, 8)


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("RAYGRID_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pima_cache_path() == tmp_path / ".cache" / "raygrid" / "pima-indians-diabetes.csv"


def test_missing_explicit_sources_are_errors(isolated, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="path="):
        load_pima(isolated / "nope.csv")
    monkeypatch.setenv("RAYGRID_PIMA", str(isolated / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="RAYGRID_PIMA"):
        load_pima()


def test_openml_fallback_maps_columns_and_caches(isolated, monkeypatch):
    calls = []
    monkeypatch.setattr("sklearn.datasets.fetch_openml", _fake_openml(calls))
    X, y = load_pima(as_frame=True)
    assert calls == [37]
    assert list(X.columns) == list(PIMA_COLUMNS)
    assert X.loc[0, "Glucose"] == 148.0 and X.loc[2, "DiabetesPedigreeFunction"] == 0.672
    assert y.tolist() == [1, 0, 1]

    cached = pima_cache_path()
    assert cached.is_file()
    assert cached.read_text().splitlines()[0] == HEADER
    # The second call reads the cache and does not download again.
    X2, y2 = load_pima()
    assert calls == [37]
    np.testing.assert_allclose(X2, X.to_numpy())
    np.testing.assert_array_equal(y2, y.to_numpy())


def test_offline_without_copy_names_every_option(isolated):
    with pytest.raises(DatasetNotFoundError) as info:
        load_pima()
    message = str(info.value)
    for part in ("path=", "RAYGRID_PIMA", str(pima_cache_path()), "RAYGRID_CACHE", "37", "network is unreachable"):
        assert part in message
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_header_names_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="bad.csv") as info:
        load_pima(bad)
    assert "Pregnancies" in str(info.value)


def test_non_binary_target_rejected(tmp_path):
    bad = _small_csv(tmp_path / "three.csv", rows=((1, 2, 3, 4, 5, 6.0, 0.5, 30, 2),))
    with pytest.raises(ValueError, match="three.csv"):
        load_pima(bad)


def test_load_breast_cancer():
    X, y = load_breast_cancer()
    assert X.shape == (569, 30) and y.shape == (569,)
    Xf, yf = load_breast_cancer(as_frame=True)
    assert isinstance(Xf, pd.DataFrame) and isinstance(yf, pd.Series)


def test_module_does_not_import_tensorflow():
    code = "import sys, raygrid.datasets; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert datasets.PIMA_OPENML_ID == 37
