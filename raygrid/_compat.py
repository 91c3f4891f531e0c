"""The private APIs of other libraries that raygrid uses, each behind a probe.

Every name here is looked up once, at first use; if a new version of the library moved or
changed it, the feature that needs it falls back (with a warning where the user would notice)
instead of breaking. Nothing else in raygrid imports a private name of another library.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any


@functools.cache
def _visual_block_class() -> Any:
    """scikit-learn's ``_VisualBlock`` (its HTML diagrams), or None if it moved."""
    try:
        from sklearn.utils._repr_html.estimator import _VisualBlock
    except ImportError:
        return None
    return _VisualBlock


def search_visual_block(search: Any) -> Any:
    """The HTML diagram of a search, as scikit-learn draws its own: the best estimator once
    refitted, else the estimator. Raises if the class moved: scikit-learn then draws its
    default diagram."""
    block = _visual_block_class()
    if block is None:
        raise NotImplementedError("scikit-learn's _VisualBlock moved")
    key = "best_estimator_" if hasattr(search, "best_estimator_") else "estimator"
    estimator = getattr(search, key)
    return block("parallel", [estimator], names=[f"{key}: {type(estimator).__name__}"],
                 name_details=[str(estimator)])


# -- scikit-learn's callbacks (sklearn.callback, scikit-learn >= 1.9) ---------------------------
try:
    from sklearn.callback import CallbackSupportMixin, with_callbacks
except ImportError:  # an older scikit-learn: searches take no callbacks
    class CallbackSupportMixin:  # type: ignore[no-redef]
        pass

    def with_callbacks(method):  # type: ignore[no-redef]
        return method


def root_callback_context(estimator: Any, max_subtasks: int) -> Any:
    """The root context of ``estimator``'s callbacks for one fit (their ``setup`` hooks run),
    or None when it has none or scikit-learn's estimator-side callback API moved."""
    if not getattr(estimator, "_skl_callbacks", None):
        return None
    init = getattr(estimator, "_init_callback_context", None)
    if init is None:
        warnings.warn("raygrid: this scikit-learn's callback API is not the one raygrid knows; "
                      "the search's callbacks are not called.", RuntimeWarning, stacklevel=3)
        return None
    return init(max_subtasks=max_subtasks)
