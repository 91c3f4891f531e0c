"""A live progress display (rich): fits done / total, running, failed, best so far, elapsed, ETA."""
from __future__ import annotations

import math
import time
from collections import defaultdict

from rich.console import Console
from rich.live import Live
from rich.text import Text

from raygrid.fitting import FitResult


class SearchProgress:
    """Tracks a search's fits; shows a live line on stderr when ``verbose >= 1``.

    ``verbose >= 2`` also prints one line per finished fit, like scikit-learn's ``[CV]`` lines.
    """

    def __init__(self, total: int, n_splits: int, metric: str | None, verbose: int = 0,
                 title: str = "raygrid", console: Console | None = None):
        self.total = total
        self.n_splits = n_splits
        self.metric = metric
        self.verbose = verbose
        self.title = title
        self.done = 0
        self.failed = 0
        self.cached = 0
        self.fused = 0  # fits trained by the fused engine (raygrid.fused)
        self.running = 0
        self.best: float | None = None
        self._folds: dict[int, list[float]] = defaultdict(list)
        self._start = time.monotonic()
        self._console = console or Console(stderr=True)
        self._live: Live | None = None

    def __enter__(self) -> "SearchProgress":
        self._start = time.monotonic()
        if self.verbose >= 1:
            self._live = Live(self.render(), console=self._console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None

    def add(self, result: FitResult, running: int = 0) -> None:
        self.done += 1
        self.running = running
        self.failed += result.failed
        self.cached += result.cached
        self.fused += result.engine == "fused"
        if self.metric is not None:
            scores = self._folds[result.candidate]
            scores.append(result.test_scores.get(self.metric, math.nan))
            if len(scores) == self.n_splits:
                mean = sum(scores) / len(scores)
                if not math.isnan(mean) and (self.best is None or mean > self.best):
                    self.best = mean
                del self._folds[result.candidate]
        if self.verbose >= 2:
            self._console.print(self._fit_line(result))
        if self._live is not None:
            self._live.update(self.render())

    def _fit_line(self, r: FitResult) -> str:
        scores = ", ".join(f"{k}={v:.3f}" for k, v in r.test_scores.items())
        status = "FAILED" if r.failed else scores
        return (f"[CV {r.fold + 1}/{self.n_splits}] END candidate {r.candidate}; {status}; "
                f"fit {r.fit_time:.2f}s")

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def eta(self) -> float | None:
        fresh = self.done - self.cached
        if fresh <= 0 or self.done >= self.total:
            return None
        return self.elapsed() / fresh * (self.total - self.done)

    def render(self) -> Text:
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        bar = "━" * filled + "╺" + " " * (width - filled - 1) if filled < width else "━" * width
        eta = self.eta()
        parts = [
            f"{self.title} ", bar,
            f" {self.done}/{self.total} fits",
            f" · running {self.running}",
            f" · failed {self.failed}",
        ]
        if self.cached:
            parts.append(f" · cached {self.cached}")
        if self.fused:
            parts.append(f" · fused {self.fused}")
        if self.best is not None:
            parts.append(f" · best {self.metric} {self.best:.4f}")
        parts.append(f" · {_clock(self.elapsed())} elapsed")
        if eta is not None:
            parts.append(f" · ETA {_clock(eta)}")
        text = Text("".join(parts))
        if self.failed:
            text.highlight_words([f"failed {self.failed}"], style="bold red")
        return text


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"
