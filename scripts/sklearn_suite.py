"""Run scikit-learn's own search and validation tests against raygrid (``make test-sklearn``).

scikit-learn ships its tests in its wheel. This script copies ``test_search.py``,
``test_successive_halving.py`` and ``test_validation.py`` from the installed scikit-learn into
``build/sklearn-suite/``, rewrites only their imports of the searches and of the
model_selection functions (``cross_validate``, ``cross_val_score``, ``cross_val_predict``,
``learning_curve``, ``validation_curve``, ``permutation_test_score``) so that they come from
raygrid, and runs them with pytest on one of raygrid's backends: ``--backend=ray``
(``RAYGRID_LOCAL_BUDGET_S=0``: every search on Ray, however small) or ``--backend=auto``, the
default users get (small searches in-process, larger ones on Ray). ``make test-sklearn`` runs
both. Nothing of scikit-learn is committed: the copies are made at run time.

A few tests cannot hold by design; they are listed, one reason each, in
``scripts/sklearn_suite_exceptions.txt`` and deselected. Every other test must pass.

    python scripts/sklearn_suite.py [--backend=auto|ray] [pytest options]
"""
from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path

import sklearn

FILES = ("test_search.py", "test_successive_halving.py", "test_validation.py")
#: The names raygrid provides in place of scikit-learn's.
RAYGRID_NAMES = ("GridSearchCV", "RandomizedSearchCV", "HalvingGridSearchCV",
                 "HalvingRandomSearchCV", "cross_validate", "cross_val_score",
                 "cross_val_predict", "learning_curve", "validation_curve",
                 "permutation_test_score")
ROOT = Path(__file__).resolve().parents[1]
EXCEPTIONS = ROOT / "scripts" / "sklearn_suite_exceptions.txt"
OUT = ROOT / "build" / "sklearn-suite"  # a folder per backend below it


def rewrite_imports(source: str) -> str:
    """``source`` with raygrid's names imported from raygrid instead of sklearn.model_selection.

    Only top-level ``from sklearn.model_selection import ...`` statements change; each one that
    names a raygrid class or function is split in two, scikit-learn's other names staying put.
    """
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.ImportFrom) and node.module == "sklearn.model_selection"):
            continue
        ours = [a for a in node.names if a.name in RAYGRID_NAMES]
        if not ours:
            continue
        theirs = [a for a in node.names if a.name not in RAYGRID_NAMES]
        new = []
        if theirs:
            new.append(ast.unparse(ast.ImportFrom("sklearn.model_selection", theirs, 0)) + "\n")
        new.append(ast.unparse(ast.ImportFrom("raygrid", ours, 0)) + "\n")
        edits.append((node.lineno - 1, node.end_lineno, new))
    for start, end, new in reversed(edits):
        lines[start:end] = new
    return "".join(lines)


def exceptions() -> dict[str, str]:
    """Test id -> why it cannot hold on raygrid, from the exceptions file."""
    out = {}
    for line in EXCEPTIONS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            test, _, reason = line.partition(" ")
            out[test] = reason.strip(" -")
    return out


def prepare(out: Path) -> list[Path]:
    tests = Path(sklearn.__file__).parent / "model_selection" / "tests"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copies = []
    for name in FILES:
        text = rewrite_imports((tests / name).read_text())
        if "from raygrid import" not in text:
            raise SystemExit(f"{name}: found no import of {RAYGRID_NAMES} to rewrite")
        (out / name).write_text(text)
        copies.append(out / name)
    return copies


BACKENDS = ("auto", "ray")


def backend_option(argv: list[str]) -> tuple[str, list[str]]:
    """``--backend=auto|ray`` (or ``--backend auto|ray``) out of ``argv``; default ``ray``."""
    rest, backend, it = [], "ray", iter(argv)
    for arg in it:
        if arg == "--backend":
            arg = "--backend=" + next(it, "")
        if arg.startswith("--backend="):
            backend = arg.split("=", 1)[1]
            if backend not in BACKENDS:
                raise SystemExit(f"--backend must be one of {BACKENDS}, got {backend!r}")
        else:
            rest.append(arg)
    return backend, rest


def main(argv: list[str]) -> int:
    import pytest

    backend, argv = backend_option(argv)
    out = OUT / backend
    copies = prepare(out)
    deselect = [f"--deselect={test}" for test in exceptions()]
    # scikit-learn's conftest (fixtures such as global_random_seed) loads as a plugin.
    args = [*(c.name for c in copies), "-p", "sklearn.conftest", "-p", "no:cacheprovider",
            f"--rootdir={out}", "-c", "/dev/null", "-q", "-ra", *deselect, *argv]
    print(f"scikit-learn {sklearn.__version__}'s tests against raygrid (backend={backend}): "
          f"{', '.join(FILES)}; "
          f"{len(deselect)} by-design exceptions deselected ({EXCEPTIONS.relative_to(ROOT)})",
          flush=True)
    os.chdir(out)  # test ids are then "test_search.py::...", as in the exceptions file
    if backend == "ray":  # every search on Ray, however small
        os.environ["RAYGRID_LOCAL_BUDGET_S"] = "0"
    else:  # the searches' own default: small ones in a local child process
        os.environ.pop("RAYGRID_LOCAL_BUDGET_S", None)
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
