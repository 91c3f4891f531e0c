"""What is wrong with a spec: :class:`Problem` (a key path and a message), :class:`SpecError`
(every problem at once), and the wording every check shares (values, types, suggestions)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (a dotted key path) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<spec>'}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot run; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        n = len(self.problems)
        where = f" {self.source}" if self.source else ""
        head = f"invalid spec{where}: {n} problem{'s' if n != 1 else ''}"
        return head + "".join(f"\n  - {p}" for p in self.problems)


def join_path(*parts: Any) -> str:
    """A dotted key path from its parts, empty parts left out."""
    return ".".join(str(p) for p in parts if p != "")


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def type_name(value: Any) -> str:
    """A YAML value's type in words: ``a mapping``, ``a list``, ``an integer``, ..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def listing(names: Sequence[str], limit: int = 25) -> str:
    """The first ``limit`` names, comma-separated, with ``...`` when there are more."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def did_you_mean(word: str, choices: Sequence[str], n: int = 1) -> str:
    """``"; did you mean 'x' or 'y'?"`` for the ``n`` closest choices, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, choices, n=n)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
