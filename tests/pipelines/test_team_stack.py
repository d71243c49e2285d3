"""The team stack, real: a private PostgreSQL cluster, an MLflow tracking server on it (with
artifacts served by the server) and a Prefect server on it, both with authentication
(MLflow's basic-auth app with its users in PostgreSQL; Prefect's API auth string).
`heartflow run`, `sweep` (across two process workers of a work pool, started from separate
folders as two machines would be), `models`, `promote`, `predict` and `deploy` work
against them as a trainer, and four concurrent runs from separate folders leave
`champion` on the best version. Without credentials, or with a user lacking EDIT, heartflow
stops before training with a clear message; credentials never reach a log, a parameter,
a tag or an artifact."""

from __future__ import annotations

import json
import os
import secrets
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
ADMIN, TRAINER, READER = "admin", "trainer", "reader"


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
        for db in ("mlflow", "mlflow_auth", "prefect"):
            subprocess.run([_pg("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                            "heartflow", db], check=True, capture_output=True)
        pg = f"heartflow@127.0.0.1:{port}"
        mlflow_port, prefect_port = free_port(), free_port()
        passwords = {user: secrets.token_urlsafe(18) for user in (ADMIN, TRAINER, READER)}
        prefect_auth = f"heartflow:{secrets.token_urlsafe(18)}"
        # MLflow's basic-auth app: users and grants in PostgreSQL; an authenticated user
        # may read everything (READ) and create experiments and models (it then manages
        # them); EDIT on another's experiment or model is granted by the admin.
        (folder / "auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = postgresql+psycopg://{pg}/mlflow_auth\n"
            f"admin_username = {ADMIN}\nadmin_password = {passwords[ADMIN]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # A password is checked by PBKDF2 (about 0.4 s here) on every request unless a
            # good one is cached: without the cache a run takes ten times as long.
            "auth_cache_ttl_seconds = 300\n")
        (folder / "auth.ini").chmod(0o600)
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                                 "HEARTFLOW_LOCAL_PREFECT_SERVER")}
        bin_dir = os.path.dirname(sys.executable)
        servers.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--backend-store-uri", f"postgresql+psycopg://{pg}/mlflow",
             "--artifacts-destination", (folder / "artifacts").as_uri(), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
            env={**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                 "MLFLOW_AUTH_CONFIG_PATH": str(folder / "auth.ini"),
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)},
            stdout=open(folder / "mlflow.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        servers.append(subprocess.Popen(
            [os.path.join(bin_dir, "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)],
            env={**base_env, "PREFECT_HOME": str(folder / "prefect-home"),
                 "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
                 "PREFECT_SERVER_API_AUTH_STRING": prefect_auth,
                 "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            stdout=open(folder / "prefect.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        wait_until_answering(f"{mlflow_url}/health", servers[0], 180)  # (health: no auth)
        wait_until_answering(f"http://127.0.0.1:{prefect_port}/api/health", servers[1], 180)
        for user in (TRAINER, READER):  # the admin creates the team's users
            _auth_api(mlflow_url, "POST", "/api/2.0/mlflow/users/create",
                      (ADMIN, passwords[ADMIN]), {"username": user, "password": passwords[user]})
        yield {"MLFLOW_TRACKING_URI": mlflow_url,
               "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
               "MLFLOW_TRACKING_USERNAME": TRAINER,
               "MLFLOW_TRACKING_PASSWORD": passwords[TRAINER],
               "PREFECT_API_AUTH_STRING": prefect_auth,
               "HEARTFLOW_ROW_KEY_SECRET": secrets.token_hex(32),
               "pg_port": str(port), "folder": str(folder), "passwords": passwords}
    finally:
        for server in servers:
            stop_process_group(server)
        subprocess.run(_as_postgres([_pg("pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _auth_api(url: str, method: str, path: str, user: tuple[str, str],
              body: dict[str, str]) -> dict:
    """A call to MLflow's auth REST API as ``user`` (the admin's user management)."""
    import requests

    answer = requests.request(method, url + path, json=body, auth=user, timeout=30)
    assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return answer.json() if answer.text.strip() else {}


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
    # No credential or secret in anything heartflow printed, logged or recorded: the
    # commands' output, MLflow's parameters and tags, Prefect's logs, flow-run parameters
    # and deployments, and every artifact the server stores.
    secrets_used = [team_stack["passwords"][TRAINER], on_stack["PREFECT_API_AUTH_STRING"],
                    on_stack["HEARTFLOW_ROW_KEY_SECRET"]]
    printed = "".join(o.stdout + o.stderr for o in (out, scored, deployed))
    for secret in secrets_used:
        assert secret not in printed
        for db, query in (("mlflow", "select value from params union all select value from "
                           "tags union all select value from model_version_tags union all "
                           "select value from experiment_tags union all select value from "
                           "registered_model_tags"),
                          ("prefect", "select message from log union all select "
                           "parameters::text from flow_run union all select job_variables::text "
                           "from flow_run union all select "
                           "infra_overrides::text from deployment union all select "
                           "parameters::text from deployment")):
            assert secret not in _sql(team_stack, db, query), (db, "holds a secret")
        for path in (Path(team_stack["folder"]) / "artifacts").rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


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


def test_only_who_belongs_gets_in(tmp_path: Path, on_stack, team_stack, monkeypatch) -> None:
    """No credentials, wrong ones, no row-key secret, or a user without EDIT: a clear error
    before training and nothing written. Promotions record who made them."""
    from mlflow import MlflowClient

    import heartflow as hf
    from heartflow.errors import RegistryError, TrackingError

    url, passwords = on_stack["MLFLOW_TRACKING_URI"], team_stack["passwords"]
    heart_csv(tmp_path / "heart.csv", rows=200)
    spec = heart_spec(tmp_path / "s.yaml", name="heart_auth", model_name="heart-auth",
                      epochs=2)
    runs = "select count(*) from runs"
    before = _sql(team_stack, "mlflow", runs)

    def as_user(user: str | None, password: str | None = None) -> None:
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        else:
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or passwords[user])

    as_user(None)
    nobody = cli("run", "-q", str(spec), cwd=tmp_path)  # the command line: exit 4
    assert nobody.returncode == 4 and "credentials missing or wrong" in nobody.stderr
    assert "MLFLOW_TRACKING_USERNAME" in nobody.stderr and "Traceback" not in nobody.stderr
    as_user(TRAINER, "not-the-password")
    with pytest.raises(TrackingError, match="credentials missing or wrong"):
        hf.run(spec)
    as_user(TRAINER)
    monkeypatch.delenv("HEARTFLOW_ROW_KEY_SECRET")
    with pytest.raises(TrackingError, match="set HEARTFLOW_ROW_KEY_SECRET"):
        hf.run(spec)
    monkeypatch.setenv("HEARTFLOW_ROW_KEY_SECRET", on_stack["HEARTFLOW_ROW_KEY_SECRET"])
    assert _sql(team_stack, "mlflow", runs) == before  # nothing written
    assert _sql(team_stack, "mlflow", "select count(*) from experiments where "
                                      "name = 'heart_auth'") == "0"

    # The admin made the experiment and the model (as a team does), and two versions.
    as_user(ADMIN)
    admin = MlflowClient()
    experiment = admin.create_experiment("heart_auth")
    admin.create_registered_model("heart-auth")
    for _ in range(2):
        run = admin.create_run(experiment)
        admin.create_model_version("heart-auth", run.info.artifact_uri + "/model",
                                   run_id=run.info.run_id)
    before = _sql(team_stack, "mlflow", runs)

    as_user(READER)  # READ only: no runs
    with pytest.raises(TrackingError, match="'reader' may not create runs in experiment "
                                            "'heart_auth': it needs EDIT permission"):
        hf.run(spec)
    grant = {"username": TRAINER, "permission": "EDIT"}
    _auth_api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", (ADMIN, passwords[ADMIN]),
              {**grant, "resource_type": "experiment", "resource_id": experiment})
    as_user(TRAINER)  # EDIT on the experiment, READ on the model: refused before training
    with pytest.raises(RegistryError, match="'trainer' may not register versions of model "
                                            "'heart-auth': it needs EDIT permission"):
        hf.run(spec)
    assert _sql(team_stack, "mlflow", runs) == before  # no run
    assert _sql(team_stack, "mlflow", "select count(*) from model_versions where "
                                      "name = 'heart-auth'") == "2"  # and no new version

    as_user(READER)
    denied = cli("promote", "heart-auth", "1", cwd=tmp_path)  # the command line: exit 5
    assert denied.returncode == 5 and "needs EDIT permission" in denied.stderr
    assert "'reader' may not move the champion of model 'heart-auth'" in denied.stderr
    _auth_api(url, "POST", "/api/3.0/mlflow/users/permissions/grant", (ADMIN, passwords[ADMIN]),
              {**grant, "resource_type": "registered_model", "resource_id": "heart-auth"})
    as_user(TRAINER)
    hf.promote("heart-auth", 1)
    hf.promote("heart-auth", 2)
    hf.rollback("heart-auth")
    as_user(ADMIN)
    tags = {v: admin.get_model_version("heart-auth", v).tags for v in ("1", "2")}
    assert tags["2"]["heartflow.promotion.by"] == TRAINER  # promoted v2
    assert tags["2"]["heartflow.rollback.by"] == TRAINER   # rolled back from v2
    assert tags["1"]["heartflow.promotion.by"] == TRAINER  # restored v1
    assert admin.get_model_version_by_alias("heart-auth", "champion").version == "1"
