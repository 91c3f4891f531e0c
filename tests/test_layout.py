"""The package's shape (scripts/check_layout.py): small modules, no import cycles, no private
names imported across modules, other libraries' private names only in raygrid/_compat.py.

Each rule is first shown to catch a planted case in a throwaway package, then held on raygrid.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def layout():
    spec = importlib.util.spec_from_file_location("check_layout", ROOT / "scripts" / "check_layout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = module
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_the_checks_find_what_they_look_for(layout, tmp_path):
    pkg = _package(tmp_path, {
        "a.py": "from pkg.b import helper\n",
        "b.py": "def helper():\n    from pkg import a\n",          # a cycle, in a function
        "c.py": "from pkg.a import _private\nfrom sklearn.utils._tags import x\n",
        "d.py": "x = 1\n" * (layout.MAX_LINES + 1),
        "_compat.py": "from sklearn.utils._tags import x\n",          # allowed here only
    })
    mods = layout.modules(pkg)
    assert set(mods) == {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg._compat"}
    assert [line.split(":")[0].endswith("d.py") for line in layout.long_modules(mods)] == [True]
    assert layout.cycles(mods) == ["pkg.a -> pkg.b -> pkg.a"]
    private = layout.private_imports(mods)
    assert len(private) == 2 and all("c.py" in line for line in private)
    assert any("pkg.a._private" in line for line in private)
    assert any("sklearn.utils._tags.x is private to sklearn" in line for line in private)


def test_no_module_is_over_the_limit(layout):
    assert layout.long_modules(layout.modules()) == []


def test_no_import_cycles(layout):
    assert layout.cycles(layout.modules()) == []


def test_no_private_names_imported_across_modules_or_from_other_libraries(layout):
    assert layout.private_imports(layout.modules()) == []
