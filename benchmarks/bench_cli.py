"""How fast the ``raygrid`` command answers what needs no search: ``--help``, ``--version`` and
``check`` of a bad spec, each a fresh process, against a bare Python start in the same run.

    python -m benchmarks.bench_cli              # 7 runs of each, prints and saves results/cli.json
    python -m benchmarks.bench_cli --runs 3

Rows (min and median wall seconds of ``--runs`` fresh processes):

- ``python -c pass``: the interpreter alone, the floor every command pays;
- ``raygrid --help``, ``raygrid --version``;
- ``raygrid check`` of a spec that is not valid YAML (answered before anything is imported);
- ``raygrid check`` of a spec with a misspelt key whose estimator is ``sklearn.svm:SVC`` on the
  bundled breast-cancer data: checking it imports scikit-learn and loads the data (every problem
  is reported at once, the estimator's too), so that import is part of its time;
- ``import raygrid.search.grid``: what the command used to import before doing anything (for
  comparison).

The command runs as ``python -m raygrid.cli`` with the checkout first on ``PYTHONPATH``, so the
numbers are this checkout's; the console script (``.venv/bin/raygrid``) runs the same code.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, save

ROOT = Path(__file__).resolve().parents[1]

BAD_YAML = "data: {name: breast_cancer\nestimator: [\n"
BAD_KEY = ('data: {name: breast_cancer}\nestimator: {import: "sklearn.svm:SVC"}\n'
           "search: {kind: grid, grid: {C: [1, 10]}}\ncvv: 3\n")


def _time(argv: list[str], runs: int, expect: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
        if proc.returncode != expect:
            raise RuntimeError(f"{argv} exited {proc.returncode} (expected {expect}):\n{proc.stderr[-2000:]}")
    return {"min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3)}


def run(runs: int = 7) -> dict:
    py = sys.executable
    cli = [py, "-m", "raygrid.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        bad_yaml, bad_key = Path(tmp, "bad_yaml.yaml"), Path(tmp, "bad_key.yaml")
        bad_yaml.write_text(BAD_YAML)
        bad_key.write_text(BAD_KEY)
        rows = {
            "python -c pass": _time([py, "-c", "pass"], runs, 0),
            "raygrid --help": _time(cli + ["--help"], runs, 0),
            "raygrid --version": _time(cli + ["--version"], runs, 0),
            "raygrid check (not YAML)": _time(cli + ["check", str(bad_yaml)], runs, 2),
            "raygrid check (misspelt key, SVC on breast cancer)": _time(cli + ["check", str(bad_key)], runs, 2),
            "import raygrid.search.grid": _time([py, "-c", "import raygrid.search.grid"], runs, 0),
        }
    floor = rows["python -c pass"]["median_s"]
    for row in rows.values():
        row["median_minus_python_s"] = round(row["median_s"] - floor, 3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"name": "cli", "runs": runs, "rows": rows, "machine": machine(),
            "python": platform.python_version(), "load_average": load}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    result = run(args.runs)
    width = max(len(k) for k in result["rows"])
    for name, row in result["rows"].items():
        print(f"{name:<{width}}  min {row['min_s']:.3f} s  median {row['median_s']:.3f} s  "
              f"(+{row['median_minus_python_s']:.3f} s over python)")
    print(f"load average at the end: {result['load_average']}")
    print(f"saved {save('cli', result)}")


if __name__ == "__main__":
    main()
