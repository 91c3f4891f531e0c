"""Run the benchmarks, save JSON per benchmark, and write the Markdown tables into the README.

    python -m benchmarks.run --quick    # minutes: dispatch (2,000 fits), the seed grid's quick subset
    python -m benchmarks.run --full     # long: also 20,000 fits, the whole seed grid, scaling
    python -m benchmarks.run --tables   # only rebuild the tables from saved JSON

Each dispatch engine runs in a process of its own with 300 s for its measured search (scikit-learn's
loky backend stalls at 20,000 fits here); one that does not finish in time is a "timed out" row.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks.common import RESULTS

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [("wall_s", "wall (s)"), ("fits_per_s", "fits/s"), ("cpu_util", "CPU util"),
           ("peak_driver_rss_mb", "driver peak RSS (MB)"), ("best_score", "best score")]


def _wall(row: dict) -> tuple[float | None, str]:
    """An engine's wall time and how it is known: exactly (``""``), or only from below (``">"``:
    it timed out, stopped at its limit)."""
    if row.get("timed_out"):
        return row.get("limit_s"), ">"
    return row.get("wall_s"), ""


def _ratio(num: tuple[float | None, str], den: tuple[float | None, str]) -> str:
    """``num / den`` as ``"1.23×"``, ``"> 1.23×"`` (num a lower bound) or ``"< 1.23×"`` (den a
    lower bound); empty when either is missing or both are bounds."""
    (a, a_bound), (b, b_bound) = num, den
    if not (a and b) or (a_bound and b_bound):
        return ""
    bound = ">" if a_bound else "<" if b_bound else ""
    return f"{bound} {a / b:.2f}×".lstrip()


def _cells(row: dict) -> list[str]:
    """The row's cells under COLUMNS; a timed-out engine's wall time and fits/s as bounds."""
    cells = []
    for key, _ in COLUMNS:
        value = row.get(key)
        if row.get("timed_out") and key == "wall_s":
            value = f"> {row.get('limit_s', '?'):g} (timed out)"
        elif row.get("timed_out") and key == "fits_per_s" and row.get("fits_per_s_at_most"):
            value = f"< {row['fits_per_s_at_most']:.4g}"
        cells.append("" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value)))
    return cells


def table(result: dict) -> str:
    """One Markdown table: a row per engine, then the ratio of raygrid's throughput to each
    (or, where the result names a ``ratio_to`` row, each row's speed-up over that one). An engine
    that timed out shows its wall time and ratio as bounds (``> 300 (timed out)``)."""
    engines = result["engines"]
    reference = result.get("ratio_to")
    title = f"speed-up vs {reference}" if reference else "raygrid speed-up"
    lines = [f"**{result['benchmark']}** ({result['machine']['cpus']} CPUs)", "",
             "| engine | " + " | ".join(title for _, title in COLUMNS) + f" | {title} |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    ref_name = reference or "raygrid"
    ref_wall = _wall(engines.get(ref_name, {}))
    for name, row in engines.items():
        if "error" in row:
            lines.append(f"| {name} | failed: {str(row['error']).splitlines()[-1][:80]} |"
                         + " |" * len(COLUMNS))
            continue
        if name == ref_name and ref_wall[0]:
            ratio = "1.00×"
        elif reference:
            ratio = _ratio(ref_wall, _wall(row))
        else:
            ratio = _ratio(_wall(row), ref_wall)
        lines.append(f"| {name} | " + " | ".join(_cells(row)) + f" | {ratio} |")
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines)


def fused_table(result: dict) -> str:
    """The fused engine's runs beside scikit-learn's (extrapolated from a subset in the same run)."""
    lines = [f"**{result['benchmark']}** ({result['grid_fits']} fits, {result['machine']['cpus']} CPUs, "
             f"fused groups on the {result['backend']} backend)", "",
             "| run | wall (s) | compile (s) | training (s) | best score | speed-up vs sklearn n_jobs=-1 |",
             "|---|---|---|---|---|---|"]
    sk = result.get("sklearn_n_jobs_-1")
    for key, label in (("fused", "fused, empty compilation cache"),
                       ("fused_rerun_warm_cache", "fused, compilation cache filled")):
        run = result.get(key)
        if run:
            ratio = f"{sk['extrapolated_full_s'] / run['wall_s']:.0f}×" if sk else ""
            lines.append(f"| {label} | {run['wall_s']:.1f} | {run['compile_s']:.1f} | "
                         f"{run['training_s']:.1f} | {run['best_score']:.4f} | {ratio} |")
    if sk:
        lines.append(f"| sklearn GridSearchCV n_jobs=-1 ({sk['keras_backend']}; {sk['fits']} fits "
                     f"timed, ×{result['grid_fits'] // sk['fits']}) | {sk['extrapolated_full_s']:.0f} | | | | 1× |")
    return "\n".join(lines)


def tables() -> str:
    parts = []
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        if "engines" in result:
            parts.append(table(result))
        elif "fused" in result:
            parts.append(fused_table(result))
    return "\n\n".join(parts)


def write_tables() -> None:
    md = tables()
    (RESULTS / "README.md").write_text("# Benchmark results\n\nGenerated by `python -m benchmarks.run`.\n\n" + md + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = ("<!-- benchmarks:start -->\n" + md + "\n<!-- benchmarks:end -->")
    if "<!-- benchmarks:start -->" in text:
        text = re.sub(r"<!-- benchmarks:start -->.*?<!-- benchmarks:end -->", lambda _: block, text,
                      flags=re.S)
        readme.write_text(text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    mode.add_argument("--tables", action="store_true")
    args = ap.parse_args(argv)
    from benchmarks import bench_dispatch, bench_scaling, bench_seed
    from benchmarks.common import save

    if not args.tables:
        save_run = lambda out: save(out["benchmark"], out)  # noqa: E731
        save_run(bench_dispatch.run(2000))
        if args.full:
            save_run(bench_dispatch.run(20000))
            save_run(bench_seed.run("full", save_as="seed_full"))
            save_run(bench_scaling.run())
        else:
            save_run(bench_seed.run("quick"))
    write_tables()
    print(tables())


if __name__ == "__main__":
    main()
