"""The `heartflow` command: a thin layer over :mod:`heartflow.api`.

Every command calls the API (and prints with :mod:`heartflow.cli.console`, where all its
tables are); heartflow's own errors become one line on stderr and an exit status
(:mod:`heartflow.errors`), never a traceback. Heavy libraries (TensorFlow, MLflow,
Prefect) load inside the API functions that need them, so `--help` and `validate` answer
at once."""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

import typer

from heartflow import api
from heartflow.errors import (
    EXIT_CTRL_C,
    EXIT_DRIFT,
    EXIT_TERMINATED,
    EXIT_UNDECIDED,
    HeartflowError,
    Interrupted,
    TrackingError,
)
from heartflow.runtime import fast_exit
from heartflow.runtime.quiet_import import apply_quiet_defaults

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Declarative neural networks for tabular data: YAML spec -> Keras model "
                       "-> Prefect flow -> MLflow tracking and registry.")

def _err(message: str) -> None:
    sys.stderr.write(f"heartflow: error: {message}\n")


# Commands that record an MLflow run: an interrupt ends that run KILLED.
RECORDING = {"run", "sweep", "evaluate", "recalibrate"}


def handles_errors(fn: Callable) -> Callable:
    """Turn heartflow's own errors and interrupts into a message and an exit status."""
    recording = fn.__name__ in RECORDING

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        apply_quiet_defaults()
        try:
            return fn(*args, **kwargs)
        except HeartflowError as exc:
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except BaseException as exc:
            ctrl_c = isinstance(exc, KeyboardInterrupt)
            # Interrupted: our SIGTERM handler; TerminationSignal: Prefect's
            if ctrl_c or isinstance(exc, Interrupted) or \
                    type(exc).__name__ == "TerminationSignal":
                what = "interrupted (Ctrl-C)" if ctrl_c else "terminated (SIGTERM)"
                _err(what + ("; the MLflow run was marked KILLED, nothing registered"
                             if recording else ""))
                raise typer.Exit(EXIT_CTRL_C if ctrl_c else EXIT_TERMINATED) from None
            if isinstance(exc, Exception) and not isinstance(exc, typer.Exit) \
                    and api.is_store_failure(exc):
                _err(f"the tracking store at {api.tracking_store()} stopped answering after "
                     f"retries ({type(exc).__name__})"
                     + ("; the run could not finish and nothing was registered"
                        if recording else "")
                     + ". Check the server, then retry")
                raise typer.Exit(TrackingError.exit_code) from None
            raise

    return wrapper


def _on_sigterm(signum: int, frame: Any) -> None:
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
    from heartflow.cli.console import print_architecture  # lazy: rich

    print_architecture(api.show(spec, plugins=plugin))


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of the spec (for editors)."""
    typer.echo(json.dumps(api.spec_schema(), indent=2))


@app.command()
@handles_errors
def run(spec: SpecArg, plugin: PluginOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-epoch lines.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")]
        = False) -> None:
    """Validate SPEC, then run preprocess -> train -> evaluate -> register as a Prefect flow."""
    loaded = api.load_spec(spec, plugins=plugin)  # fail fast: nothing starts for a bad spec
    signal.signal(signal.SIGTERM, _on_sigterm)
    outcome = api.run(loaded, verbose=not quiet)
    if json_out:
        typer.echo(json.dumps(outcome.as_dict(), indent=1, default=str))
    else:
        from heartflow.cli.console import print_outcome  # lazy: rich

        print_outcome(outcome, api.tracking_store(), api.runs_page(outcome.experiment_id))
    if outcome.undecided:  # the run is recorded; the registry refused to judge it
        _err(f"promotion gate: {outcome.decision}")
        raise typer.Exit(EXIT_UNDECIDED)


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
    sweep_spec = api.load_sweep(spec, plugins=plugin)  # validates every trial first
    signal.signal(signal.SIGTERM, _on_sigterm)
    where = f"work pool {pool}" if pool else f"{workers or sweep_spec.workers} workers"
    typer.echo(f"sweep {sweep_spec.name}: {len(sweep_spec.trials)} trials, {where}", err=True)
    result = api.sweep(spec, workers=workers, plugins=plugin, progress=True, pool=pool)
    if json_out:
        typer.echo(json.dumps(result.as_dict(), indent=1, default=str))
        return
    from heartflow.cli.console import console, print_ranked  # lazy: rich

    out = console()
    print_ranked(result, out)
    out.print(result.choice.get("summary", ""))
    for trial in result.trials:
        if not trial.ok:
            typer.echo(f"trial {trial.number} ({trial.label}) failed: {trial.error}", err=True)
    out.print(f"parent run {result.parent_run_id}  ({result.wall_seconds:.1f} s with "
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
    if fmt not in ("table", "csv", "json"):
        raise HeartflowError(f"--format must be table, csv or json, not {fmt!r}")
    comparison = api.compare(target, metric)
    if fmt == "table":
        from heartflow.cli.console import print_ranked  # lazy: rich

        print_ranked(comparison)
    else:
        typer.echo(comparison.table(fmt), nl=False)


@app.command()
@handles_errors
def predict(model_uri: Annotated[str, typer.Argument(
                help="e.g. models:/heart-disease@champion, or a model folder (from `mlflow "
                     "artifacts download -u models:/NAME@ALIAS -d FOLDER`)")],
            input_csv: Annotated[str, typer.Argument(help="CSV of raw records.")],
            output: Annotated[str | None, typer.Option("-o", "--output",
                                                       help="Write here (default: stdout).")]
            = None, plugin: PluginOpt = None) -> None:
    """Score raw records with a registered model; adds probability and prediction columns.

    A model folder scores without the registry and without importing MLflow."""
    if api.is_large_file(input_csv):  # scored in chunks, never held whole
        model = api.load_model(model_uri, plugins=plugin)
        if model.runtime_note:
            typer.echo(f"note: {model.runtime_note}", err=True)
        with open(output, "w", encoding="utf-8", newline="") if output else \
                contextlib.nullcontext(sys.stdout) as out:
            check = model.predict_file(input_csv, out)
        for note in check.notes():
            typer.echo(f"note: {note}", err=True)
        if output:
            typer.echo(f"wrote {check.rows} rows to {output}", err=True)
        return
    records = api.read_records(input_csv)  # a missing file is refused before any loading
    model = api.load_model(model_uri, plugins=plugin)
    if model.runtime_note:
        typer.echo(f"note: {model.runtime_note}", err=True)
    for note in model.check(records).notes():
        typer.echo(f"note: {note}", err=True)
    scored = api.written_scores(model.predict(records))
    out = records.copy()
    for column in scored.columns:
        out[column] = scored[column].to_numpy()
    if output:
        out.to_csv(output, index=False)
        typer.echo(f"wrote {len(out)} rows to {output}", err=True)
    else:
        out.to_csv(sys.stdout, index=False)


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
    from heartflow.cli.console import print_site_evaluation  # lazy: rich

    chosen = _thresholds(thresholds)
    signal.signal(signal.SIGTERM, _on_sigterm)
    result = api.evaluate(model_uri, data, site=site, decision_thresholds=chosen,
                          report=output, plugins=plugin)
    print_site_evaluation(result, model_uri, output)


def _thresholds(text: str | None) -> tuple[float, ...] | None:
    """``0.1,0.2,0.3`` as numbers in (0, 1); a HeartflowError naming a bad one."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if not 0 < value < 1:
            raise HeartflowError(f"--thresholds: {part.strip()!r} is not a number between 0 "
                                 "and 1; give them like 0.1,0.2,0.3")
        out.append(value)
    return tuple(out)


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
    from heartflow.cli.console import print_recalibration  # lazy: rich

    if method not in ("intercept", "logistic", "isotonic"):
        raise HeartflowError(f"--method must be intercept, logistic or isotonic, not {method!r}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    result = api.recalibrate(model_uri, data, method=method, site=site, plugins=plugin)
    print_recalibration(result, model_uri)


@app.command()
@handles_errors
def monitor(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland@champion")],
            data: Annotated[str, typer.Argument(
                help="The batch: a named data set or a CSV path (outcomes optional).")],
            site: Annotated[str | None, typer.Option(help="Site name for the record.")] = None,
            as_of: Annotated[str | None, typer.Option(
                "--as-of", help="The batch's date, YYYY-MM-DD (default today).")] = None,
            json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")]
            = False,
            output: Annotated[str | None, typer.Option(
                "-o", "--output", help="Write the HTML report here.")] = None,
            plugin: PluginOpt = None) -> None:
    """Check a batch against the model's development data; exit 6 when anything drifted."""
    from heartflow.cli.console import print_monitoring  # lazy: rich

    signal.signal(signal.SIGTERM, _on_sigterm)
    report = api.monitor(model_uri, data, site=site, as_of=as_of, report=output,
                         plugins=plugin)
    if json_out:
        typer.echo(report.to_json())
    else:
        print_monitoring(report)
    if report.drift:
        raise typer.Exit(EXIT_DRIFT)


@app.command()
@handles_errors
def update(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland/1")],
           data: Annotated[str, typer.Argument(
               help="The site's rows: a named data set (uci-va, ...) or a CSV path.")],
           site: Annotated[str | None, typer.Option(help="Site name for the record.")] = None,
           method: Annotated[str, typer.Option(
               help="auto (closed testing) | none | intercept | logistic | revision")]
           = "auto",
           json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
           = False,
           plugin: PluginOpt = None) -> None:
    """Update a risk model on a site by evidence; register the update (not promoted)."""
    from heartflow.cli.console import print_update  # lazy: rich

    signal.signal(signal.SIGTERM, _on_sigterm)
    result = api.update(model_uri, data, method=method, site=site, plugins=plugin)
    if json_out:
        typer.echo(json.dumps(result.as_dict(), indent=1, default=str))
    else:
        print_update(result)


@app.command()
@handles_errors
def approve(name: str, version: str,
            reason: Annotated[str, typer.Option(help="Why (recorded on the version).")] = ""
            ) -> None:
    """Approve a version the gate passed under require_approval: it becomes champion."""
    done = api.approve(name, version, reason=reason)
    typer.echo(f"{name}: champion is now v{done.version}"
               + (f" (was v{done.previous})" if done.previous else "") + "; approval recorded")


@app.command()
@handles_errors
def card(model_uri: Annotated[str, typer.Argument(help="e.g. models:/uci-cleveland/1")],
         output: Annotated[str | None, typer.Option("-o", "--output",
                                                    help="Write the markdown here.")] = None
         ) -> None:
    """The model card of a registered version (TRIPOD+AI items), as it stands now."""
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
    found = api.versions(name)
    if json_out:
        typer.echo(json.dumps([v.as_dict() for v in found], indent=1, default=str))
    else:
        from heartflow.cli.console import print_versions  # lazy: rich

        print_versions(found)


@app.command()
@handles_errors
def promote(name: str, version: str,
            reason: Annotated[str, typer.Option(help="Recorded on the version.")]
            = "manual promotion") -> None:
    """Make VERSION the champion of NAME by hand (recorded)."""
    done = api.promote(name, version, reason=reason)
    typer.echo(f"{name}: champion is now v{done.version}"
               + (f" (was v{done.previous})" if done.previous else ""))


@app.command()
@handles_errors
def rollback(name: str) -> None:
    """Move NAME's champion back to the champion it replaced (recorded)."""
    done = api.rollback(name)
    typer.echo(f"{name}: champion rolled back from v{done.previous} to v{done.version}")


@app.command()
@handles_errors
def ui(port: Annotated[int, typer.Option(help="Port.")] = 5000,
       host: Annotated[str, typer.Option(help="Bind address (default loopback only).")]
       = "127.0.0.1") -> None:
    """Open the MLflow UI on the current tracking store (binds 127.0.0.1 by default)."""
    server = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server = api.start_ui(port=port, host=host)
        if server.experiment_id:
            typer.echo(f"MLflow UI on {server.url} (Ctrl-C stops it); the latest heartflow "
                       f"experiment's runs with their data, source and figures: {server.page}")
        else:
            typer.echo(f"MLflow UI on {server.url} (Ctrl-C stops it); no heartflow "
                       "experiment yet")
        code = server.wait()
    except (KeyboardInterrupt, Interrupted) as exc:
        ctrl_c = isinstance(exc, KeyboardInterrupt)
        if server is not None:
            server.stop()
        sys.stderr.write(f"heartflow: MLflow UI stopped ({'Ctrl-C' if ctrl_c else 'SIGTERM'})"
                         "\n")
        raise typer.Exit(EXIT_CTRL_C if ctrl_c else EXIT_TERMINATED) from None
    raise typer.Exit(code)


@app.command("stale-runs")
@handles_errors
def stale_runs(mark_failed: Annotated[bool, typer.Option(
        "--mark-failed", help="End each stale run as FAILED.")] = False) -> None:
    """List MLflow runs left RUNNING by heartflow processes that died (SIGKILL, crash)."""
    runs = api.stale_runs(mark_failed=mark_failed)
    if not runs:
        typer.echo("no stale runs")
        return
    for run in runs:
        action = " -> FAILED" if run.marked_failed else ""
        typer.echo(f"{run.run_id}  {run.run_name}  (pid {run.pid} is gone){action}")
    if not mark_failed:
        typer.echo("run again with --mark-failed to end them as FAILED")


@app.command()
@handles_errors
def deploy(spec: SpecArg,
           cron: Annotated[str | None, typer.Option(help='Schedule, e.g. "0 3 * * 1".')]
           = None,
           on_drift: Annotated[bool, typer.Option(
               "--on-drift", help="Update the model on each drifted batch (the "
               "heartflow.model.drift event of heartflow monitor) instead of a schedule.")]
           = False,
           pool: Annotated[str, typer.Option(help="Prefect work pool (process type).")]
           = "default",
           name: Annotated[str | None, typer.Option(help="Deployment name (default: spec name; "
                                                    "MODEL-update-on-drift with --on-drift).")]
           = None,
           timezone: Annotated[str | None, typer.Option(help="IANA time zone of the cron.")]
           = None, plugin: PluginOpt = None) -> None:
    """Create or update the scheduled retraining deployment of SPEC on the Prefect server
    (--cron), or the update of its model on each drifted batch (--on-drift)."""
    info = api.deploy(spec, cron, pool=pool, name=name, timezone=timezone, plugins=plugin,
                      on_drift=on_drift)
    if on_drift:
        typer.echo(f"deployed {info.name} on pool {info.pool}: runs {info.trigger}, "
                   f"updates the drifted version (closed testing) and gates it\n"
                   f"start a worker: prefect worker start --pool {info.pool}\n"
                   f"then a drift:   heartflow monitor models:/{info.model}@champion BATCH.csv")
        return
    typer.echo(f"deployed {info.name} on pool {info.pool}: cron '{info.cron}' "
               f"({info.timezone}), registers {info.model}\n"
               f"start a worker: prefect worker start --pool {info.pool}\n"
               f"run it now:     prefect deployment run '{info.name}'")


@app.command()
@handles_errors
def deployments(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List heartflow deployments: schedule, pool, last run state, the champion they produced."""
    rows = api.deployments()
    if json_out:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=1))
        return
    from heartflow.cli.console import print_deployments  # lazy: rich

    print_deployments(rows)


@app.command()
@handles_errors
def undeploy(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Remove a heartflow deployment."""
    api.undeploy(name)
    typer.echo(f"removed deployment {name}")


def main() -> None:
    """Console-script entry point."""
    # A crash in native code (TensorFlow, onnxruntime, sqlite) ends the process with the
    # Python stack of every thread on stderr, for the bug report, instead of nothing.
    faulthandler.enable()
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
