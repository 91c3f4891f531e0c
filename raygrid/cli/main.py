"""The ``raygrid`` command: run a search spec, rebuild or show its report, run the demo.

    raygrid run SPEC.yaml [--set KEY=VALUE ...] [--out DIR] [--backend auto|ray|serial] [--address ADDR]
                [--fit-timeout SECONDS] [-v]
    raygrid check SPEC.yaml [--set KEY=VALUE ...]      check a spec without running it
    raygrid show DIR [--top N]                         the ranked candidates of a finished run
    raygrid report DIR                                 rebuild report.html and the plots from DIR
    raygrid demo [--out DIR] [--backend auto|ray|serial]  a small SVC grid on breast-cancer data
    raygrid status DIR                                 what the fit store in DIR holds
    raygrid init [SPEC.yaml] [--force]                 write a commented starter spec

Exit codes: 0 done; 1 the search or a command failed; 2 a bad spec or bad usage (nothing was
run or written).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

# Only click here: each command imports what it needs (the spec checker, scikit-learn, pandas,
# Ray), so `raygrid --help` and `--version` answer at once.

BAD_SPEC = 2


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=max(console.width, 140))
    return console


#: Checking a spec imports and calls its ``module:callable`` names: a spec is code.
TRUSTED_CODE = ("A spec is code: checking it imported and called its module:callable names, so "
                "check and run only specs you trust.")
NOTHING_RUN = "No search was run and no file was written."
#: What an interrupted `raygrid run` or `raygrid demo` says on how to go on.
RESUME = "Run the same command again to resume: only the missing fits will run."


def _fail_spec(exc) -> None:
    click.echo(f"Error: {exc.describe()}", err=True)
    click.echo(f"{NOTHING_RUN} {TRUSTED_CODE}", err=True)
    sys.exit(BAD_SPEC)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    return "—" if value is None else str(value)


def print_results(summary, best: dict, out_dir: Path | None, top: int, console=None) -> None:
    """The ranked table of the ``top`` candidates, the best configuration and where the report is."""
    from rich.table import Table

    from raygrid.outputs.formatting import training_lines
    from raygrid.outputs.terminal import rich_table, terminal_text as t

    console = console or _console()
    metric, scoring = best.get("metric") or "score", best.get("scoring")
    label = scoring if metric == "score" and isinstance(scoring, str) else metric  # one name, as the report
    console.print(rich_table(summary, best.get("metric"), top=top, label=label))
    table = Table(title="best configuration", show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for name, value in (best.get("params") or {}).items():
        table.add_row(t(name), t(repr(value) if isinstance(value, str) else _fmt(value)))
    score = best.get("mean_score")
    if score is not None:
        std = best.get("std_score")
        table.add_row(t(f"mean test {label}"), f"{score:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    table.add_row("candidate", _fmt(best.get("candidate")))
    for key, label in (("n_candidates", "candidates"), ("n_fits", "fits")):
        if best.get(key) is not None:
            table.add_row(label, _fmt(best[key]))
    for key, label in (("wall_time", "wall time"), ("refit_time", "refit time")):
        if best.get(key) is not None:
            table.add_row(label, f"{best[key]:.2f} s")
    for label, text in training_lines(best.get("training")):  # a Keras search: how fits trained
        table.add_row(t(label), t(text))
    console.print(table)
    if out_dir is not None:
        report = Path(out_dir) / "report.html"
        console.print(t(f"results: {out_dir}"))
        if report.exists():
            console.print(t(f"report: {report}"))


class _Overrides(click.ParamType):
    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        if "=" not in value or not value.partition("=")[0].strip():
            self.fail(f"expected KEY=VALUE (e.g. search.grid.C=[0.1,1]), got {value!r}", param, ctx)
        return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raygrid", prog_name="raygrid")
def main() -> None:
    """Ray-backed grid and randomized hyperparameter searches for scikit-learn and Keras."""


_set_option = click.option(
    "--set", "overrides", multiple=True, type=_Overrides(), metavar="KEY=VALUE",
    help="Override a spec value, e.g. --set search.grid.C=[0.1,1] (value parsed as YAML; repeatable).")


def _finish_run(search, out_dir: Path, top: int) -> None:
    from raygrid.cli.api import best_config

    print_results(search.summary_, best_config(search), out_dir, top)


def _run(spec_or_path, *, overrides=(), out=None, address=None, backend=None, verbose=0, quiet=False,
         top=10, force=False, fit_timeout=None) -> None:
    from raygrid.cli.api import OutputDirError, check_spec, run_spec
    from raygrid.cli.spec import SpecError
    from raygrid.engine.store import resume_advice
    from raygrid.keras.quiet import native_noise_filtered

    try:
        with native_noise_filtered():  # the spec's imports (TensorFlow) without their chatter
            prepared = check_spec(spec_or_path, overrides=overrides, out=out)
        with resume_advice(RESUME):
            search, out_dir = run_spec(prepared, out=out, address=address,
                                       backend=backend, verbose=0 if quiet else 1 + verbose,
                                       force=force, fit_timeout=fit_timeout)
    except SpecError as exc:
        _fail_spec(exc)
    except OutputDirError as exc:
        click.echo(f"Error: {exc}", err=True)
        click.echo(NOTHING_RUN, err=True)
        sys.exit(BAD_SPEC)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the search failed: say why, exit 1
        if verbose:
            raise
        raise click.ClickException(f"the search failed: {type(exc).__name__}: {exc}\n"
                                   "(run with -v for the traceback)") from None
    _finish_run(search, out_dir, top)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: the spec's `out`, else raygrid-out/<spec name>).")
@click.option("--backend", type=click.Choice(["auto", "ray", "serial"]),
              help="Where fits run (default: the spec's `backend`, else auto: in this process "
                   "while the search is shorter than starting Ray, else Ray).")
@click.option("--address", metavar="ADDR",
              help="Ray cluster to join: auto, host:6379 or ray://host:10001 (default: RAY_ADDRESS, "
                   "else a local Ray).")
@click.option("--fit-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop a fit that runs longer (its worker or process killed): a failed fit "
                   "with the reason; error_score applies.")
@click.option("-v", "--verbose", count=True, help="-v: one line per fit; also show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="No live progress display.")
@click.option("--top", default=10, show_default=True, help="Candidates in the final table.")
@click.option("--force", is_flag=True,
              help="Write into --out even when it holds files that are not a raygrid run's.")
def run(spec, overrides, out, backend, address, fit_timeout, verbose, quiet, top, force):
    """Check SPEC (a YAML file), run its search and write results and report.html.

    \b
    Outputs in the output directory: results.parquet / results.csv (one row per fit),
    summary.csv (one row per candidate, best first), best.json, PNG plots, report.html,
    and spec.yaml (the spec as run, after --set).
    A bad spec is answered with every problem and its key path, exit code 2, and nothing written;
    so is an --out that holds files that are not a raygrid run's (unless --force).

    \b
    Parameter names in the spec's search are the estimator's own. With preprocessing
    (standard, minmax) the estimator is step "model" of Pipeline([("scaler", ...), ("model", ...)])
    and the names get the "model__" prefix in the results; names already written for the
    pipeline (model__C, scaler__feature_range) are accepted as they are.
    """
    _run(spec, overrides=overrides, out=out, address=address, backend=backend, verbose=verbose,
         quiet=quiet, top=top, force=force, fit_timeout=fit_timeout)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
def check(spec, overrides):
    """Check SPEC completely (schema, data, estimator, parameter names) without running it.

    Checking imports and calls the spec's module:callable names (the estimator, scorers, cv):
    a spec is code, to be checked only when trusted."""
    from raygrid.cli.api import check_spec
    from raygrid.cli.spec import SpecError
    from raygrid.keras.quiet import native_noise_filtered

    try:
        with native_noise_filtered():  # the spec's imports (TensorFlow) without their chatter
            prepared = check_spec(spec, overrides=overrides)
    except SpecError as exc:
        _fail_spec(exc)
    n_splits = _n_splits(prepared)
    n = prepared.n_candidates if prepared.kind == "grid" else prepared.search_kwargs["n_iter"]
    fits = f" = {n * n_splits} fits" if n_splits else ""
    click.echo(f"{spec}: OK, {prepared.kind} search, {n} candidates x {n_splits or '?'} folds{fits}")
    click.echo(f"No search was run. {TRUSTED_CODE}")


def _n_splits(prepared) -> int | None:
    cv = prepared.search_kwargs["cv"]
    if isinstance(cv, int):
        return cv
    return getattr(cv, "n_splits", None)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--top", default=10, show_default=True, help="Candidates to show.")
def show(directory, top):
    """Print the ranked candidates and the best configuration saved in DIRECTORY."""
    from raygrid.outputs.report import load_outputs

    try:
        results, summary, best = load_outputs(directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    print_results(summary, best, directory, top)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--title", help="Page title (default: the title of the run's spec.yaml).")
@click.option("--top", default=20, show_default=True, help="Candidates in the report's table.")
def report(directory, title, top):
    """Rebuild report.html and the plots in DIRECTORY from its saved results."""
    from raygrid.outputs.report import load_outputs, write_report

    try:
        results, summary, best = load_outputs(directory)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    path = write_report(results, summary, best, directory, title=title or _saved_title(directory),
                        top=top)
    click.echo(f"report: {path}")


def _saved_title(directory: Path) -> str:
    from raygrid.cli.api import SPEC_FILE

    path = Path(directory) / SPEC_FILE
    if path.exists():
        import yaml

        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("title"), str):
            return raw["title"]
    return f"raygrid search ({Path(directory).name})"


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("raygrid-out") / "demo", show_default=True, help="Output directory.")
@click.option("--backend", type=click.Choice(["auto", "ray", "serial"]), default="auto", show_default=True)
@click.option("--address", metavar="ADDR", help="Ray cluster to join (default: a local Ray).")
@click.option("-q", "--quiet", is_flag=True, help="No live progress display.")
@click.option("--force", is_flag=True,
              help="Write into --out even when it holds files that are not a raygrid run's.")
def demo(out, backend, address, quiet, force):
    """Run a small SVC grid (34 candidates x 3 folds) on scikit-learn's breast-cancer data and
    write the same outputs as `raygrid run`."""
    from raygrid.cli.api import DEMO_SPEC

    _run(DEMO_SPEC, out=out, backend=backend, address=address, quiet=quiet, force=force)


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default=Path("spec.yaml"),
                required=False)
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def init(path, force):
    """Write a commented starter spec to PATH (default: spec.yaml) that runs as it is."""
    from raygrid.cli.spec import STARTER_SPEC

    if path.exists() and not force:
        raise click.ClickException(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER_SPEC.format(path=path), encoding="utf-8")
    click.echo(f"wrote {path}: check it with `raygrid check {path}`, run it with `raygrid run {path}`")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(directory, as_json):
    """What the fit store in DIRECTORY holds: fits done, failed and missing, per search.

    A run's output directory holds its store when the search takes `storage` (then an
    interrupted `raygrid run` resumes where it stopped when run again with the same --out).
    """
    import json

    from raygrid.cli.status import format_status, status as store_status
    from raygrid.engine.store import StoreError

    try:
        info = store_status(directory)
    except (StoreError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    lines = [line for line in format_status(info).splitlines() if not line.startswith("Resume:")]
    if any(not s["complete"] for s in info["searches"]):
        lines.append(_resume_advice(Path(directory)))
    elif not info["searches"]:
        lines.append("No search has been recorded here: nothing to resume.")
    click.echo("\n".join(lines))


def _resume_advice(directory: Path) -> str:
    """How to finish the fits a run directory's store is missing, in the CLI's words."""
    from raygrid.cli.api import SPEC_FILE

    spec = directory / SPEC_FILE
    if spec.exists():
        return (f"Resume: raygrid run {spec} --out {directory} (runs only the missing fits; "
                "with --address, once the cluster answers).")
    return (f"Resume: run the same `raygrid run SPEC --out {directory}` again (runs only the missing "
            f"fits); from Python, the same search with storage={str(directory)!r}.")


if __name__ == "__main__":  # pragma: no cover
    main()
