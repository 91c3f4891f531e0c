"""Group failed fits' error texts that say the same thing.

The same failure can read differently from one worker process to the next: scikit-learn prints
sets of allowed values (``{'rbf', 'poly', 'linear'}``) in each process's hash order, and object
reprs carry memory addresses (``<function f at 0x7f...>``). :func:`failure_key` removes both
differences, so such failures are counted as one group, shown with the first text seen.
"""
from __future__ import annotations

import re
from typing import Iterable

_BRACES = re.compile(r"\{([^{}\n]*)\}")
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+")
_ITEM = re.compile(r"""\s*(?:'[^']*'|"[^"]*"|-?[\w.]+)(?:\s*:\s*(?:'[^']*'|"[^"]*"|-?[\w.()]+))?\s*""")


def _sorted_items(match: re.Match) -> str:
    inner = match.group(1)
    items = [item.strip() for item in _split(inner)]
    if not items or not all(_ITEM.fullmatch(item) for item in items):
        return match.group(0)  # not a literal set or dict: leave it as it is
    return "{" + ", ".join(sorted(items)) + "}"


def _split(text: str) -> list[str]:
    """Split on commas outside quotes."""
    items, current, quote = [], [], None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ",":
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return items


def failure_key(text: str) -> str:
    """``text`` with set and dict literals sorted and memory addresses blanked: equal for the
    same failure whichever process reported it."""
    return _BRACES.sub(_sorted_items, _ADDRESS.sub("at 0x…", text))


def group_failures(texts: Iterable[str]) -> list[tuple[str, int]]:
    """``[(first text seen, count)]`` per distinct :func:`failure_key`, in order of first sight."""
    groups: dict[str, list] = {}
    for text in texts:
        group = groups.setdefault(failure_key(text), [text, 0])
        group[1] += 1
    return [(text, count) for text, count in groups.values()]


__all__ = ["failure_key", "group_failures"]
