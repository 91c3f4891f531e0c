"""The fused engine's process set-up: Keras kept from importing TensorFlow while the engine runs
on JAX, and JAX's persistent compilation cache."""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from typing import Iterator

from raygrid._compat import keras_forget_missing_tensorflow


def configure_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (once per process); returns its directory.

    ``RAYGRID_JAX_CACHE`` chooses the directory (``0`` or ``off`` disables it); a cache
    directory the user configured in JAX already is left as it is.
    """
    import jax

    setting = os.environ.get("RAYGRID_JAX_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = setting or os.path.join(os.path.expanduser("~"), ".cache", "raygrid", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


_tf_lock = threading.Lock()
_tf_depth = 0


@contextlib.contextmanager
def without_tensorflow() -> Iterator[None]:
    """Keep Keras from importing TensorFlow (seconds) while the fused engine runs on JAX.

    Keras' config serialisation asks whether TensorFlow is available, which imports it when it
    is installed. While this is active such an import fails fast; afterwards Keras may ask again.
    Nothing is changed when TensorFlow is imported already.
    """
    global _tf_depth
    with _tf_lock:
        if "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None:
            active = False
        else:
            active = True
            _tf_depth += 1
            if _tf_depth == 1:
                sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if active:
            with _tf_lock:
                _tf_depth -= 1
                if _tf_depth == 0:
                    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
                        del sys.modules["tensorflow"]
                    if not keras_forget_missing_tensorflow():  # Keras may look again
                        warnings.warn(
                            "raygrid: this Keras' lazy TensorFlow module is not the one raygrid "
                            "knows; if Keras looked for TensorFlow while the fused engine ran, "
                            "it may take TensorFlow as missing in this process.",
                            RuntimeWarning, stacklevel=3)
