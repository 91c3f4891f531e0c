"""Reading a spec: a YAML file (or a mapping, or a :class:`Spec`) into a raw mapping, and the
command line's ``--set key.path=value`` overrides applied to it."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from raygrid.cli.spec.model import Spec
from raygrid.cli.spec.problems import Problem, SpecError, type_name


def load_spec(source: Any) -> tuple[dict, str | None]:
    """``(raw mapping, source name)`` from a path, a YAML string's file, a mapping or a :class:`Spec`."""
    if isinstance(source, Spec):
        return source.model_dump(by_alias=True, exclude_unset=True), None
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    if not path.is_file():
        raise SpecError([Problem("", f"spec file not found: {path}")], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML: {exc}")], str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([Problem("", f"expected a mapping at the top level, got {type_name(raw)}")],
                        str(path))
    return raw, str(path)


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """A copy of ``raw`` with ``key.path=value`` overrides applied; values are parsed as YAML.

    ``search.grid.C=[0.1, 1]`` replaces one entry; missing mappings on the way are created; an
    integer part indexes a list (``search.grid.0.C=[1]`` for a list of grids).
    """
    out = copy.deepcopy(dict(raw))
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(f"--set {item}", "expected KEY=VALUE, e.g. search.n_iter=20"))
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problems.append(Problem(f"--set {key}", f"value is not valid YAML: {exc}"))
            continue
        parts = key.split(".")
        node: Any = out
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if isinstance(node, dict):
                    if last:
                        node[part] = value
                    else:
                        if node.get(part) is None:
                            node[part] = {}
                        node = node[part]
                elif isinstance(node, list) and part.lstrip("-").isdigit():
                    index = int(part)
                    if last:
                        node[index] = value
                    else:
                        node = node[index]
                else:
                    where = ".".join(parts[:i]) or "<spec>"
                    hint = ""
                    if isinstance(node, list) and node:
                        rest = ".".join(parts[i:])
                        tries = ", ".join(f"{where}.{n}.{rest}" for n in range(min(len(node), 3)))
                        hint = (f"; its items are numbered from 0: did you mean {where}.0.{rest}? "
                                f"(each of the {len(node)} items is set on its own: {tries}"
                                + (", ..." if len(node) > 3 else "") + ")")
                    raise LookupError(f"{where} is {type_name(node)}, not a mapping{hint}")
        except (LookupError, IndexError) as exc:
            problems.append(Problem(f"--set {key}", str(exc)))
    if problems:
        raise SpecError(problems)
    return out
