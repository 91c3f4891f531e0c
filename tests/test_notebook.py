"""raygrid in a real Jupyter kernel, as notebook users run it.

- ``examples/pima_keras.ipynb`` (the seed study: its model functions defined in the notebook,
  scikeras' stock KerasClassifier, TensorFlow on the driver, default arguments) executed by
  nbclient on a tiny grid: its fits train fused; the progress is one display updated in place.
- A search interrupted in the kernel (a kernel interrupt, as the stop button sends) and run
  again in the same kernel resumes from ``storage=``; the second search reuses the running Ray.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "pima_keras.ipynb"

pytestmark = pytest.mark.slow


def _kernel_env(monkeypatch, **extra):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return "".join(str(v) for v in output.get("data", {}).values())


@pytest.mark.keras
def test_the_seed_notebook_trains_fused_in_a_jupyter_kernel(tmp_path, monkeypatch, pima_csv):
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    params[0].source = f"QUICK = True\nDATA = {str(pima_csv)!r}"
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json\nprint(json.dumps({'engines': grid.results_['engine'].value_counts().to_dict(),"
        " 'n_fits': len(grid.results_), 'cv_fits': len(scores)}))"))
    _kernel_env(monkeypatch)
    NotebookClient(nb, kernel_name="python3", timeout=900,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    facts = json.loads(nb.cells[-1].outputs[-1]["text"].strip().splitlines()[-1])
    assert facts == {"engines": {"fused": 24}, "n_fits": 24, "cv_fits": 3}
    grid_cell = next(c for c in nb.cells if "GridSearchCV(model" in c.source)
    outputs = grid_cell.outputs
    # The progress: one display, updated in place (nbclient applies the updates to it).
    progress = [o for o in outputs if o["output_type"] == "display_data" and "fits" in _text(o)]
    assert len(progress) == 1, outputs
    assert "24/24 fits" in _text(progress[0]) and "24 fused" in _text(progress[0])
    assert "Best:" in "".join(_text(o) for o in outputs)
    stderr = "".join(_text(o) for c in nb.cells for o in c.get("outputs", ())
                     if o.get("name") == "stderr")
    assert "fits" not in stderr  # no wall of progress lines
    warnings = [line for line in stderr.splitlines() if "Warning:" in line]
    assert len(warnings) == len(set(warnings)), warnings  # each warning shown once
    violins = next(c for c in nb.cells if "violin_per_param(" in c.source)
    assert any("image/png" in o.get("data", {}) for o in violins.outputs)


SETUP = '''
import time
import numpy as np
import ray
from sklearn.base import BaseEstimator, ClassifierMixin
from raygrid import GridSearchCV


class Slow(ClassifierMixin, BaseEstimator):
    def __init__(self, a=0):
        self.a = a

    def fit(self, X, y):
        time.sleep(0.4)
        self.classes_ = np.unique(y)
        return self

    def score(self, X, y):
        return self.a / 100


X, y = np.random.default_rng(0).normal(size=(40, 2)), np.arange(40) % 2
search = lambda: GridSearchCV(Slow(), {"a": list(range(24))}, cv=2, backend="ray",
                              storage=STORE, refit=False, verbose=1)
'''


class Kernel:
    """A Jupyter kernel driven as a notebook front end drives it (jupyter_client)."""

    def __init__(self):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3")

    def start(self, code: str) -> str:
        return self.kc.execute(code)

    def wait(self, msg_id: str, timeout: float = 600) -> tuple[str, str]:
        """(status, everything the cell printed) once the cell ``msg_id`` has finished."""
        out, deadline = [], time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"cell still running after {timeout} s: {''.join(out)[-2000:]}")
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("execute_result", "display_data", "update_display_data"):
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                out.append(content["ename"] + ": " + content["evalue"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:  # (the shell channel may still hold replies to earlier requests)
            reply = self.kc.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]["status"], "".join(out)

    def run(self, code: str) -> str:
        status, out = self.wait(self.start(code))
        assert status == "ok", out
        return out

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _stored(store: Path) -> int:
    path = store / "fits.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM fits").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_an_interrupted_search_resumes_in_the_same_kernel_on_the_same_ray(tmp_path, monkeypatch):
    _kernel_env(monkeypatch)
    store = tmp_path / "store"
    kernel = Kernel()
    try:
        kernel.run(f"STORE = {str(store)!r}\n" + SETUP)
        cell = kernel.start("search().fit(X, y)")
        deadline = time.monotonic() + 300
        while _stored(store) < 6:
            assert time.monotonic() < deadline, "no fit was stored"
            time.sleep(0.2)
        kernel.km.interrupt_kernel()  # the notebook's stop button
        status, out = kernel.wait(cell)
        assert status == "error" and "KeyboardInterrupt" in out, out
        assert "to resume" in out
        kept = _stored(store)
        assert 6 <= kept < 48
        address = kernel.run("print(ray.get_runtime_context().gcs_address)").strip()

        out = kernel.run("s = search().fit(X, y)\n"
                         "print('reused', int(s.results_['cached'].sum()), 'of', len(s.results_))\n"
                         "print(ray.get_runtime_context().gcs_address)")
        reused = int(out.split("reused ")[1].split()[0])
        assert reused == kept and "of 48" in out
        assert out.strip().splitlines()[-1] == address  # the same Ray, not a new one
        assert _stored(store) == 48
    finally:
        kernel.close()
