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


def test_raygrid_commands_run_in_order(ray_local, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from raygrid.cli.main import main

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    lines = [cmd for block in SHELL for cmd in _commands(block) if cmd[0] == "raygrid"]
    assert len(lines) >= 6
    for cmd in lines:
        result = CliRunner().invoke(main, cmd[1:])
        assert result.exit_code == 0, f"{shlex.join(cmd)}:\n{result.output}"
        if cmd[1] == "check":  # the block's comment quotes its output
            comment = next(line for block in SHELL for line in block.splitlines() if shlex.join(cmd) in line)
            quoted = re.search(r'"(.+)"', comment.partition("#")[2]).group(1)
            assert quoted in result.output, result.output


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
