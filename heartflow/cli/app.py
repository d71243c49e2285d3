"""The `heartflow` command: a thin layer over :mod:`heartflow.api`.

Heavy libraries (TensorFlow, MLflow, Prefect) load lazily, inside the commands that
need them, so `--help` and `validate` answer at once."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from heartflow.errors import HeartflowError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative neural networks for tabular data: YAML spec -> Keras model "
                       "-> Prefect flow -> MLflow tracking and registry.")

def _err(message: str) -> None:
    sys.stderr.write(f"heartflow: error: {message}\n")


def handles_errors(fn: Callable) -> Callable:
    """Turn heartflow's own errors and interrupts into a message and an exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from heartflow.runtime.quiet_import import apply_quiet_defaults

        apply_quiet_defaults()
        try:
            return fn(*args, **kwargs)
        except HeartflowError as exc:
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted (Ctrl-C); the MLflow run was marked KILLED, nothing registered")
            raise typer.Exit(130) from None
        except BaseException as exc:
            from heartflow.tracking.recorder import is_interrupt
            from heartflow.tracking.retries import is_transient
            from heartflow.tracking.store import redact, tracking_uri

            if isinstance(exc, Exception) and is_transient(exc):
                _err(f"the tracking store at {redact(tracking_uri())} stopped answering after "
                     f"retries ({type(exc).__name__}); the run could not finish and nothing "
                     "was registered. Check the server, then retry")
                raise typer.Exit(4) from None
            if is_interrupt(exc) and not isinstance(exc, (SystemExit, typer.Exit)):
                _err("terminated (SIGTERM); the MLflow run was marked KILLED, nothing registered")
                raise typer.Exit(143) from None
            raise

    return wrapper


def _on_sigterm(signum: int, frame: Any) -> None:
    from heartflow.errors import Interrupted

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Interrupted()


def _is_sweep(path: str) -> bool:
    """A sweep file's first key is `sweep:` (cheap check before full validation)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                stripped = line.strip()
                if stripped and not stripped.startswith("#"):
                    return stripped.startswith("sweep:")
    except OSError:
        return False
    return False


SpecArg = Annotated[str, typer.Argument(help="Path to a heartflow YAML spec.")]
PluginOpt = Annotated[list[str] | None, typer.Option(
    "--plugin", help="Import this module first (opt-in custom activations). Repeatable.")]


@app.command()
@handles_errors
def validate(spec: SpecArg, plugin: PluginOpt = None) -> None:
    """Check a spec or a sweep file without running anything (no TensorFlow import)."""
    from heartflow import api

    if _is_sweep(spec):
        sweep_spec = api.load_sweep(spec, plugins=plugin)
        typer.echo(f"{spec}: valid sweep ({len(sweep_spec.trials)} trials of "
                   f"{sweep_spec.base.spec.name}, ranked by {sweep_spec.metric})")
        return
    s = api.load_spec(spec, plugins=plugin).spec
    layers = " -> ".join([*(str(h.units) for h in s.model.hidden),
                          f"{s.model.output.units} {s.model.output.activation}"])
    typer.echo(f"{spec}: valid ({s.name}: {s.task}, layers {layers}, loss {s.train.loss}, "
               f"optimizer {s.train.optimizer.name})")


@app.command()
@handles_errors
def show(spec: SpecArg, plugin: PluginOpt = None) -> None:
    """The layer table: input width (reads the data for the categories) and parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from heartflow import api
    from heartflow.data.prepare import prepare
    from heartflow.model.builder import count_parameters, layer_table

    loaded = api.load_spec(spec, plugins=plugin)
    prepared = prepare(loaded)
    width = prepared.width
    table = Table(title=f"{loaded.spec.name}: {width} inputs, "
                        f"{count_parameters(loaded.spec, width)} parameters")
    for column in ("layer", "units", "activation", "initializer", "params"):
        table.add_column(column, justify="right" if column in ("units", "params") else "left")
    for row in layer_table(loaded.spec, width):
        table.add_row(*(str(row[c]) for c in ("layer", "units", "activation", "initializer",
                                               "params")))
    console = Console()
    console.print(table)
    enc = prepared.encoder
    console.print(f"inputs: {len(enc.numeric)} numeric + "
                  + " + ".join(f"{c}({len(enc.levels[c])})" for c in enc.categorical)
                  + f" one-hot = {width}")
    console.print(f"total parameters: {count_parameters(loaded.spec, width)}")


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of the spec (for editors)."""
    from heartflow.spec.schema import Spec

    typer.echo(json.dumps(Spec.model_json_schema(by_alias=True), indent=2))


@app.command()
@handles_errors
def run(spec: SpecArg, plugin: PluginOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch lines.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]
        = False) -> None:
    """Validate SPEC, then run preprocess -> train -> evaluate -> register as a Prefect flow."""
    from heartflow import api

    loaded = api.load_spec(spec, plugins=plugin)  # fail fast: nothing starts for a bad spec
    signal.signal(signal.SIGTERM, _on_sigterm)
    outcome = api.run(loaded, verbose=not quiet)
    if json_out:
        typer.echo(json.dumps(outcome.as_dict(), indent=1, default=str))
    else:
        from heartflow.cli.console import print_outcome

        print_outcome(outcome)
    if outcome.undecided:  # the run is recorded; the registry refused to judge it
        _err(f"promotion gate: {outcome.decision}")
        raise typer.Exit(5)


@app.command()
@handles_errors
def sweep(spec: Annotated[str, typer.Argument(help="A sweep file (sweep: base, axes, ...).")],
          workers: Annotated[int | None, typer.Option(
              help="Worker processes (default: the sweep's, else CPU count).")] = None,
          plugin: PluginOpt = None,
          pool: Annotated[str | None, typer.Option(
              help="Send each trial to this Prefect work pool's workers (any machines) "
                   "instead of local processes.")] = None,
          json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Run every trial of a sweep in parallel worker processes (MLflow child runs)."""
    from heartflow import api

    sweep_spec = api.load_sweep(spec, plugins=plugin)  # validates every trial first
    signal.signal(signal.SIGTERM, _on_sigterm)
    where = f"work pool {pool}" if pool else f"{workers or sweep_spec.workers} workers"
    typer.echo(f"sweep {sweep_spec.name}: {len(sweep_spec.trials)} trials, {where}", err=True)
    result = api.sweep(spec, workers=workers, plugins=plugin, progress=True, pool=pool)
    if json_out:
        typer.echo(json.dumps({"parent_run_id": result.parent_run_id,
                               "experiment_id": result.experiment_id, "metric": result.metric,
                               "wall_seconds": result.wall_seconds, "workers": result.workers,
                               "choice": result.choice, "trials": result.trials}, indent=1,
                              default=str))
        return
    typer.echo(result.table())
    typer.echo(result.choice.get("summary", ""))
    for trial in result.trials:
        if not trial["ok"]:
            typer.echo(f"trial {trial['number']} failed: {trial['error']}", err=True)
    typer.echo(f"parent run {result.parent_run_id}  ({result.wall_seconds:.1f} s with "
               f"{result.workers} workers); compare again: heartflow compare "
               f"{result.parent_run_id}")


@app.command()
@handles_errors
def compare(target: Annotated[str, typer.Argument(
                help="An experiment name, or a sweep's parent run id.")],
            metric: Annotated[str | None, typer.Option(help="Rank by this metric.")] = None,
            fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")]
            = "table") -> None:
    """Ranked table of runs: varied parameters, metrics (± CV), parameters, epochs, time."""
    from heartflow import api

    if fmt not in ("table", "csv", "json"):
        raise HeartflowError(f"--format must be table, csv or json, not {fmt!r}")
    typer.echo(api.compare(target, metric).table(fmt), nl=fmt == "table")


@app.command()
@handles_errors
def predict(model_uri: Annotated[str, typer.Argument(help="e.g. models:/heart-disease@champion")],
            input_csv: Annotated[str, typer.Argument(help="CSV of raw records.")],
            output: Annotated[str | None, typer.Option("-o", "--output",
                                                       help="Write here (default: stdout).")]
            = None, plugin: PluginOpt = None) -> None:
    """Score raw records with a registered model; adds probability and prediction columns."""
    from heartflow.cli.predict_csv import predict_csv

    predict_csv(model_uri, input_csv, output, plugin)


@app.command()
@handles_errors
def evaluate(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland/1")],
             data: Annotated[str, typer.Argument(
                 help="A named data set (uci-va, uci-switzerland, ...) or a CSV path.")],
             site: Annotated[str | None, typer.Option(help="Site name for the record.")] = None,
             output: Annotated[str | None, typer.Option("-o", "--output",
                                                        help="Write an HTML report here.")]
             = None,
             thresholds: Annotated[str | None, typer.Option(
                 help="Decision thresholds for net benefit, e.g. 0.1,0.2,0.3.")] = None,
             plugin: PluginOpt = None) -> None:
    """Judge a risk model on another site: discrimination, calibration, net benefit (95% CIs)."""
    from rich.console import Console
    from rich.table import Table

    from heartflow import api

    chosen = tuple(float(x) for x in thresholds.split(",")) if thresholds else None
    result = api.evaluate(model_uri, data, site=site, decision_thresholds=chosen,
                          report=output, plugins=plugin)
    r = result.report
    table = Table(title=f"{model_uri} on {result.site}: {r.rows} rows scored "
                        f"({r.rows_with_missing} with imputed values, "
                        f"{result.rows_without_outcome} without an outcome)")
    for column in ("figure", "value", "95% interval"):
        table.add_column(column)
    for row in r.table():
        table.add_row(*row)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(table)
    for note in r.notes:
        console.print(f"note: {note}")
    if result.subgroups:
        from heartflow.cli.console import subgroup_rich_table

        console.print(subgroup_rich_table(result.subgroups))
    console.print(f"MLflow run {result.run_id}" + (f"; report written to {output}"
                                                   if output else ""))


@app.command()
@handles_errors
def recalibrate(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland/1")],
                data: Annotated[str, typer.Argument(
                    help="The site's rows: a named data set (uci-va, ...) or a CSV path.")],
                method: Annotated[str, typer.Option(
                    help="intercept | logistic | isotonic")] = "logistic",
                site: Annotated[str | None, typer.Option(help="Site name for the record.")]
                = None,
                plugin: PluginOpt = None) -> None:
    """Refit a risk model's calibration on a site; register it as a new version."""
    from rich.console import Console
    from rich.table import Table

    from heartflow import api

    result = api.recalibrate(model_uri, data, method=method, site=site, plugins=plugin)
    table = Table(title=f"{model_uri} recalibrated ({method}) on {result.site}: "
                        f"{result.before.rows} rows")
    for column in ("figure", "before", "after (fitted rows)", "after (5-fold cross-fitted)"):
        table.add_column(column)

    def cell(report, name: str) -> str:
        value = report.values[name]
        low, high = report.intervals.get(name, (float("nan"), float("nan")))
        ci = f" [{low:.3f}, {high:.3f}]" if low == low and high == high else ""
        return "undefined" if value != value else f"{value:.3f}{ci}"

    for name in ("roc_auc", "mean_risk", "prevalence", "calibration_intercept",
                 "calibration_slope", "ece", "brier"):
        table.add_row(name, cell(result.before, name), cell(result.after_fitted, name),
                      cell(result.after_cross_fitted, name))
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(table)
    rule = ", ".join(f"{k} {result.rule[k]:.4f}" for k in ("intercept", "slope")
                     if k in result.rule)
    console.print(f"rule: {method}{': ' + rule if rule else ''}")
    if result.new_version:
        name = result.new_model_uri.removeprefix("models:/").split("/")[0]
        console.print(f"registered {result.new_model_uri} (not promoted; to serve it: "
                      f"heartflow promote {name} {result.new_version})")
    else:
        console.print(f"logged {result.new_model_uri}")


@app.command()
@handles_errors
def card(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland/1")],
         output: Annotated[str | None, typer.Option("-o", "--output",
                                                    help="Write the markdown here.")] = None
         ) -> None:
    """The model card of a registered version (TRIPOD+AI items), as it stands now."""
    from heartflow import api

    text = api.model_card(model_uri)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        typer.echo(f"model card written to {output}")
    else:
        typer.echo(text)


@app.command()
@handles_errors
def models(name: Annotated[str | None, typer.Argument(help="Registered model name.")] = None,
           json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered versions: run, spec, test metrics, aliases, created."""
    from heartflow.cli.console import print_versions
    from heartflow.tracking import registry

    rows = registry.list_versions(name)
    if json_out:
        typer.echo(registry.to_json(rows))
    else:
        print_versions(rows)


@app.command()
@handles_errors
def promote(name: str, version: str) -> None:
    """Make VERSION the champion of NAME by hand (recorded)."""
    from heartflow.tracking import registry

    previous = registry.promote(name, version)
    typer.echo(f"{name}: champion is now v{version}"
               + (f" (was v{previous})" if previous else ""))


@app.command()
@handles_errors
def rollback(name: str) -> None:
    """Move NAME's champion back to the champion it replaced (recorded)."""
    from heartflow.tracking import registry

    current, previous = registry.rollback(name)
    typer.echo(f"{name}: champion rolled back from v{current} to v{previous}")


@app.command()
@handles_errors
def ui(port: Annotated[int, typer.Option(help="Port.")] = 5000,
       host: Annotated[str, typer.Option(help="Bind address (default loopback only).")]
       = "127.0.0.1") -> None:
    """Open the MLflow UI on the current tracking store (binds 127.0.0.1 by default)."""
    import subprocess

    from heartflow.tracking.store import runs_page, tracking_uri

    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port),
           "--backend-store-uri", tracking_uri(), "--workers", "1"]
    typer.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it); an experiment's runs "
               f"with their data, source and figures: "
               f"{runs_page(f'http://{host}:{port}', '<id>')}")
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command("stale-runs")
@handles_errors
def stale_runs(mark_failed: Annotated[bool, typer.Option(
        "--mark-failed", help="End each stale run as FAILED.")] = False) -> None:
    """List MLflow runs left RUNNING by heartflow processes that died (SIGKILL, crash)."""
    from heartflow.tracking import stale as tracking

    runs = tracking.stale_runs()
    if not runs:
        typer.echo("no stale runs")
        return
    for run in runs:
        action = ""
        if mark_failed:
            tracking.mark_failed(run["run_id"], f"owning process {run['pid']} died; marked "
                                                "FAILED by heartflow stale-runs")
            action = " -> FAILED"
        typer.echo(f"{run['run_id']}  {run['run_name']}  (pid {run['pid']} is gone){action}")
    if not mark_failed:
        typer.echo("run again with --mark-failed to end them as FAILED")


@app.command()
@handles_errors
def deploy(spec: SpecArg,
           cron: Annotated[str, typer.Option(help='Schedule, e.g. "0 3 * * 1".')],
           pool: Annotated[str, typer.Option(help="Prefect work pool (process type).")]
           = "default",
           name: Annotated[str | None, typer.Option(help="Deployment name (default: spec name).")]
           = None,
           timezone: Annotated[str | None, typer.Option(help="IANA time zone of the cron.")]
           = None, plugin: PluginOpt = None) -> None:
    """Create or update the scheduled retraining deployment of SPEC on the Prefect server."""
    from heartflow.pipelines.deployments import deploy as do_deploy

    info = do_deploy(spec, cron, pool, name, timezone, plugins=plugin)
    typer.echo(f"deployed {info['name']} on pool {info['pool']}: cron '{info['cron']}' "
               f"({info['timezone']}), registers {info['model']}\n"
               f"start a worker: prefect worker start --pool {info['pool']}\n"
               f"run it now:     prefect deployment run '{info['name']}'")


@app.command()
@handles_errors
def deployments(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List heartflow deployments: schedule, pool, last run state, the champion they produced."""
    from heartflow.pipelines.deployments import list_deployments

    rows = list_deployments()
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        typer.echo("no heartflow deployments")
    for row in rows:
        typer.echo(f"{row['name']}  cron {', '.join(row['schedules'])}  pool {row['pool']}  "
                   f"last run {row['last_run'] or '-'}  {row['champion']}")


@app.command()
@handles_errors
def undeploy(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Remove a heartflow deployment."""
    from heartflow.pipelines.deployments import remove

    remove(name)
    typer.echo(f"removed deployment {name}")


def main() -> None:
    """Console-script entry point."""
    from heartflow.runtime import fast_exit

    fast_exit.install()
    for key in ("HEARTFLOW_DATA_DIR", "HEARTFLOW_CACHE_DIR"):  # relative to where the command
        if os.environ.get(key):                               # started (workers move on)
            os.environ[key] = os.path.abspath(os.path.expanduser(os.environ[key]))
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    fast_exit.exit_with(code)


if __name__ == "__main__":
    main()
