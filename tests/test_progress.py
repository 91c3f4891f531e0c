"""The live progress line and the driver's quiet start: widths, waiting phases, piped output."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from rich.console import Console

from raygrid.engine.executors import SerialExecutor
from raygrid.engine.executors.ray import RayExecutor
from raygrid.engine.fitting import FitResult
from raygrid.outputs.progress import SearchProgress
from raygrid.keras.quiet import is_noise, native_noise_filtered
from raygrid.engine import runner

ROOT = Path(__file__).resolve().parents[1]
ABSL = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _result(candidate, fold, score=0.9, failed=False, cached=False):
    return FitResult(candidate=candidate, fold=fold, test_scores={"balanced_accuracy": score},
                     train_scores={}, fit_time=0.1, score_time=0.01, n_test_samples=10,
                     error="boom" if failed else None, cached=cached)


def _busy(console, title="HalvingRandomSearchCV"):
    progress = SearchProgress(12345, 5, "balanced_accuracy", verbose=1, title=title, console=console)
    for i in range(10):
        progress.add(_result(i // 5, i % 5, failed=i == 3, cached=i < 2), running=37)
    return progress


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_line_fits_the_terminal(width):
    progress = _busy(Console(file=io.StringIO(), width=width))
    line = progress.render().plain
    assert len(line) <= width - 1, line
    assert "10/12345 fits" in line and "1 failed" in line  # what matters most stays


def test_running_never_shows_more_than_slots():
    progress = _busy(Console(file=io.StringIO(), width=200))
    assert "37 running" in progress.render().plain
    progress.slots = 2
    assert "2 running" in progress.render().plain


def test_waiting_phase_is_shown():
    progress = SearchProgress(0, 3, None, verbose=1, console=Console(file=io.StringIO(), width=80))
    with progress.phase("starting Ray..."):
        assert "starting Ray..." in progress.render().plain and "fits" not in progress.render().plain
    assert "0/0 fits" in progress.render().plain


def test_piped_output_is_whole_lines():
    buffer = io.StringIO()
    console = Console(file=buffer, width=80)
    assert not console.is_terminal
    with SearchProgress(2, 1, "score", verbose=1, title="GridSearchCV", console=console) as progress:
        with progress.phase("starting Ray..."):
            pass
        progress.add(_result(0, 0))
        progress.add(_result(1, 0))
    lines = buffer.getvalue().split("\n")
    assert lines[-1] == "", "the output must end with a newline"
    assert lines[0] == "GridSearchCV: starting Ray..."
    assert lines[1].startswith("GridSearchCV ━") and "2/2 fits" in lines[1] and len(lines) == 3


def test_what_share_waits_for(monkeypatch):
    fake_ray = types.SimpleNamespace(is_initialized=lambda: False)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert runner._waiting_for(RayExecutor()) == "starting Ray..."
    assert runner._waiting_for(RayExecutor(address="10.0.0.5:6379")) == "connecting to Ray at 10.0.0.5:6379..."
    assert runner._waiting_for(SerialExecutor()) is None
    fake_ray.is_initialized = lambda: True
    assert runner._waiting_for(RayExecutor()) is None


def test_native_noise_is_held_back_and_the_rest_kept(capfd):
    lines = [ABSL,
             "I0000 00:00:1795917735.181593   19118 port.cc:153] oneDNN custom operations are on.",
             "I0000 00:00:1795917735.185069   19118 cudart_stub.cc:31] Could not find cuda drivers",
             "a real warning from the user's code"]
    with native_noise_filtered():
        os.write(2, ("\n".join(lines) + "\n").encode())
    err = capfd.readouterr().err
    assert err == "a real warning from the user's code\n"
    assert all(is_noise(line) for line in lines[:3]) and not is_noise(lines[3])


def test_native_output_is_all_kept_when_the_block_fails(capfd):
    with pytest.raises(RuntimeError), native_noise_filtered():
        os.write(2, (ABSL + "\n").encode())
        raise RuntimeError("import failed")
    assert ABSL in capfd.readouterr().err


@pytest.mark.keras
def test_raygrid_check_of_a_keras_spec_prints_no_tensorflow_noise(pima_csv):
    pytest.importorskip("tensorflow")
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAYGRID_PIMA=str(pima_csv))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "raygrid.cli.main", "check", "examples/specs/pima_quick.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6 fits" in done.stdout
    assert done.stderr == "", done.stderr
