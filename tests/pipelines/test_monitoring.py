"""The monitoring flow end to end on the real UCI files: a small Cleveland model (trained
once for the module, its reference logged with it), then its own population (no drift),
VA and Switzerland (calibration drift, the variables that moved, the Prefect event), and
bad input (a missing column, an as-of that is not a date) refused before anything is
recorded."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from heartflow.errors import DataError
from heartflow.evaluation.drift import Reference, read_batch
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
MODEL = "uci-cleveland"
URI = f"models:/{MODEL}/1"
KEYS = {"name", "kind", "statistic", "value", "threshold", "drift", "p_value", "reason"}
SPEC_OVERRIDES = {"evaluate.cv": None, "evaluate.subgroups": [], "train.epochs": 40,
                  "train.optimizer.learning_rate": 0.01}


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_data, prefect_server) -> Path:
    """One MLflow store for the module, holding the Cleveland model (v1)."""
    import heartflow as hf

    folder = tmp_path_factory.mktemp("monitoring")
    with pytest.MonkeyPatch.context() as mp:
        _use(mp, folder)
        started = time.perf_counter()
        outcome = hf.run(str(ROOT / "specs/uci_cleveland_16.yaml"), overrides=SPEC_OVERRIDES)
        print(f"trained in {time.perf_counter() - started:.1f} s")
        assert outcome.version == "1"
    return folder


def _use(mp: pytest.MonkeyPatch, folder: Path) -> None:
    mp.chdir(folder)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)


@pytest.fixture(autouse=True)
def isolated_store(store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """(Overrides the per-test store: the tests of this module share the trained model.)"""
    _use(monkeypatch, store)
    return store


def _monitoring_runs() -> list:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(f"{MODEL}-monitoring")
    return [] if experiment is None else client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"])


def _reference() -> Reference:
    import mlflow
    from mlflow import MlflowClient

    run_id = MlflowClient().get_model_version(MODEL, "1").run_id
    return Reference.from_json(mlflow.artifacts.load_text(
        f"runs:/{run_id}/monitoring/reference.json"))


def test_the_reference_is_logged_with_the_model_and_holds_no_rows() -> None:
    reference = _reference()
    assert reference.columns == ["age", "trestbps", "chol", "thalach", "oldpeak", "slope",
                                 "sex", "cp", "fbs", "restecg", "exang", "ca", "thal"]
    dev = reference.development
    assert dev is not None and dev.threshold == pytest.approx(0.25) and dev.rows >= 50
    assert set(dev.figures) == {"roc_auc", "calibration_intercept", "calibration_slope",
                                "brier", "net_benefit@0.25"}
    auc = dev.figures["roc_auc"]
    assert auc.low < auc.value < auc.high
    assert reference.risks is not None and reference.rows == 303 - dev.rows
    assert reference.thresholds["psi"] == 0.2 and reference.thresholds["p_value"] == 0.01
    for ref in reference.numeric:  # no patient row: at most a quantile per 5 rows
        assert len(ref.distribution.knots) <= ref.distribution.rows / 5


def test_the_development_population_reports_no_drift(tmp_path: Path) -> None:
    from heartflow.pipelines.monitoring import monitoring_flow

    report = monitoring_flow(URI, "uci-cleveland", site="cleveland", as_of="2025-01-31",
                             report_path=str(tmp_path / "cleveland.html"))
    shown = [(c.name, c.value, c.p_value) for c in report.checks if c.drift]
    assert not report.drift, shown
    assert report.event_id is None
    data = json.loads(report.to_json())
    assert {"drift", "checks", "model_uri", "version", "site", "rows", "data_sha256",
            "run_id"} <= set(data)
    assert data["drift"] is False and data["rows"] == 303 and data["version"] == "1"
    assert all(set(c) == KEYS for c in data["checks"])
    names = {c["name"] for c in data["checks"]}
    assert {"age.psi", "age.ks", "age.missing", "age.out_of_range", "sex.psi", "risk.psi",
            "risk.ks", "roc_auc", "calibration_intercept", "calibration_slope", "brier",
            "net_benefit@0.25"} <= names
    (run,) = _monitoring_runs()
    assert run.info.run_id == report.run_id and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["heartflow.monitoring.model_name"] == MODEL
    assert tags["heartflow.monitoring.model_version"] == "1"
    assert tags["heartflow.monitoring.site"] == "cleveland"
    assert tags["heartflow.monitoring.as_of"] == "2025-01-31"
    assert tags["heartflow.data_sha256"] == report.data_sha256 and tags["heartflow.rows"] == "303"
    assert run.data.metrics["monitor/risk.psi"] == pytest.approx(report.check("risk.psi").value)
    assert "<h2>Checks</h2>" in (tmp_path / "cleveland.html").read_text()


def test_va_and_switzerland_drift_and_say_what_moved(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from heartflow.pipelines.monitoring import monitoring_flow

    reference = _reference()
    va = monitoring_flow(URI, "uci-va", site="va", as_of="2025-02-28")
    assert va.drift and va.event_id
    shown = repr(va)  # at a prompt: a few lines, the verdict, not the dataclass's fields
    assert len(shown.splitlines()) <= 4 and va.summary() in shown and "checks=" not in shown
    calibration = [c.name for c in va.failed if c.name.startswith("calibration_")]
    assert calibration, [(c.name, c.value, c.reason) for c in va.checks if c.kind ==
                         "performance"]
    assert {"thalach", "age", "ca", "thal"} <= set(va.drifted_variables)
    # The PSI of thalach by hand, from the stored reference and the batch's values.
    thalach = read_batch(_scorer_meta(), "uci-va").features["thalach"].dropna().to_numpy()
    dist = next(r for r in reference.numeric if r.column == "thalach").distribution
    bins = np.array([sum(v > e for e in dist.edges) for v in thalach])
    shares = np.array([np.mean(bins == i) for i in range(len(dist.shares))])
    hand = sum((max(b, 1e-4) - r) * math.log(max(b, 1e-4) / r)
               for b, r in zip(shares, dist.shares, strict=True))
    assert va.check("thalach.psi").value == pytest.approx(hand, rel=1e-9)

    swiss = monitoring_flow(URI, "uci-switzerland", site="switzerland", as_of="2025-03-31",
                            report_path=str(tmp_path / "swiss.html"))
    assert swiss.drift
    assert swiss.check("calibration_intercept").drift, swiss.check("calibration_intercept")
    chol = swiss.check("chol.missing")
    assert chol.drift and chol.value == 1.0 and swiss.check("chol.psi").value is None
    assert {"chol", "thalach", "restecg", "ca", "thal"} <= set(swiss.drifted_variables)
    assert swiss.check("roc_auc").value is None  # 8 rows without disease: too few to judge
    assert "without the outcome" in swiss.check("roc_auc").reason
    page = (tmp_path / "swiss.html").read_text()
    assert "3 so far" in page and page.count("<svg") >= 3
    runs = _monitoring_runs()
    assert [r.data.tags["heartflow.monitoring.site"] for r in runs] == [
        "cleveland", "va", "switzerland"]
    assert runs[-1].data.tags["heartflow.monitoring.drift"] == "true"
    assert "chol.missing" in runs[-1].data.tags["heartflow.monitoring.failed_checks"]
    # The event reached the Prefect server, about the model version, with the batch.
    wanted = EventFilter(event=EventNameFilter(name=["heartflow.model.drift"]))
    found: list = []
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and len(found) < 2:
            found = [e for e in client.read_events(filter=wanted, limit=50).events
                     if str(e.id) in (va.event_id, swiss.event_id)]
            time.sleep(0.5)
    assert len(found) == 2, "drift events not found on the Prefect server"
    event = next(e for e in found if str(e.id) == swiss.event_id)
    assert event.resource.id == "heartflow.model.uci-cleveland.1"
    assert event.payload["batch"]["sha256"] == swiss.data_sha256
    assert event.payload["batch"]["location"].endswith("processed.switzerland.data")
    assert {c["name"] for c in event.payload["failed_checks"]} == {c.name for c in swiss.failed}


def _scorer_meta():
    from heartflow.tracking.logged_model import load_scorer

    return load_scorer(URI).meta


def test_bad_input_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    from heartflow.data.sources import UCI_COLUMNS, resolve_source
    from heartflow.pipelines.monitoring import monitoring_flow

    before = len(_monitoring_runs())
    with pytest.raises(DataError, match="is not a date"):
        monitoring_flow(URI, "uci-va", as_of="2025-13-01")
    raw = resolve_source("uci-va").path.read_text().splitlines()
    header = [c for c in UCI_COLUMNS if c != "oldpeak"]
    keep = [i for i, c in enumerate(UCI_COLUMNS) if c != "oldpeak"]
    rows = [",".join(line.split(",")[i] for i in keep) for line in raw]
    (tmp_path / "no_oldpeak.csv").write_text("\n".join([",".join(header), *rows]) + "\n")
    with pytest.raises(DataError, match="'oldpeak'"):
        monitoring_flow(URI, str(tmp_path / "no_oldpeak.csv"))
    with pytest.raises(OSError):  # the report cannot be written: nothing recorded, no event
        monitoring_flow(URI, "uci-va", report_path=str(tmp_path / "no" / "such" / "r.html"))
    assert len(_monitoring_runs()) == before


def test_a_model_without_a_reference_is_named_with_why() -> None:
    from heartflow.tracking.monitoring import reference_of
    from heartflow.tracking.recorder import tracked_run

    with tracked_run("older-runs", "no reference") as recorder:
        pass
    with pytest.raises(DataError, match="holds no monitoring reference"):
        reference_of(f"runs:/{recorder.run_id}/model")
    with pytest.raises(DataError, match="no such version or alias"):
        reference_of(f"models:/{MODEL}@nobody")


def test_a_batch_read_in_chunks_is_judged_and_scored_like_one_read_whole(tmp_path: Path
                                                                        ) -> None:
    """Large batches are read in chunks (never all cells as text at once); on a small file
    forced through the chunks, the typed rows, outcomes, report and predictions equal the
    whole-file path's."""
    import io

    import pandas as pd

    import heartflow as hf
    from heartflow.data.sources import UCI_COLUMNS, resolve_source
    from heartflow.evaluation.drift import judge_batch
    from heartflow.tracking.logged_model import load_scorer

    scorer = load_scorer(URI)
    whole = read_batch(scorer.meta, "uci-va")
    chunked = read_batch(scorer.meta, "uci-va", chunk_rows=37)  # 200 rows: 6 chunks
    pd.testing.assert_frame_equal(chunked.features, whole.features)
    assert np.array_equal(chunked.y, whole.y, equal_nan=True) and chunked.rows == 200
    reports = [judge_batch(_reference(), b, scorer.output(b.features), scorer.meta.threshold,
                           model_uri=URI, model_name=MODEL, version="1", as_of="2025-01-01")
               for b in (whole, chunked)]
    assert reports[0].as_dict() == reports[1].as_dict()
    # predict: a headed copy of the VA file ('?' cells, chol 0 as missing) in chunks
    raw = resolve_source("uci-va").path.read_text()
    (tmp_path / "va.csv").write_text(",".join(UCI_COLUMNS) + "\n" + raw)
    model = hf.load_model(URI)
    records = hf.read_records(tmp_path / "va.csv")
    expected = records.copy()
    for column, values in model.predict(records).round(6).items():  # CSV: 6 decimals
        expected[column] = values.to_numpy()
    out = io.StringIO()
    check = model.predict_file(tmp_path / "va.csv", out, chunk_rows=37)
    assert out.getvalue() == expected.to_csv(index=False)
    written = pd.read_csv(io.StringIO(out.getvalue()), dtype=str)["probability"]
    assert written.str.split(".").str[-1].str.len().max() <= 6  # not float64's 17 digits
    assert check == model.check(records)
