"""The MLflow model registry: versions, the ``champion``/``challenger`` aliases, and recording
what the promotion gate decided.

Every successful run registers a version (after its artifacts are fully logged) and gives
it the ``challenger`` alias. The gate's judgement is evaluation's
(:mod:`heartflow.evaluation.gate`); the training flow takes the registry lock
(:mod:`heartflow.tracking.locks`), asks here for the champion and the rows it has seen,
and hands the decision to :func:`apply_decision`, which moves ``champion`` and records the
decision on the version and its run.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import time
from typing import Any

import numpy as np
import pandas as pd

from heartflow.data.split import KEY_FORMAT, KeyPrefixes, RowKeyer
from heartflow.errors import RegistryError, TrackingError
from heartflow.evaluation.gate import Decision
from heartflow.tracking import names as N
from heartflow.tracking.locks import registry_lock
from heartflow.tracking.retries import is_transient, retrying
from heartflow.tracking.row_secret import row_key_secret
from heartflow.tracking.store import client, current_user, permission_needed


def register_version(model_uri: str, name: str, run_id: str, tags: dict[str, str]) -> str:
    """Create a registered model version for a fully-logged model; returns the version.

    Idempotent per run: a retried register step finds the version this run already
    created instead of making a second one.
    """
    import mlflow  # lazy: MLflow costs 1.3 s to import

    existing = [v for v in _search_versions(name) if v.run_id == run_id]
    if existing:
        return str(max(int(v.version) for v in existing))

    def register() -> Any:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Created version"
            return mlflow.register_model(model_uri, name, tags=tags)

    with _editing(name, "register versions of"):
        return str(retrying(register, when=is_transient, attempts=6).version)


def _editing(name: str, action: str = "change") -> contextlib.AbstractContextManager:
    """A refusal by the server (HTTP 403) as a RegistryError naming the permission."""
    return permission_needed(f"{action} model {name!r}", "EDIT", RegistryError)


def _search_versions(name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException  # lazy: MLflow

    try:
        return list(client().search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []


def alias_version(name: str, alias: str) -> str | None:
    """Version that holds ``alias``, or None."""
    from mlflow.exceptions import MlflowException  # lazy: MLflow

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def version_tags(name: str, version: str) -> dict[str, str]:
    """The tags of one version; a RegistryError when it does not exist."""
    try:
        return dict(client().get_model_version(name, version).tags)
    except Exception:
        raise RegistryError(f"model {name!r} has no version {version}") from None


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


def seen_keys(name: str, version: str, key_id: str | None = None
              ) -> set[str] | KeyPrefixes | None:
    """Keyed keys of the rows the version's run trained or validated on: from its split
    manifest (in memory), or the first 64 bits of each from its seen file (streamed).

    A recalibrated version answers for the version it was recalibrated from (same network).
    None when they cannot be known: the run logged neither, it could not be read, or
    its keys are not comparable with this process's: another or no key format (manifests
    of older heartflow versions hold unkeyed keys), or another secret than ``key_id``'s
    (this process's row-key secret when None; see :mod:`heartflow.tracking.row_secret`).
    """
    import mlflow.artifacts  # lazy: MLflow

    tags = version_tags(name, version)
    if tags.get(N.RECALIBRATED_FROM):
        return seen_keys(name, tags[N.RECALIBRATED_FROM], key_id)
    run_id = client().get_model_version(name, version).run_id
    try:
        run_tags = client().get_run(run_id).data.tags
    except Exception:
        return None
    if key_id is None:
        try:
            key_id = RowKeyer(row_key_secret()).key_id
        except TrackingError:  # no secret here: no key can be matched
            return None
    if (run_tags.get(N.SPLIT_KEY_FORMAT) != KEY_FORMAT
            or run_tags.get(N.SPLIT_KEY_ID) != key_id):
        return None
    try:
        folders = {posixpath.dirname(N.MANIFEST_ARTIFACT), posixpath.dirname(N.SEEN_ARTIFACT)}
        logged = {f.path for folder in folders for f in client().list_artifacts(run_id, folder)}
        if N.MANIFEST_ARTIFACT in logged:
            path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                       artifact_path=N.MANIFEST_ARTIFACT)
            manifest = pd.read_csv(path, dtype=str)
            return set(manifest.loc[manifest["part"] != "test", "key"])
        if N.SEEN_ARTIFACT in logged:
            path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                       artifact_path=N.SEEN_ARTIFACT)
            values = np.load(path, allow_pickle=False)
            logged_rows = sum(int(run_tags.get(N.split_size(p), -1))
                              for p in ("train", "validation"))
            if values.shape == (logged_rows,) and values.dtype == np.dtype(">u8"):
                return KeyPrefixes(values.astype(np.uint64))  # every seen row, as logged
    except Exception:
        return None
    return None


def set_challenger(name: str, version: str) -> None:
    """Give a freshly registered version the ``challenger`` alias. Call it under
    :func:`heartflow.tracking.locks.registry_lock`: MLflow sets an alias by reading, then
    inserting, and two processes doing it at once collide."""
    with _editing(name, "set the aliases of"):
        client().set_registered_model_alias(name, N.CHALLENGER, version)


def apply_decision(name: str, version: str, run_id: str, decision: Decision) -> None:
    """Move ``champion`` to ``version`` when the gate promoted it (remembering the champion
    it replaced), and record the decision on the version and its run. Call it under
    :func:`heartflow.tracking.locks.registry_lock`, where the decision was taken."""
    champion = decision.champion_version
    if decision.promoted and champion != version:
        _make_champion(name, version, champion)
    fields = decision.fields()
    tags = {N.promotion(k): v for k, v in fields.items() if k not in N.GATE_FIELDS}
    tags.update({N.gate(k): fields[k] for k in N.GATE_FIELDS})
    tags[N.gate("rows")] = fields["gate_rows"]
    record(name, version, run_id, tags)


def _make_champion(name: str, version: str, previous: str | None) -> None:
    c = client()
    with _editing(name, "move the champion of"):
        if previous is not None and previous != version:
            c.set_model_version_tag(name, version, N.PREVIOUS_CHAMPION, previous)
        c.set_registered_model_alias(name, N.CHAMPION, version)


def record(name: str, version: str, run_id: str | None, tags: dict[str, str]) -> None:
    """Write tags on a model version and (if given) its run."""
    c = client()
    with _editing(name, "record decisions on"):
        for k, v in tags.items():
            c.set_model_version_tag(name, version, k, v)
            if run_id:
                c.set_tag(run_id, k, v)


def promote(name: str, version: str, reason: str = "manual promotion") -> str | None:
    """Give ``version`` the champion alias by hand; returns the previous champion. Who did
    it (the MLflow user, else the operating-system user) is recorded on the version."""
    version_tags(name, version)  # a RegistryError for an unknown version
    with registry_lock(name):
        previous = alias_version(name, N.CHAMPION)
        _make_champion(name, version, previous)
    record(name, version, None, {N.PROMOTED: "True", N.PROMOTION_REASON: reason,
                                 N.PROMOTION_AT: time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 N.PROMOTION_BY: current_user()})
    return previous


def rollback(name: str) -> tuple[str, str]:
    """Move champion back to the version it replaced; returns (from, to). Who did it is
    recorded on both versions."""
    c = client()
    with registry_lock(name):
        current = alias_version(name, N.CHAMPION)
        if current is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = c.get_model_version(name, current).tags.get(N.PREVIOUS_CHAMPION)
        if not previous:
            raise RegistryError(f"champion {name} v{current} did not replace an earlier "
                                "champion; nothing to roll back to")
        with _editing(name, "move the champion of"):
            c.set_registered_model_alias(name, N.CHAMPION, previous)
    who = current_user()
    record(name, current, None, {N.ROLLBACK_REPLACED_BY: previous, N.ROLLBACK_BY: who})
    record(name, previous, None, {N.ROLLBACK_RESTORED_FROM: current,
                                  N.PROMOTION_REASON: f"rollback from v{current}",
                                  N.PROMOTION_BY: who})
    return current, previous


def list_versions(name: str | None = None) -> list[dict[str, object]]:
    """Registered versions with run, spec, key metrics and aliases (newest first)."""
    c = client()
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
            rows.append(_version_row(c, model_name, v, aliases))
    rows.sort(key=lambda r: (r["name"], -int(r["version"])))
    return rows


def _version_row(c: Any, name: str, v: Any, aliases: dict[str, list[str]]) -> dict[str, object]:
    metrics: dict[str, float] = {}
    if v.run_id:
        with contextlib.suppress(Exception):
            run = c.get_run(v.run_id)
            metrics = {k.removeprefix("test_"): val for k, val in run.data.metrics.items()
                       if k.startswith("test_")}
    tags = v.tags
    return {"name": name, "version": str(v.version), "run_id": v.run_id,
            "spec": tags.get(N.SPEC_NAME, ""), "metrics": metrics,
            "aliases": sorted(aliases.get(str(v.version), [])),
            "created": v.creation_timestamp,
            "sites": {k.removeprefix(N.SITE_PREFIX): val for k, val in tags.items()
                      if k.startswith(N.SITE_PREFIX) and not k.endswith(".run")},
            "decision": tags.get(N.PROMOTION_REASON, ""),
            "recalibration": (f"v{tags[N.RECALIBRATED_FROM]} recalibrated: "
                              f"{tags[N.RECALIBRATION]}" if N.RECALIBRATED_FROM in tags
                              else "")}


def to_json(rows: list[dict[str, object]]) -> str:
    """Rows as JSON text."""
    return json.dumps(rows, indent=1, default=str)


def approve(name: str, version: str, reason: str = "") -> str | None:
    """Make a version the promotion gate passed under ``require_approval`` the champion,
    recording who approved it, when and why; returns the previous champion."""
    tags = version_tags(name, version)  # a RegistryError for an unknown version
    if tags.get(N.promotion("awaiting_approval")) != "True":
        why = tags.get(N.PROMOTION_REASON) or "it has no gate decision"
        raise RegistryError(f"{name} v{version} is not awaiting approval (the gate said: "
                            f"{why}); to make it champion anyway use heartflow promote, "
                            "which records that it skipped the gate")
    with registry_lock(name):
        previous = alias_version(name, N.CHAMPION)
        _make_champion(name, version, previous)
    record(name, version, None, {
        N.promotion("awaiting_approval"): "False", N.PROMOTED: "True",
        N.APPROVED_BY: current_user(), N.APPROVED_AT: time.strftime("%Y-%m-%dT%H:%M:%S"),
        N.APPROVAL_REASON: reason or "(no reason given)"})
    return previous
