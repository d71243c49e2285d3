"""The team stack, real: a private PostgreSQL cluster, an MLflow tracking server on it (with
artifacts served by the server) and a Prefect server on it. `heartflow run`, `sweep`
(across two process workers of a work pool, started from separate folders as two
machines would be), `models`, `promote`, `predict` and `deploy` work against them, and
four concurrent runs from separate folders leave `champion` on the best version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    cli,
    free_port,
    heart_csv,
    heart_spec,
    stop_process_group,
    wait_until_answering,
)

pytestmark = pytest.mark.slow
MODEL = "heart-test"


def _pg(tool: str) -> str:
    """A PostgreSQL program: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / tool).exists():
            return str(folder / tool)
    return shutil.which(tool) or ""


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="module")
def team_stack() -> Iterator[dict[str, str]]:
    if not _pg("initdb") or not _pg("pg_ctl"):
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="heartflow-team-", dir="/tmp"))
    folder.chmod(0o755)  # the postgres user must reach its data folder
    data, socket_dir = folder / "pg", folder / "sock"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(socket_dir, "postgres")
    port = free_port()
    subprocess.run(_as_postgres([_pg("initdb"), "-D", str(data), "-A", "trust", "-U",
                                 "heartflow"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([_pg("pg_ctl"), "-D", str(data), "-l", str(folder / "pg.log"),
                                 "-o", f"-p {port} -k {socket_dir} -c "
                                 "listen_addresses=127.0.0.1", "-w", "start"]),
                   check=True, capture_output=True)
    servers: list[subprocess.Popen] = []
    try:
        for db in ("mlflow", "prefect"):
            subprocess.run([_pg("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                            "heartflow", db], check=True, capture_output=True)
        pg = f"heartflow@127.0.0.1:{port}"
        mlflow_port, prefect_port = free_port(), free_port()
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                                 "HEARTFLOW_LOCAL_PREFECT_SERVER")}
        bin_dir = os.path.dirname(sys.executable)
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"postgresql+psycopg://{pg}/mlflow", "--artifacts-destination",
             (folder / "artifacts").as_uri(), "--serve-artifacts", "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--workers", "1"],
            env={**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=open(folder / "mlflow.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        servers.append(subprocess.Popen(
            [os.path.join(bin_dir, "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)],
            env={**base_env, "PREFECT_HOME": str(folder / "prefect-home"),
                 "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
                 "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            stdout=open(folder / "prefect.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        wait_until_answering(f"http://127.0.0.1:{mlflow_port}/health", servers[0], 180)
        wait_until_answering(f"http://127.0.0.1:{prefect_port}/api/health", servers[1], 180)
        yield {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
               "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
               "pg_port": str(port), "folder": str(folder)}
    finally:
        for server in servers:
            stop_process_group(server)
        subprocess.run(_as_postgres([_pg("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _sql(stack: dict[str, str], db: str, query: str) -> str:
    out = subprocess.run([_pg("psql"), "-h", "127.0.0.1", "-p", stack["pg_port"], "-U", "heartflow",
                          "-d", db, "-tAc", query], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def on_stack(team_stack: dict[str, str], monkeypatch) -> dict[str, str]:
    """This test talks to the team servers (not the per-test sqlite store)."""
    env = {k: v for k, v in team_stack.items() if k.isupper()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HEARTFLOW_LOCAL_PREFECT_SERVER", raising=False)
    return env


def test_run_models_promote_predict_and_deploy_on_postgres(tmp_path: Path, on_stack,
                                                           team_stack) -> None:
    heart_csv(tmp_path / "heart.csv", rows=300)
    spec = heart_spec(tmp_path / "s.yaml", epochs=5)
    out = cli("run", "-q", "--json", str(spec), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    outcome = json.loads(out.stdout)
    # The run and the registered version are rows in PostgreSQL, not in a local file.
    assert not (tmp_path / "mlflow.db").exists()
    assert _sql(team_stack, "mlflow", f"select status from runs where run_uuid = "
                                      f"'{outcome['run_id']}'") == "FINISHED"
    assert _sql(team_stack, "mlflow", f"select count(*) from model_versions where "
                                      f"name = '{MODEL}'") == "1"
    assert int(_sql(team_stack, "prefect", "select count(*) from flow_run where "
                                           "state_type = 'COMPLETED'")) >= 1
    listed = json.loads(cli("models", MODEL, "--json", cwd=tmp_path).stdout)
    assert "champion" in listed[0]["aliases"]
    (tmp_path / "rows.csv").write_text(
        (tmp_path / "heart.csv").read_text().splitlines()[0] + "\n"
        + "\n".join((tmp_path / "heart.csv").read_text().splitlines()[1:4]) + "\n")
    scored = cli("predict", f"models:/{MODEL}@champion", str(tmp_path / "rows.csv"),
                 cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    header = scored.stdout.splitlines()[0].split(",")
    assert "probability" in header and len(scored.stdout.splitlines()) == 4
    assert cli("promote", MODEL, "1", cwd=tmp_path).returncode == 0
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "prefect"), "work-pool",
                    "create", "nightly", "--type", "process"], check=True, capture_output=True,
                   env=os.environ.copy())
    deployed = cli("deploy", str(spec), "--cron", "0 3 * * *", "--pool", "nightly",
                   cwd=tmp_path)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert _sql(team_stack, "prefect", "select count(*) from deployment where "
                                       "name = 'heart_test'") == "1"


def test_sweep_across_two_workers_and_four_concurrent_promotions(tmp_path: Path, on_stack,
                                                                 team_stack) -> None:
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    subprocess.run([prefect, "work-pool", "create", "sweeps", "--type", "process"],
                   check=True, capture_output=True, env=os.environ.copy())
    heart_csv(tmp_path / "heart.csv", rows=300)
    heart_spec(tmp_path / "base.yaml", epochs=8, model_name="heart-sweep")
    (tmp_path / "sweep.yaml").write_text(
        "sweep:\n  base: base.yaml\n  axes:\n    model.hidden.0.units: [2, 4]\n")
    workers = []
    try:
        for name in ("worker-a", "worker-b"):  # separate folders, as on two machines
            home = tmp_path / name
            home.mkdir()
            workers.append(subprocess.Popen(
                [prefect, "worker", "start", "--pool", "sweeps", "--name", name, "--limit",
                 "1"], cwd=home, env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1",
                                      "TMPDIR": str(home)},
                stdout=open(home / "worker.log", "w"), stderr=subprocess.STDOUT,
                start_new_session=True))
        out = cli("sweep", str(tmp_path / "sweep.yaml"), "--pool", "sweeps", "--json",
                  cwd=tmp_path, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    finally:
        for worker in workers:
            stop_process_group(worker)
    result = json.loads(out.stdout)
    trials = result["trials"]
    assert [t["ok"] for t in trials] == [True] * 2, [t.get("error") for t in trials]
    assert {t["worker"] for t in trials} == {"worker-a", "worker-b"}  # both took trials
    from mlflow import MlflowClient

    client = MlflowClient()
    children = client.search_runs([result["experiment_id"]], filter_string=(
        f"tags.mlflow.parentRunId = '{result['parent_run_id']}'"))
    assert len(children) == 2 and {c.data.tags["heartflow.worker"] for c in children} == {
        "worker-a", "worker-b"}
    assert result["choice"]["source"] in ("validation", "cv")
    ranked = cli("compare", result["parent_run_id"], "--format", "json", cwd=tmp_path)
    assert [r["rank"] for r in json.loads(ranked.stdout)] == [1, 2]

    # Four runs at once, each from its own folder and temp dir (no shared file lock):
    # the gate takes turns through the Prefect server, champion ends on the best.
    variants = [{"epochs": 1, "lr": 0.0005, "hidden": [2], "seed": 3},
                {"epochs": 5, "lr": 0.003, "hidden": [4], "seed": 4},
                {"epochs": 40, "lr": 0.01, "hidden": [8], "seed": 5},
                {"epochs": 15, "lr": 0.01, "hidden": [16], "seed": 6}]
    procs = []
    for i, variant in enumerate(variants):
        host = tmp_path / f"host{i}"
        (host / "tmp").mkdir(parents=True)
        spec = heart_spec(host / "spec.yaml", source=str(tmp_path / "heart.csv"),
                          model_name="heart-race", **variant)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "heartflow", "run", "-q", "--json", str(spec)], cwd=host,
            env={**os.environ, "TMPDIR": str(host / "tmp")}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        outcomes.append(json.loads(stdout))
    scores = {o["version"]: o["metrics"]["roc_auc"] for o in outcomes}
    champion = client.get_model_version_by_alias("heart-race", "champion").version
    assert scores[str(champion)] == max(scores.values()), (champion, scores)
    reasons = [client.get_model_version("heart-race", v).tags.get(
        "heartflow.promotion.reason", "") for v in scores]
    assert sum("no champion yet" in r for r in reasons) == 1, reasons
