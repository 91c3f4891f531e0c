"""What a worker's environment takes from the driver: the driver's own import paths (so classes
defined beside its code unpickle on workers) and, for Keras, thread caps, quiet logs and the
driver's ``KERAS_BACKEND``. Used by Ray tasks and by Tune trials alike."""
from __future__ import annotations

import os
import sys


#: Run by a Keras search's Ray workers as they start (``runtime_env``'s
#: ``worker_process_setup_hook``): Keras imported with TensorFlow's C++ start-up lines held back.
QUIET_KERAS_HOOK = "raygrid.keras.quiet.import_keras_quietly"


def keras_env(num_cpus: float) -> dict[str, str]:
    """What a Keras worker's environment needs before TensorFlow loads: its threads capped to
    ``num_cpus``, quiet logs, and the driver's ``KERAS_BACKEND``."""
    threads = str(max(1, int(num_cpus or 1)))
    env = {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    if os.environ.get("KERAS_BACKEND"):
        env["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
    return env


def driver_paths() -> list[str]:
    """The driver's own ``sys.path`` entries that a worker's interpreter lacks: the script's or
    notebook's folder, a test folder pytest added, entries made at run time.

    Workers get them first on their ``PYTHONPATH``, so classes defined next to the driver's code
    unpickle there without any setup. Entries inside the Python installation or the virtual
    environment are the workers' too and are left out; folders that do not exist on a worker
    are skipped by its interpreter.
    """
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or path in paths:
            continue
        if any(path == root or path.startswith(root + os.sep) for root in installed):
            continue
        paths.append(path)
    return paths


def driver_pythonpath() -> str | None:
    """A worker's ``PYTHONPATH``: :func:`driver_paths` first, then its own (Ray expands
    ``${PYTHONPATH}`` to the worker's value); None when the driver has no paths of its own."""
    paths = driver_paths()
    return os.pathsep.join(paths + ["${PYTHONPATH}"]) if paths else None
