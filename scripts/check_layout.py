"""The package's shape, checked: module sizes, import cycles, private names imported across
modules, and private names of other libraries used outside ``raygrid/_compat.py``.

``python scripts/check_layout.py`` prints what it finds and exits 1 if anything breaks a rule;
``tests/test_layout.py`` runs the same checks.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "raygrid"
MAX_LINES = 500
# Libraries whose private names may be used only in raygrid/_compat.py.
GUARDED = ("sklearn", "scikeras", "keras", "tensorflow", "ray", "jax")


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of ``package`` by dotted name."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(node, name, path.name == "__init__.py")
            found += [(source, alias.name, node.lineno) for alias in node.names]
    return found


def long_modules(mods: dict[str, Path]) -> list[str]:
    out = []
    for path in mods.values():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            out.append(f"{_shown(path)}: {n} lines (at most {MAX_LINES})")
    return out


def _target(source: str, name: str | None, mods: dict[str, Path]) -> str | None:
    if name and f"{source}.{name}" in mods:
        return f"{source}.{name}"
    return source if source in mods else None


def cycles(mods: dict[str, Path]) -> list[str]:
    """Import cycles among raygrid's modules, counting every import (top level or in a function)
    and ignoring a package's import of its own submodules."""
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        for source, imported, _ in imports(name, path):
            target = _target(source, imported, mods)
            if target and target != name and not target.startswith(name + "."):
                graph[name].add(target)
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def private_imports(mods: dict[str, Path]) -> list[str]:
    """``from raygrid.x import _name`` in another module, and private names of other libraries
    (``from sklearn.utils._x import y``, ``from ray._private import z``) outside _compat.py."""
    out = []
    for name, path in mods.items():
        rel = _shown(path)
        for source, imported, line in imports(name, path):
            private_name = imported is not None and imported.startswith("_") and not imported.startswith("__")
            own = name.split(".")[0]
            if source.split(".")[0] == own and private_name and source != name:
                out.append(f"{rel}:{line}: imports {source}.{imported}")
            root = source.split(".")[0]
            if root in GUARDED and not name.endswith("._compat"):
                dotted = source.split(".") + ([imported] if imported else [])
                if any(p.startswith("_") and not p.startswith("__") for p in dotted):
                    out.append(f"{rel}:{line}: {'.'.join(dotted)} is private to {root}; "
                               f"reach it through raygrid/_compat.py")
    return out


def main() -> int:
    mods = modules()
    problems = long_modules(mods) + cycles(mods) + private_imports(mods)
    for p in problems:
        print(p)
    print(f"{len(mods)} modules, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
