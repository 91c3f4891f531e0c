"""Run scikit-learn's own search and validation tests against raygrid (``make test-sklearn``).

scikit-learn ships its tests in its wheel. This script copies ``test_search.py``,
``test_successive_halving.py`` and ``test_validation.py`` from the installed scikit-learn into
``build/sklearn-suite/``, rewrites only their imports of the searches and of the
model_selection functions (``cross_validate``, ``cross_val_score``, ``cross_val_predict``,
``learning_curve``, ``validation_curve``, ``permutation_test_score``) so that they come from
raygrid, and runs them with pytest on raygrid's Ray backend (``RAYGRID_LOCAL_BUDGET_S=0``: no search runs in-process). Nothing of scikit-learn is
committed: the copies are made at run time.

A few tests cannot hold by design; they are listed, one reason each, in
``scripts/sklearn_suite_exceptions.txt`` and deselected. Every other test must pass.

    python scripts/sklearn_suite.py [pytest options]
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
OUT = ROOT / "build" / "sklearn-suite"


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


def prepare() -> list[Path]:
    tests = Path(sklearn.__file__).parent / "model_selection" / "tests"
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    copies = []
    for name in FILES:
        text = rewrite_imports((tests / name).read_text())
        if "from raygrid import" not in text:
            raise SystemExit(f"{name}: found no import of {RAYGRID_NAMES} to rewrite")
        (OUT / name).write_text(text)
        copies.append(OUT / name)
    return copies


def main(argv: list[str]) -> int:
    import pytest

    copies = prepare()
    deselect = [f"--deselect={test}" for test in exceptions()]
    # scikit-learn's conftest (fixtures such as global_random_seed) loads as a plugin.
    args = [*(c.name for c in copies), "-p", "sklearn.conftest", "-p", "no:cacheprovider",
            f"--rootdir={OUT}", "-c", "/dev/null", "-q", "-ra", *deselect, *argv]
    print(f"scikit-learn {sklearn.__version__}'s tests against raygrid: {', '.join(FILES)}; "
          f"{len(deselect)} by-design exceptions deselected ({EXCEPTIONS.relative_to(ROOT)})",
          flush=True)
    os.chdir(OUT)  # test ids are then "test_search.py::...", as in the exceptions file
    # Every search on Ray, however small (backend="auto" would run small ones in-process).
    os.environ["RAYGRID_LOCAL_BUDGET_S"] = "0"
    return int(pytest.main(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
