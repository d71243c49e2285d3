"""Model registry: versions, the ``champion``/``challenger`` aliases, and the promotion gate.

Every successful run registers a version (after its artifacts are fully logged)
and gives it the ``challenger`` alias. The champion is re-scored on the new run's
test rows (the caller says how: ``score_champion``); the challenger takes
``champion`` only if it wins by the declared margin (or there is no champion).
Decisions are serialised by a file lock (one host; see docs/team.md) and recorded
as tags on the version and the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from heartflow.errors import RegistryError
from heartflow.spec import vocabulary as V

CHAMPION, CHALLENGER = "champion", "challenger"
PREVIOUS_TAG = "heartflow.previous_champion"


@dataclass
class Decision:
    """The outcome of the promotion gate."""

    promoted: bool
    metric: str
    challenger_score: float | None
    champion_score: float | None
    champion_version: str | None
    reason: str
    gate_rows: int | None = None      # rows both models were scored on
    excluded_rows: int | None = None  # test rows the champion had trained or validated on
    undecided: bool = False           # too few fair rows: the gate refused to decide

    def tags(self) -> dict[str, str]:
        """As registry/run tags."""
        return {f"heartflow.promotion.{k}": "" if v is None else str(v)
                for k, v in asdict(self).items()}


def _client():
    from heartflow.tracking.runs import client

    return client()


@contextlib.contextmanager
def registry_lock(name: str) -> Iterator[None]:
    """Serialise alias decisions for one model among every process that shares its registry.

    With a team Prefect server (``PREFECT_API_URL`` set by the user, not a server this
    machine's heartflow started for itself) the lock is a Prefect global concurrency limit
    of 1 slot on that server, so runs on different hosts take turns. Otherwise (the local
    default: one machine, a throw-away Prefect server per command) it is a file lock on
    this machine, keyed by registry URI and model name.
    """
    import mlflow

    uri = mlflow.get_registry_uri()
    key = hashlib.sha256(f"{uri}|{name}".encode()).hexdigest()[:16]
    if shared_prefect_api():
        with _server_lock(f"heartflow-registry-{key}"):
            yield
        return
    from filelock import FileLock

    folder = os.path.join(tempfile.gettempdir(), "heartflow-locks")
    os.makedirs(folder, exist_ok=True)
    with FileLock(os.path.join(folder, f"{key}.lock")):
        yield


def shared_prefect_api() -> bool:
    """True when ``PREFECT_API_URL`` names a server this machine's heartflow did not start."""
    from heartflow.runtime.prefect_server import LOCAL_SERVER_ENV

    return bool(os.environ.get("PREFECT_API_URL")) and not os.environ.get(LOCAL_SERVER_ENV)


@contextlib.contextmanager
def _server_lock(limit: str, timeout: float = 900.0) -> Iterator[None]:
    """One slot of a global concurrency limit on the Prefect server (created if missing)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:  # Prefect's upsert reads, then creates: not atomic
            client.upsert_global_concurrency_limit_by_name(limit, 1)
        except ObjectAlreadyExists:  # another run created it between the two: it exists
            client.upsert_global_concurrency_limit_by_name(limit, 1)  # (its limit is 1)
    with concurrency(limit, occupy=1, timeout_seconds=timeout, strict=True):
        yield


def register_version(model_uri: str, name: str, run_id: str, tags: dict[str, str]) -> str:
    """Create a registered model version for a fully-logged model; returns the version.

    Idempotent per run: a retried register step finds the version this run already
    created instead of making a second one.
    """
    import mlflow

    from heartflow.tracking.transient import is_transient

    existing = [v for v in _search_versions(name) if v.run_id == run_id]
    if existing:
        return str(max(int(v.version) for v in existing))
    version = None
    for attempt in range(6):
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Created version"
                version = mlflow.register_model(model_uri, name, tags=tags)
            break
        except Exception as exc:
            if attempt == 5 or not is_transient(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    return str(version.version)


def _search_versions(name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(_client().search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []


def alias_version(name: str, alias: str) -> str | None:
    """Version that holds ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


SITE_TAG = "heartflow.site."  # version tags: heartflow.site.<site> (summary), .<site>.run


def model_version(uri: str) -> tuple[str | None, str | None]:
    """(name, version) of a ``models:/name/3`` or ``models:/name@alias`` URI."""
    if not uri.startswith("models:/"):
        return None, None
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias_version(name, alias)
    name, _, version = rest.partition("/")
    return name, version or None


def _better(new: float, old: float, metric: str, margin: float) -> bool:
    gain = new - old if metric in V.HIGHER_IS_BETTER else old - new
    return gain >= margin if margin > 0 else gain > 0


@dataclass
class GateRows:
    """The challenger's test rows: typed features, labels and stable row keys (hex)."""

    features: Any
    y: Any
    keys: list[str]


def champion_seen_keys(name: str, version: str) -> set[str] | None:
    """Keys of the rows the version's run trained or validated on (its split manifest).

    None when the run logged no manifest (then no row can be excluded).
    """
    import mlflow
    import pandas as pd

    run_id = _client().get_model_version(name, version).run_id
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=MANIFEST_ARTIFACT)
    except Exception:
        return None
    manifest = pd.read_csv(path, dtype=str)
    return set(manifest.loc[manifest["part"] != "test", "key"])


MANIFEST_ARTIFACT = "split/manifest.csv"


def decide_and_promote(name: str, version: str, run_id: str, metric: str,
                       challenger: Any, rows: GateRows, score: Callable[[Any, Any, Any], float],
                       min_improvement: float, min_gate_rows: int,
                       baseline_scores: dict[str, float] | None = None) -> Decision:
    """Run the promotion gate for a freshly registered version and move aliases.

    Challenger and champion are scored (``score(scorer, features, y)``) on the
    challenger's test rows that the champion neither trained nor validated on (its split
    manifest); with fewer than ``min_gate_rows`` such rows the gate refuses to decide.
    """
    import numpy as np

    from heartflow.tracking.logged_model import load_scorer

    c = _client()
    c.set_registered_model_alias(name, CHALLENGER, version)
    with registry_lock(name):
        champion = alias_version(name, CHAMPION)
        fair = np.ones(len(rows.keys), dtype=bool)
        if champion is not None and champion != version:
            seen = champion_seen_keys(name, champion)
            if seen:
                fair = np.array([k not in seen for k in rows.keys], dtype=bool)
        n, excluded = int(fair.sum()), int((~fair).sum())
        features, y = rows.features[fair], rows.y[fair]
        new_score = score(challenger, features, y) if n else float("nan")
        if champion is None:
            decision = _alone(metric, new_score, n, "no champion yet")
        elif champion == version:
            decision = Decision(True, metric, new_score, new_score, champion, "already champion",
                                n, excluded)
        elif n < min_gate_rows:
            decision = Decision(False, metric, None, None, champion,
                                f"undecided: only {n} test rows were not seen by champion "
                                f"v{champion} in training or validation ({excluded} excluded); "
                                f"the gate needs {min_gate_rows} (register.promote."
                                "min_gate_rows)", n, excluded, undecided=True)
        elif new_score != new_score:
            decision = _alone(metric, new_score, n, "", champion)
        else:
            try:
                old = load_scorer(f"models:/{name}/{champion}")
            except Exception as exc:
                raise RegistryError(f"cannot load champion {name} v{champion} to re-score it: "
                                    f"{exc}") from exc
            old_cols = (old.meta["numeric"], old.meta["categorical"], old.meta["task"])
            new_cols = (challenger.meta["numeric"], challenger.meta["categorical"],
                        challenger.meta["task"])
            if old_cols != new_cols:
                decision = Decision(False, metric, new_score, None, champion,
                                    "input schema differs from the champion's (feature columns "
                                    "or task changed); promote by hand with heartflow promote",
                                    n, excluded)
            else:
                old_score = score(old, features, y)
                won = _better(new_score, old_score, metric, min_improvement)
                how = (f"{metric} {new_score:.4f} vs champion v{champion} {old_score:.4f} on "
                       f"{n} test rows neither trained on ({excluded} excluded)")
                reason = (f"better by the margin ({how}, margin {min_improvement})" if won else
                          f"not better by the margin ({how}, margin {min_improvement})")
                decision = Decision(won, metric, new_score, old_score, champion, reason, n,
                                    excluded)
        if decision.promoted and baseline_scores:
            beaten = [b for b, s in baseline_scores.items()
                      if not _better(new_score, s, metric, 0.0)]
            if beaten:
                decision = Decision(False, metric, new_score, decision.champion_score,
                                    champion, f"does not beat baseline(s) {', '.join(beaten)} "
                                    f"on {metric}", n, excluded)
        if decision.promoted and champion != version:
            if champion is not None:
                c.set_model_version_tag(name, version, PREVIOUS_TAG, champion)
            c.set_registered_model_alias(name, CHAMPION, version)
    record(name, version, run_id, decision.tags())
    return decision


def _alone(metric: str, new_score: float, n: int, reason: str,
           champion: str | None = None) -> Decision:
    """The challenger judged on its own (no champion to compare): promoted if defined."""
    if new_score != new_score:  # NaN: undefined on these rows
        return Decision(False, metric, None, None, champion,
                        f"{metric} is undefined on the {n} gate rows (for example only one "
                        "class among them); not promoted", n, 0)
    return Decision(True, metric, new_score, None, None, reason, n, 0)


def record(name: str, version: str, run_id: str | None, tags: dict[str, str]) -> None:
    """Write tags on a model version and (if given) its run."""
    c = _client()
    for k, v in tags.items():
        c.set_model_version_tag(name, version, k, v)
        if run_id:
            c.set_tag(run_id, k, v)


def promote(name: str, version: str, reason: str = "manual promotion") -> str | None:
    """Give ``version`` the champion alias by hand; returns the previous champion."""
    c = _client()
    try:
        c.get_model_version(name, version)
    except Exception:
        raise RegistryError(f"model {name!r} has no version {version}") from None
    with registry_lock(name):
        previous = alias_version(name, CHAMPION)
        if previous and previous != version:
            c.set_model_version_tag(name, version, PREVIOUS_TAG, previous)
        c.set_registered_model_alias(name, CHAMPION, version)
    record(name, version, None, {"heartflow.promotion.promoted": "True",
                                 "heartflow.promotion.reason": reason,
                                 "heartflow.promotion.at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return previous


def rollback(name: str) -> tuple[str, str]:
    """Move champion back to the version it replaced; returns (from, to)."""
    c = _client()
    with registry_lock(name):
        current = alias_version(name, CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = c.get_model_version(name, current).tags.get(PREVIOUS_TAG)
        if not previous:
            raise RegistryError(f"champion {name} v{current} did not replace an earlier "
                                "champion; nothing to roll back to")
        c.set_registered_model_alias(name, CHAMPION, previous)
    record(name, current, None, {"heartflow.rollback.replaced_by": previous})
    record(name, previous, None, {"heartflow.rollback.restored_from": current,
                                  "heartflow.promotion.reason": f"rollback from v{current}"})
    return current, previous


def list_versions(name: str | None = None) -> list[dict[str, object]]:
    """Registered versions with run, spec, key metrics and aliases (newest first)."""
    c = _client()
    names = [name] if name else [m.name for m in c.search_registered_models()]
    rows = []
    for model_name in names:
        try:
            model = c.get_registered_model(model_name)
        except Exception:
            raise RegistryError(f"no registered model named {model_name!r}") from None
        aliases: dict[str, list[str]] = {}
        for alias, ver in (model.aliases or {}).items():
            aliases.setdefault(str(ver), []).append(alias)
        for v in c.search_model_versions(f"name='{model_name}'"):
            metrics = {}
            if v.run_id:
                with contextlib.suppress(Exception):
                    run = c.get_run(v.run_id)
                    metrics = {k.removeprefix("test_"): val for k, val in run.data.metrics.items()
                               if k.startswith("test_")}
            rows.append({"name": model_name, "version": str(v.version), "run_id": v.run_id,
                         "spec": v.tags.get("heartflow.spec_name", ""),
                         "metrics": metrics, "aliases": sorted(aliases.get(str(v.version), [])),
                         "created": v.creation_timestamp,
                         "sites": {k.removeprefix(SITE_TAG): val
                                   for k, val in v.tags.items()
                                   if k.startswith(SITE_TAG) and
                                   not k.endswith(".run")},
                         "decision": v.tags.get("heartflow.promotion.reason", ""),
                         "recalibration": (f"v{v.tags['heartflow.recalibrated_from']} "
                                           f"recalibrated: {v.tags['heartflow.recalibration']}"
                                           if "heartflow.recalibrated_from" in v.tags else "")})
    rows.sort(key=lambda r: (r["name"], -int(r["version"])))
    return rows


def to_json(rows: list[dict[str, object]]) -> str:
    """Rows as JSON text."""
    return json.dumps(rows, indent=1, default=str)
