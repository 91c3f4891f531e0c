"""Run the benchmarks, save JSON per benchmark, and write the Markdown tables into the README.

    python -m benchmarks.run --quick    # minutes: dispatch (2,000 fits), small local searches, the
                                        # seed grid's quick subset
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
#: Columns of an engines table, shown when at least one row has the value.
COLUMNS = [("wall_s", "wall (s)"), ("fits_per_s", "fits/s"), ("fit_seconds", "fit-seconds"),
           ("epochs_trained", "epochs trained"), ("cpu_util", "CPU util"),
           ("peak_driver_rss_mb", "driver peak RSS (MB)"), ("best_score", "best score")]
#: Measurements a benchmark recorded wrongly: left out of its table, with the reason as a note.
SUSPECT = {
    ("asha_full", "cpu_util"): "CPU util is left out: this run recorded 0.05, which its own "
                               "fit-seconds contradict (1,120 s of fitting in 948 s on 2 CPUs).",
}
_PARAM_ORDER = ("model__activation", "optimizer", "model__init", "batch_size", "epochs")


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
    return f"{bound} {a / b:.3g}×".lstrip()


def _value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _cells(row: dict, columns) -> list[str]:
    """The row's cells under ``columns``; a timed-out engine's wall time and fits/s as bounds."""
    cells = []
    for key, _ in columns:
        value = row.get(key)
        if row.get("timed_out") and key == "wall_s":
            value = f"> {row.get('limit_s', '?'):g} (timed out)"
        elif row.get("timed_out") and key == "fits_per_s" and row.get("fits_per_s_at_most"):
            value = f"< {row['fits_per_s_at_most']:.4g}"
        cells.append(_value(value))
    return cells


def _config(params: dict | None) -> str:
    """A best configuration in a few words: ``tanh, adam, normal, batch 8, 25 epochs``."""
    if not params:
        return ""
    words = []
    for key in sorted(params, key=lambda k: _PARAM_ORDER.index(k) if k in _PARAM_ORDER else 99):
        value = params[key]
        words.append(f"batch {value}" if key == "batch_size" else f"{value} epoch{'s' if value != 1 else ''}" if key == "epochs"
                     else str(value))
    return ", ".join(words)


def table(result: dict) -> str:
    """One Markdown table: a row per engine with the measured columns it has, the best
    configuration when recorded, and each engine's wall time as a multiple of raygrid's (or, where
    the result names a ``ratio_to`` row, that row's time as a multiple of each engine's: a
    speed-up; without a raygrid row, the first engine's). An engine that timed out shows its wall time and ratio as bounds."""
    name = result["benchmark"]
    engines = result["engines"]
    reference = result.get("ratio_to")
    ok = [row for row in engines.values() if "error" not in row]
    columns = [(key, title) for key, title in COLUMNS
               if (name, key) not in SUSPECT and any(row.get(key) is not None or
                                                    (key == "wall_s" and row.get("timed_out")) for row in ok)]
    with_config = any(row.get("best_params") for row in ok)
    ref_name = reference or ("raygrid" if "raygrid" in engines else next(iter(engines)))
    ratio_title = f"speed-up vs {reference}" if reference else f"wall ÷ {ref_name}'s"
    head = ["engine"] + [title for _, title in columns] + (["best configuration"] if with_config else [])
    head.append(ratio_title)
    lines = [f"**{name}** ({result['machine']['cpus']} CPUs)", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    ref_wall = _wall(engines.get(ref_name, {}))
    for engine, row in engines.items():
        if "error" in row:
            lines.append(f"| {engine} | failed: {str(row['error']).splitlines()[-1][:80]} |"
                         + " |" * (len(head) - 2))
            continue
        if engine == ref_name and ref_wall[0]:
            ratio = "1×"
        elif reference:
            ratio = _ratio(ref_wall, _wall(row))
        else:
            ratio = _ratio(_wall(row), ref_wall)
        config = [_config(row.get("best_params"))] if with_config else []
        lines.append(f"| {engine} | " + " | ".join(_cells(row, columns) + config) + f" | {ratio} |")
    notes = [result["note"]] if result.get("note") else []
    notes += [text for (bench, _), text in SUSPECT.items() if bench == name]
    if notes:
        lines += ["", " ".join(notes)]
    return "\n".join(lines)


def fused_table(result: dict) -> str:
    """The fused engine's runs: cold and warm compilation cache, where the time went."""
    load = result["machine"].get("load_avg_1m_at_start")
    lines = [f"**{result['benchmark']}, {result['backend']} backend** ({result['grid_fits']} fits, "
             f"{result['machine']['cpus']} CPUs" + (f", load average {load:.1f} at the start" if load else "")
             + ")", "",
             "| run | wall (s) | compile (s) | training (s) | best score |", "|---|---|---|---|---|"]
    for key, label in (("fused", "fused, empty compilation cache"),
                       ("fused_rerun_warm_cache", "fused, compilation cache filled")):
        run = result.get(key)
        if run:
            lines.append(f"| {label} | {run['wall_s']:.1f} | {run['compile_s']:.1f} | "
                         f"{run['training_s']:.1f} | {run['best_score']:.4f} |")
    return "\n".join(lines)


_GPU_ROWS = (("fused_serial_cold", 'raygrid `engine="fused"`, in the driver, empty compilation cache'),
             ("fused_serial_warm", 'raygrid `engine="fused"`, compilation cache filled'),
             ("fused_ray_cold", 'raygrid `engine="fused"`, its groups as Ray tasks sharing the GPU, empty cache'),
             ("raygrid_cpu", "raygrid, standard engine, one fit per CPU (JAX on CPU)"),
             ("sklearn", "scikit-learn GridSearchCV(n_jobs=16) (JAX on CPU)"))


def gpu_table(steps: list[dict]) -> str:
    """``scripts/gpu_check.py``'s JSON lines: the seed grid's engines on one GPU machine."""
    by_step = {s["step"]: s for s in steps}
    cpus = int(by_step.get("ray", {}).get("resources", {}).get("CPU", 0)) or "?"
    devices = ", ".join(by_step.get("ray", {}).get("jax_devices", []))
    sk = by_step.get("sklearn", {}).get("wall_s")
    lines = [f"**gpu_h200** (729 fits, {cpus} CPUs, {devices or 'GPU'}, Keras on JAX)", "",
             "| engine | wall (s) | best score | wall ÷ scikit-learn's |", "|---|---|---|---|"]
    for step, label in _GPU_ROWS:
        row = by_step.get(step)
        if row:
            ratio = f"{row['wall_s'] / sk:.3g}×" if sk else ""
            lines.append(f"| {label} | {row['wall_s']:.1f} | {row['best_score']:.4f} | {ratio} |")
    packing = by_step.get("packing")
    if packing:
        lines += ["", f"Packing: {packing['fits']} fits asking for {packing['gpu_per_fit'][0]:g} GPU each "
                      f"ran at most {packing['max_overlap']} at a time on the one GPU."]
    return "\n".join(lines)


def memory_table(result: dict) -> str:
    """``benchmarks.bench_memory``: the driver's memory and CPU at many trivial fits."""
    lines = [f"**memory** ({result['machine']['cpus']} CPUs, load average {result['machine']['load_avg_1m']} "
             "at the end)", "",
             "| search | fits | wall (s) | fits/s | driver CPU (s) | peak driver RSS (MB) |",
             "|---|---|---|---|---|---|"]
    for key, label in (("tenth_with_store", "a tenth of the fits, with the fit store"),
                       ("without_store", "no store"), ("with_store", "with the fit store"),
                       ("rerun_all_cached", "the same search again, every fit from the store")):
        row = result.get(key)
        if row:
            lines.append(f"| {label} | {row.get('fits', '')} | {_value(row.get('wall_s'))} | "
                         f"{_value(row.get('fits_per_s'))} | {_value(row.get('driver_cpu_s'))} | "
                         f"{_value(row.get('driver_rss_peak_mb'))} |")
    return "\n".join(lines)


def user_seed_table(result: dict) -> str:
    """``benchmarks.bench_user_seed``: the seed grid as users write it, raygrid and scikit-learn."""
    ours, theirs, scores = result["raygrid"], result["sklearn"], result["scores"]
    fused = ours["engines"].get("fused", 0)
    lines = [f"**user_seed_{result['subset']}** ({result['n_fits']} fits, {result['machine']['cpus']} "
             "CPUs; the model function in the user's script, stock scikeras, TensorFlow on the "
             "driver, default arguments)", "",
             "| search | process wall (s) | fit (s) | fits trained fused | best score | wall ÷ raygrid's |",
             "|---|---|---|---|---|---|",
             f"| raygrid `GridSearchCV(model, grid, cv=3)` | {_value(ours['wall_s'])} | "
             f"{_value(ours['fit_s'])} | {fused} of {result['n_fits']} | "
             f"{ours['best_score']:.4f} | 1× |",
             f"| scikit-learn `GridSearchCV(model, grid, cv=3, n_jobs={result['sklearn_n_jobs']})` | "
             f"{_value(theirs['wall_s'])} | {_value(theirs['fit_s'])} | | "
             f"{theirs['best_score']:.4f} | {result['speedup_wall']:.3g}× |", "",
             f"Candidate mean accuracies, raygrid against scikit-learn: {scores['mean_abs_diff']} "
             f"apart on average, {scores['share_within_0.03']:.0%} of candidates within 0.03 "
             f"(largest gap {scores['max_abs_diff']}); the two searches' fits start from "
             "different random weights."]
    return "\n".join(lines)


def local_table(result: dict) -> str:
    """``benchmarks.bench_local``: a small search on the default backend's local child process."""
    lines = [f"**local_start** ({result['searches']} searches of {result['fits_per_search']} SVC "
             f"fits per row, {result['machine']['cpus']} CPUs, one process)", "",
             "| where the fits run | first search (s) | each next search, median (s) | ÷ in-process |",
             "|---|---|---|---|"]
    for label, row in result["rows"].items():
        lines.append(f"| {label} | {_value(row['first_s'])} | {_value(row['median_next_s'])} | "
                     f"{row['vs_in_process']:.3g}× |")
    return "\n".join(lines)


def tables() -> str:
    """Every saved benchmark as one table, in file-name order."""
    parts = []
    paths = sorted([*RESULTS.glob("*.json"), *RESULTS.glob("*.jsonl")])
    for path in paths:
        if path.suffix == ".jsonl":
            parts.append(gpu_table([json.loads(line) for line in path.read_text().splitlines() if line.strip()]))
            continue
        result = json.loads(path.read_text())
        if "engines" in result:
            parts.append(table(result))
        elif "fused" in result:
            parts.append(fused_table(result))
        elif result.get("benchmark") == "memory":
            parts.append(memory_table(result))
        elif result.get("benchmark") == "user_seed":
            parts.append(user_seed_table(result))
        elif result.get("benchmark") == "local_start":
            parts.append(local_table(result))
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
    from benchmarks import bench_dispatch, bench_local, bench_scaling, bench_seed, bench_user_seed
    from benchmarks.common import save

    if not args.tables:
        save_run = lambda out: save(out["benchmark"], out)  # noqa: E731
        save_run(bench_dispatch.run(2000))
        bench_local.main([])
        if args.full:
            save_run(bench_dispatch.run(20000))
            save_run(bench_seed.run("full", save_as="seed_full"))
            save_run(bench_scaling.run())
            bench_user_seed.main(["--subset", "full"])
        else:
            save_run(bench_seed.run("quick"))
            bench_user_seed.main(["--subset", "quick"])
    write_tables()
    print(tables())


if __name__ == "__main__":
    main()
