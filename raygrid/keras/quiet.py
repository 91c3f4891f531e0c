"""Keep native libraries' start-up chatter out of the driver's terminal.

Importing TensorFlow writes lines like ``WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR``, ``oneDNN custom operations are on`` and ``Could not find cuda
drivers`` straight to file descriptor 2, from C++, before ``TF_CPP_MIN_LOG_LEVEL`` is read, so
neither Python's ``warnings``/``logging`` nor that variable can hold them back; nor the
``failed call to cuInit`` error TensorFlow logs on a machine with CUDA libraries and no GPU when
its runtime starts (the first model or op, not the import).
:func:`native_noise_filtered` sends descriptor 2 to a temporary file for the duration of a block
and then writes back every line that is not such chatter: nothing else is lost, and on an error
everything is written back.

Where raygrid holds it back: the driver's first import of Keras through raygrid (scikeras'
wrappers), the first Keras fit of every process (driver and workers: the runtime's start), and
Ray workers of a Keras search from their start (:func:`import_keras_quietly`, their
``worker_process_setup_hook``), before a stock scikeras estimator is unpickled there.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

#: Lines that TensorFlow, absl, XLA and the CUDA stubs print while loading (and nothing else).
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cuda_dnn|cuda_fft|cuda_blas|"
    r"cuda_executor|cuda_platform|cuda_driver|cuda_diagnostics|dso_loader|gpu_device|gpu_timer|"
    r"service|device_compiler|computation_placer)\.cc:\d+\] .*"
    r"|[IWE]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] failed call to cuInit: .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the "
    r"appropriate compiler flags\."
    r"|E0000 00:00:[\d.]+ +\d+ .*Unable to register cu(DNN|FFT|BLAS) factory.*"
    r"|Attempting to register factory for plugin .* when one has already been registered)$"
)


def is_noise(line: str) -> bool:
    """Whether ``line`` is native start-up chatter (see :data:`NOISE`)."""
    return bool(NOISE.match(line.rstrip("\r\n")))


@contextlib.contextmanager
def native_noise_filtered() -> Iterator[None]:
    """Hold back native start-up chatter written to stderr (fd 2) inside the block.

    Everything else written to stderr inside the block is written back when it ends, in order
    (after the block, not interleaved with stdout). Python's own ``sys.stderr`` is flushed first
    so its earlier output keeps its place. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (errors only)
    for the TensorFlow logging that does honour it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, ValueError, OSError):  # no real stderr (some embedded interpreters)
        yield
        return
    _flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), fd)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if failed or not is_noise(line)]
            if kept:
                os.write(fd, "".join(kept).encode("utf-8"))


def import_keras_quietly() -> None:
    """Import Keras (and so its backend, TensorFlow or JAX) with the start-up chatter held back.

    What Ray workers of a Keras search run when they start (``worker_process_setup_hook``),
    before anything of the search is unpickled. Never raises: where Keras cannot be imported,
    the fit that needs it says why."""
    if "keras" in sys.modules:
        return
    try:
        with native_noise_filtered():
            import keras  # noqa: F401
    except Exception:  # noqa: BLE001 - the fit reports it
        pass


def _flush() -> None:
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
