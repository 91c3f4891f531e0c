"""How values are written in the HTML report and the terminal table: HTML-escaped text, scores
(mean ± std), durations and ranks, and how a Keras search's fits were trained."""
from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def as_float(value: Any) -> float:
    """``value`` as a float, NaN when it is not a number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def format_score(mean: Any, std: Any = None) -> str:
    """``"mean ± std"`` with four decimals, ``"mean"`` without a std, ``"—"`` without a mean."""
    mean = as_float(mean)
    if math.isnan(mean):
        return "—"
    std = as_float(std)
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def format_seconds(value: Any) -> str:
    """A duration in seconds, minutes or hours, as a person reads it (``"—"`` when unknown)."""
    seconds = as_float(value)
    if math.isnan(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min"


def rank_text(row: pd.Series, metric: str, position: int) -> str:
    """A candidate's rank by ``metric``, or its ``position`` in the table when it has none."""
    rank = as_float(row.get(f"rank_test_{metric}"))
    return str(int(rank)) if not math.isnan(rank) else str(position)


def training_lines(info: dict | None) -> list[tuple[str, str]]:
    """``best["training"]`` in words, one (label, text) per engine that trained fits."""
    if not info:
        return []
    engines, backends = info.get("engines") or {}, info.get("keras_backend") or {}
    out = []
    for engine in sorted(engines, key=lambda e: (e != "fused", e)):
        n = engines[engine]
        if not n:
            continue
        text = f"{n} fits"
        if engine == "fused" and info.get("fused_groups"):
            groups = info["fused_groups"]
            text += f" in {groups} fused group{'s' if groups != 1 else ''}"
        if backends.get(engine):
            text += f", Keras on {backends[engine]}"
        out.append((f"{engine} engine", text))
    if info.get("driver_keras_backend"):
        out.append(("Keras backend of the driver", str(info["driver_keras_backend"])))
    return out
