"""A live progress display (rich): fits done / total, running, failed, best so far, elapsed, ETA."""
from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Mapping

from joblib.logger import short_format_time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from raygrid.fitting import FitResult


class SearchProgress:
    """Tracks a search's fits; shows a live line on stderr when ``verbose >= 1``.

    As scikit-learn, ``verbose >= 1`` prints "Fitting ..." for each batch of candidates and
    ``verbose >= 2`` one ``[CV] END`` line per finished fit on stdout (``>= 3`` with scores).
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

    def announce(self, n_candidates: int) -> None:
        """scikit-learn's line for each batch of candidates (stdout, ``verbose >= 1``)."""
        if self.verbose >= 1:
            print(f"Fitting {self.n_splits} folds for each of {n_candidates} candidates, "
                  f"totalling {n_candidates * self.n_splits} fits", flush=True)

    def add(self, result: FitResult, running: int = 0, params: Mapping[str, Any] | None = None,
            ) -> None:
        self.done += 1
        self.running = running
        self.failed += result.failed
        self.cached += result.cached
        if self.metric is not None:
            scores = self._folds[result.candidate]
            scores.append(result.test_scores.get(self.metric, math.nan))
            if len(scores) == self.n_splits:
                mean = sum(scores) / len(scores)
                if not math.isnan(mean) and (self.best is None or mean > self.best):
                    self.best = mean
                del self._folds[result.candidate]
        if self.verbose >= 2:
            print(self._fit_line(result, params), flush=True)
        if self._live is not None:
            self._live.update(self.render())

    def _fit_line(self, r: FitResult, params: Mapping[str, Any] | None) -> str:
        """scikit-learn's ``[CV] END`` line: parameters, then (``verbose >= 3``) the fold and
        scores, then the time, right-aligned to 80 columns."""
        # (a rung's folds follow the earlier rungs' in successive halving: the fold within its set)
        progress = f" {r.fold % self.n_splits + 1}/{self.n_splits}" if self.verbose > 2 else ""
        params = params or {}
        text = ", ".join(f"{k}={params[k]}" for k in sorted(params))
        text += ";" if text else ""
        if r.failed:
            text += " FAILED;"
        elif self.verbose > 2:
            train = r.train_scores
            if list(r.test_scores) == ["score"]:
                test = r.test_scores["score"]
                text += (f", score=(train={train['score']:.3f}, test={test:.3f})" if train
                         else f", score={test:.3f}")
            else:
                for name in sorted(r.test_scores):
                    text += f" {name}: ("
                    if train:
                        text += f"train={train[name]:.3f}, "
                    text += f"test={r.test_scores[name]:.3f})"
        text += f" total time={short_format_time(r.fit_time + r.score_time)}"
        head = f"[CV{progress}] END "
        return head + "." * (80 - len(head) - len(text)) + text

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
