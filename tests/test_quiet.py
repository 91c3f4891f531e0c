"""TensorFlow's C++ start-up lines never reach the user: not from the driver's first Keras import
through raygrid, not from its first fit (the refit), not from any Ray worker (a Ray started by the
user with ``log_to_driver=True``, where workers' stderr is printed by the driver), on either
engine."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raygrid.keras.quiet import is_noise

pytestmark = pytest.mark.keras
ROOT = Path(__file__).resolve().parents[1]
ANSI_AND_RAY_PREFIX = re.compile(r"^(\x1b\[[\d;]*m)?\([^)]*pid=\d+[^)]*\)(\x1b\[[\d;]*m)?\s*")


def test_the_lines_seen_from_tensorflow_2_21_are_noise_and_others_are_not():
    for line in (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796533418.359454   24343 cudart_stub.cc:31] Could not find cuda drivers on "
        "your machine, GPU will not be used.",
        "E0000 00:00:1796533636.405439   27543 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "E0000 00:00:1796533636.405439   27543 cuda_driver.cc:152] failed call to cuInit: "
        "UNKNOWN ERROR (303)",
        "I0000 00:00:1796533418.676689   24343 cpu_feature_guard.cc:227] This TensorFlow binary "
        "is optimized to use available CPU instructions in performance-critical operations.",
    ):
        assert is_noise(line), line
    for line in ("ValueError: could not broadcast", "E0000 00:00:1.0 1 my_op.cc:3] my own error",
                 "Epoch 1/5"):
        assert not is_noise(line), line


def _stderr(code: str, timeout: int = 600) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"),
               RAY_USAGE_STATS_ENABLED="0")
    for name in ("RAY_ADDRESS", "TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "DONE" in done.stdout, done.stdout
    return [ANSI_AND_RAY_PREFIX.sub("", line) for line in done.stderr.splitlines()]


def test_keras_without_raygrid_prints_the_chatter_here():
    """The control: on this machine a plain ``import keras`` (TensorFlow) prints such lines."""
    lines = _stderr("import keras\nprint('DONE')\n", timeout=300)
    assert any(is_noise(line) for line in lines), lines


def test_no_chatter_from_the_driver_or_any_worker():
    lines = _stderr("""
        import numpy as np
        import ray
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=True)
        import raygrid
        from raygrid.keras import seed_classifier   # the driver's first Keras import
        X = np.random.RandomState(0).rand(40, 8); y = (X[:, 0] > 0.5).astype(int)
        for engine in ("standard", "auto"):         # TensorFlow workers, then fused JAX workers
            s = raygrid.GridSearchCV(seed_classifier(epochs=1), {"optimizer": ["adam", "sgd"]},
                                     cv=2, engine=engine, backend="ray").fit(X, y)  # + a refit here
            print(engine, sorted(set(s.results_["engine"])), flush=True)
        import time; time.sleep(2)   # the workers' last lines reach the driver
        ray.shutdown()
        print("DONE", flush=True)
    """)
    noise = [line for line in lines if is_noise(line) or "cuInit" in line or "absl::" in line]
    assert not noise, "\n".join(lines[-60:])
