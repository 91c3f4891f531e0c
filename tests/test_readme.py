"""Every code block of the README runs as written.

Python blocks are executed verbatim in a fresh namespace, in a temporary working directory, with
``raygrid.datasets.load_pima`` answering a stratified 96-row slice of the Pima data (the blocks
call it exactly as a user would). Shell blocks: every ``raygrid`` command runs through the CLI in
order (later lines read what earlier ones wrote); ``make`` targets are dry-run (``make -n``);
``pip install`` extras must exist in pyproject.toml; ``python examples/...`` command lines must
parse with the script's own argument parser.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang == "bash"]


def _commands(block: str) -> list[list[str]]:
    """The block's command lines, comments dropped, split as a shell would."""
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if shlex.split(line, comments=True)]


def test_the_readme_has_code_blocks():
    assert len(PYTHON) >= 4 and len(SHELL) >= 4
    assert {lang for lang, _ in BLOCKS} <= {"python", "bash"}, "a block in a language this test cannot run"


@pytest.fixture
def tiny_pima(pima_csv, monkeypatch):
    import raygrid.datasets

    X, y = raygrid.datasets.load_pima(pima_csv)
    rng = np.random.default_rng(0)
    rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 48, replace=False) for c in (0, 1)]))
    monkeypatch.setattr(raygrid.datasets, "load_pima", lambda *args, **kwargs: (X[rows], y[rows]))


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_block_runs_as_written(index, ray_local, tiny_pima, tmp_path, monkeypatch):
    code = PYTHON[index]
    if "keras" in code:
        pytest.importorskip("scikeras")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"readme_block_{index}"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if "save_search" in code:
        assert (tmp_path / "out" / "report.html").exists()
    if "search" in namespace:
        assert hasattr(namespace["search"], "best_params_")


def _typed_after_make_demo() -> list[str]:
    """The README's shell lines a new user types after ``make demo``, verbatim and in order: the
    rest of the first block (``make`` lines left out: ``make test`` is this suite) and every block
    of ``raygrid`` commands."""
    first = SHELL[0].splitlines()
    assert first[0].startswith("make demo"), first
    lines = [line for line in first[1:] if not line.startswith("make ")]
    for block in SHELL[1:]:
        if any(cmd[0] == "raygrid" for cmd in _commands(block)):
            lines += block.splitlines()
    return lines


def _fresh_clone(tmp_path: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) in a new folder, with ``.venv`` the
    virtual environment running this test, as ``make demo`` leaves a fresh clone."""
    import sys

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return clone


@pytest.mark.slow
def test_readme_commands_run_verbatim_after_make_demo(tmp_path):
    """In a shell that is not in the virtual environment (``raygrid`` is not on its PATH), the
    README's lines after ``make demo`` run as written, each ``raygrid check`` printing what its
    comment quotes."""
    import os

    lines = _typed_after_make_demo()
    assert sum(line.startswith("raygrid ") for line in lines) >= 6
    clone = _fresh_clone(tmp_path)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "LANG": "C.UTF-8", "COLUMNS": "100",
           "PYTHONPATH": str(clone),  # the clone's raygrid, whatever the shared venv installed
           "RAYGRID_LOCAL_BUDGET_S": "600",  # small searches stay in the process: no Ray here
           "RAY_USAGE_STATS_ENABLED": "0"}
    plain = subprocess.run(["bash", "-c", "raygrid --version"], cwd=clone, env=env,
                           capture_output=True, text=True)
    assert plain.returncode == 127, "raygrid is on the PATH before .venv is activated"
    script = "set -e\n" + "\n".join(lines) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{script}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    for line in lines:
        cmd = shlex.split(line, comments=True)
        if cmd[:2] == ["raygrid", "check"]:  # the comment quotes its output
            quoted = re.search(r'"(.+)"', line.partition("#")[2]).group(1)
            assert quoted in done.stdout, (line, done.stdout)
    assert (clone / "out" / "svc" / "report.html").exists()


def test_make_targets_exist():
    targets = [cmd[1] for block in SHELL for cmd in _commands(block) if cmd[0] == "make"]
    assert targets
    for target in targets:
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"


def test_pip_install_extras_exist():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    lines = [cmd for block in SHELL for cmd in _commands(block) if cmd[:2] == ["pip", "install"]]
    assert lines
    for cmd in lines:
        for arg in cmd[2:]:
            match = re.fullmatch(r"(?:-e\s*)?\.?\[([\w,]+)\]", arg)
            if match:
                assert set(match.group(1).split(",")) <= extras, arg


def test_example_command_lines_parse():
    lines = [cmd for block in SHELL for cmd in _commands(block) if cmd[0] == "python"]
    assert lines
    for cmd in lines:
        script = ROOT / cmd[1]
        spec = importlib.util.spec_from_file_location(script.stem, script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_parser().parse_args(cmd[2:])


# ----------------------------------------------------------------------------- figures
START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
#: Durations in the README's prose that are behaviour, not measurements.
NOT_MEASURED = {"10 s", "0.2 s", "30 s"}  # SIGTERM's grace, the store's commit interval, the connect deadline


def test_benchmark_tables_are_generated_from_the_saved_json():
    from benchmarks.run import tables

    block = README[README.index(START) + len(START):README.index(END)].strip()
    assert block == tables().strip(), "rerun `python -m benchmarks.run --tables`"


def test_every_figure_in_the_text_is_in_a_table():
    """Wall times and ratios quoted in the prose are cells of the generated tables, so the text
    cannot drift from the measurements."""
    tables = README[README.index(START):README.index(END)]
    prose = README[:README.index(START)] + README[README.index(END):]
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)
    figures = re.findall(r"(\d[\d,]*(?:\.\d+)?) ?(s|×)(?!\w)", prose)
    assert len(figures) >= 10
    missing = [f"{n} {u}" for n, u in figures if f"{n} {u}" not in NOT_MEASURED
               and not re.search(r"(?<![\d.,])" + re.escape(n) + r"(?![\d])", tables)]
    assert not missing, f"figures in the README's text that no table holds: {missing}"
