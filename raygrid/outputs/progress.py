"""A live progress display (rich): fits done / total, running, failed, best so far, elapsed, ETA.

On a terminal the line is redrawn in place and always fits the terminal's width (less important
parts give way first: cached count, elapsed time, bar); while the search waits before its first
fit (Ray starting) it says so. In a Jupyter notebook the line is one output, updated in place.
When stderr is neither (a log file, a pipe) nothing is redrawn: a waiting phase and the final
state are each printed once, as whole lines.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from typing import Any, Mapping

from joblib.logger import short_format_time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from raygrid.engine.fitting import FitResult


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
        self.fused = 0  # fits trained by the fused engine (raygrid.engine.fused)
        self.running = 0
        self.best: float | None = None
        self._folds: dict[int, list[float]] = defaultdict(list)
        self._start = time.monotonic()
        self._console = console or Console(stderr=True)
        self._live: Live | _NotebookLine | None = None
        #: Fits the executor can run at once (set once known): "running" never shows more.
        self.slots: int | None = None
        #: What the search waits for before its first fit (e.g. "starting Ray..."), else None.
        self.status: str | None = None
        #: A word on where fits run (e.g. "local: search < 5 s"), shown while set.
        self.note: str | None = None

    def __enter__(self) -> "SearchProgress":
        self._start = time.monotonic()
        if self.verbose >= 1 and self._console.is_jupyter:
            self._live = _NotebookLine(self.render())
        elif self.verbose >= 1 and self._console.is_terminal:
            self._live = Live(self.render(), console=self._console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None
        elif self.verbose >= 1:  # not a terminal: the final state once, as a whole line
            self._console.print(self.render(), soft_wrap=True)

    @contextlib.contextmanager
    def phase(self, status: str | None):
        """Show ``status`` (e.g. "starting Ray...") instead of the counts while the block runs."""
        if not status:
            yield
            return
        self.status = status
        if self._live is not None:
            self._live.update(self.render())
        elif self.verbose >= 1:
            self._console.print(f"{self.title}: {status}", markup=False, highlight=False, soft_wrap=True)
        try:
            yield
        finally:
            self.status = None
            if self._live is not None:
                self._live.update(self.render())

    def say(self, text: str) -> None:
        """One whole line on stderr (``verbose >= 1``), above the live line on a terminal."""
        if self.verbose >= 1:
            self._console.print(f"{self.title}: {text}", markup=False, highlight=False, soft_wrap=True)

    def announce(self, n_candidates: int) -> None:
        """scikit-learn's line for each batch of candidates (stdout, ``verbose >= 1``)."""
        if self.verbose >= 1:
            print(f"Fitting {self.n_splits} folds for each of {n_candidates} candidates, "
                  f"totalling {n_candidates * self.n_splits} fits", flush=True)

    def fusion(self, fused: int, total: int, reasons: Mapping[str, int]) -> None:
        """How many of the fits about to run train fused, and why the others do not (stdout,
        ``verbose >= 1``, before they run)."""
        if self.verbose < 1 or not total:
            return
        line = f"raygrid: {fused} of {total} fits train fused"
        if reasons:
            line += "; one by one on the standard engine: " + "; ".join(
                f"{n} ({why})" for why, n in reasons.items())
        print(line, flush=True)

    def add(self, result: FitResult, running: int = 0, params: Mapping[str, Any] | None = None,
            ) -> None:
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

    def render(self, width: int | None = None) -> Text:
        """The progress line, at most ``width`` characters (default: the console's width less one,
        so a terminal never wraps it)."""
        width = max(20, (width or self._console.width) - 1)
        elapsed = _clock(self.elapsed())
        if self.status:
            return Text(_fit(f"{self.title} · {self.status} · {elapsed}", width))
        running = self.running if self.slots is None else min(self.running, self.slots)
        eta = self.eta()
        # (text, priority): lower priorities give way first when the line is too long.
        parts = [(f"{self.done}/{self.total} fits", 9), (f"{running} running", 5),
                 (f"{self.failed} failed", 8 if self.failed else 3)]
        if self.cached:
            parts.append((f"{self.cached} cached", 1))
        if self.fused:
            parts.append((f"{self.fused} fused", 4))
        if self.note:
            parts.append((self.note, 4))
        if self.best is not None:
            parts.append((f"best {self.metric} {self.best:.4f}", 7))
        parts.append((f"{elapsed} elapsed", 2))
        if eta is not None:
            parts.append((f"ETA {_clock(eta)}", 6))
        min_bar, max_bar = 10, 30
        while True:
            body = " · ".join(text for text, _ in parts)
            room = width - len(self.title) - len(body) - 2  # two spaces around the bar
            if room >= min_bar or len(parts) == 1:
                break
            parts.remove(min(parts, key=lambda part: part[1]))
        if room >= min_bar:
            line = f"{self.title} {_bar(self.done, self.total, min(room, max_bar))} {body}"
        else:
            line = _fit(f"{self.title} {body}", width)
        text = Text(line)
        if self.failed:
            text.highlight_words([f"{self.failed} failed"], style="bold red")
        return text


class _NotebookLine:
    """The progress line in a Jupyter notebook: one output, updated in place (IPython's display
    handles), at most four times a second; the last state is always shown."""

    INTERVAL_S = 0.25

    def __init__(self, text: Text):
        from IPython.display import display

        self._shown = 0.0
        self._pending: Text | None = None
        self._handle = display(text, display_id=True)

    def update(self, text: Text) -> None:
        now = time.monotonic()
        if now - self._shown < self.INTERVAL_S:
            self._pending = text
            return
        self._pending = None
        self._shown = now
        self._handle.update(text)

    def __exit__(self, *exc) -> None:
        if self._pending is not None:
            self._handle.update(self._pending)


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / total) if total else 0
    return "━" * filled + "╺" + " " * (width - filled - 1) if filled < width else "━" * width


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"
