"""The Python API: import cost, specs from dicts, runs on DataFrames, softmax and regression
end to end, plugins that travel with the model, and which failures count as transient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartflow.errors import SpecError
from tests.conftest import ROOT, cli, heart_csv, heart_spec


def test_import_heartflow_loads_no_heavy_framework() -> None:
    """Importing the package, every public name and the command imports no framework."""
    code = ("import sys, heartflow as hf, heartflow.cli.app; "
            "[getattr(hf, name) for name in hf.__all__]; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'prefect', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_function_documents_its_args_returns_and_an_example() -> None:
    """Keras' API style: a summary line, ``Args:`` for every parameter, ``Returns:`` unless
    it returns None, and an ``Example:`` (read from the signatures, not from heartflow)."""
    import inspect

    import heartflow as hf

    functions = {name: getattr(hf, name) for name in hf.__all__
                 if inspect.isfunction(getattr(hf, name))}
    methods = {f"Model.{name}": getattr(hf.Model, name) for name in ("predict", "check")}
    assert {"versions", "promote", "rollback", "deploy", "deployments", "undeploy",
            "stale_runs", "show", "read_records", "start_ui"} <= set(functions)
    missing = []
    for name, fn in {**functions, **methods}.items():
        doc = inspect.getdoc(fn) or ""
        signature = inspect.signature(fn)
        params = [p for p in signature.parameters if p != "self"]
        if "Example:" not in doc or "```python" not in doc:
            missing.append(f"{name}: no example")
        if params and "Args:" not in doc:
            missing.append(f"{name}: no Args")
        missing += [f"{name}: argument {p} undocumented" for p in params
                    if f"    {p}:" not in doc]
        if signature.return_annotation not in ("None", None) and "Returns:" not in doc:
            missing.append(f"{name}: no Returns")
    assert not missing, "\n".join(missing)


def test_load_spec_from_dict_with_overrides(tmp_path: Path) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=60)
    base = {"name": "d", "data": {"source": str(tmp_path / "heart.csv"), "target": "target",
                                  "features": {"numeric": ["age"], "categorical": ["cp"]}},
            "model": {"hidden": [{"units": 16}]}}
    loaded = hf.load_spec(base, overrides={"model.hidden.0.units": 0})
    assert loaded.spec.model.hidden == []
    with pytest.raises(SpecError, match=r"<dict>:\d+:\d+: model.hidden.0.units"):
        hf.load_spec(base, overrides={"model.hidden.0.units": -3})
    with pytest.raises(SpecError, match=r"data\.source: data file"):
        hf.load_spec({**base, "data": {**base["data"], "source": "nope.csv"}})


def _labels(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(["a", "b", "c"], n)
    frame = pd.DataFrame({"x1": x1.round(3), "x2": x2.round(3), "group": group})
    return frame, rng.normal(size=n)


@pytest.mark.slow
def test_softmax_run_on_a_dataframe_then_predict(prefect_server) -> None:
    import heartflow as hf

    frame, _noise = _labels(600, seed=1)
    frame["kind"] = np.where(frame.x1 > 0.5, "high", np.where(frame.x1 < -0.5, "low", "mid"))
    spec = {"name": "softmax-df", "data": {"source": "rows.csv", "target": "kind",
                                           "features": {"numeric": ["x1", "x2"],
                                                        "categorical": ["group"]}},
            "model": {"hidden": [{"units": 16}], "output": {"units": 3,
                                                             "activation": "softmax"}},
            "train": {"loss": "categorical_crossentropy", "epochs": 60, "batch_size": 32,
                      "optimizer": {"learning_rate": 0.02}},
            "register": {"model_name": "softmax-df"}}
    (Path.cwd() / "rows.csv").write_text("x1,x2,group,kind\n0,0,a,mid\n")  # source must exist
    result = hf.run(spec, data=frame)
    assert result.version == "1" and result.promoted
    # Every row in one part; the test part binomial around 20% (4 standard deviations).
    assert sum(result.split.values()) == 600
    assert abs(result.split["test"] - 120) <= 4 * (600 * 0.2 * 0.8) ** 0.5
    model = hf.load_model(result.model_uri)
    predicted = model.predict(frame.drop(columns=["kind"]))
    probabilities = predicted[["probability_high", "probability_low", "probability_mid"]]
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    from sklearn.metrics import accuracy_score

    assert accuracy_score(frame["kind"], predicted["prediction"]) > 0.85
    assert "<table>" in result._repr_html_() and "softmax-df v1" in result._repr_html_()


@pytest.mark.slow
def test_regression_run_logs_what_the_loaded_model_scores(tmp_path: Path,
                                                           prefect_server) -> None:
    """test_r2 in MLflow equals scikit-learn's R² of the registered model on the test rows."""
    import heartflow as hf
    from heartflow.data.split import row_keys, split_rows

    frame, noise = _labels(500, seed=2)
    frame["y"] = 3 * frame.x1 - 2 * frame.x2 + (frame.group == "b") + 0.1 * noise
    frame.to_csv(tmp_path / "reg.csv", index=False)
    spec = {"name": "reg", "data": {"source": str(tmp_path / "reg.csv"), "target": "y",
                                    "features": {"numeric": ["x1", "x2"],
                                                 "categorical": ["group"]}},
            "model": {"hidden": [{"units": 16}], "output": {"activation": "linear"}},
            "train": {"loss": "mse", "epochs": 80, "optimizer": {"learning_rate": 0.01}},
            "evaluate": {"metrics": ["rmse", "r2"]}}
    result = hf.run(spec)
    assert result.version == "1"
    loaded = hf.load_spec(spec)
    keys = row_keys(pd.read_csv(tmp_path / "reg.csv", dtype=str, keep_default_na=False))
    test_rows = split_rows(frame["y"].to_numpy(), loaded.spec.data.split, False,
                           keys=keys).test
    model = hf.load_model("models:/reg@champion")
    predicted = model.predict(frame.iloc[test_rows])["prediction"]
    from sklearn.metrics import r2_score

    assert r2_score(frame["y"].iloc[test_rows], predicted) == pytest.approx(
        result.metrics["r2"], abs=1e-5)
    assert result.metrics["r2"] > 0.9
    scored = cli("predict", "models:/reg/1", str(tmp_path / "reg.csv"))
    assert scored.returncode == 0, scored.stderr
    assert "prediction" in scored.stdout.splitlines()[0]


PLUGIN = '''
from keras import ops

from heartflow.model.activations import register_activation


@register_activation("shifted_relu")
def shifted_relu(x):
    return ops.relu(x - 0.1)
'''


@pytest.mark.slow
def test_plugin_activation_travels_with_the_model(tmp_path: Path, prefect_server) -> None:
    train_dir, score_dir = tmp_path / "train", tmp_path / "score"
    train_dir.mkdir()
    score_dir.mkdir()
    (train_dir / "my_acts.py").write_text(PLUGIN)
    heart_csv(train_dir / "heart.csv", rows=200)
    spec = heart_spec(train_dir / "spec.yaml", epochs=3, model_name="plugged")
    spec.write_text(spec.read_text().replace("activation: relu", "activation: shifted_relu"))
    refused = cli("validate", str(spec), cwd=train_dir)
    assert refused.returncode == 2 and "shifted_relu" in refused.stderr
    trained = cli("run", "-q", "--json", "--plugin", "my_acts", str(spec), cwd=train_dir)
    assert trained.returncode == 0, trained.stderr
    uri = json.loads(trained.stdout)["model_name"]
    pd.read_csv(train_dir / "heart.csv").head(5).to_csv(score_dir / "rows.csv", index=False)
    # Another folder, no --plugin: the module's file travelled with the model.
    scored = cli("predict", f"models:/{uri}/1", str(score_dir / "rows.csv"), cwd=score_dir)
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.strip().splitlines()) == 6


def test_transient_failures_are_known_by_type_and_status() -> None:
    import sqlite3

    import requests
    from mlflow.exceptions import MlflowException

    from heartflow.errors import DataError
    from heartflow.tracking.retries import is_transient

    assert not is_transient(ValueError("timeout of 503 seconds is too long"))
    assert not is_transient(DataError("connection refused"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(requests.ConnectionError("no route"))
    try:  # MLflow wraps the network error while handling it
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError:
            raise MlflowException("API request failed") from None
    except MlflowException as wrapped:
        assert not is_transient(wrapped)  # 'from None' hides the cause: not recognisable
    try:
        try:
            raise requests.ConnectionError("refused")
        except requests.ConnectionError:
            raise MlflowException("API request failed")  # noqa: B904 (as MLflow does)
    except MlflowException as wrapped:
        assert is_transient(wrapped)
    unavailable = requests.HTTPError(response=requests.Response())
    unavailable.response.status_code = 503
    missing = requests.HTTPError(response=requests.Response())
    missing.response.status_code = 404
    assert is_transient(unavailable) and not is_transient(missing)
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST))
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("select * from no_such_table")
    except sqlite3.OperationalError as exc:
        assert not is_transient(exc)  # an operational error that is not a lock


def test_sqlite_lock_is_transient(tmp_path: Path) -> None:
    import sqlite3

    from heartflow.tracking.retries import is_database_busy

    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as info:
        other.execute("insert into t values (1)")
    assert is_database_busy(info.value)
    holder.execute("rollback")


def test_fast_exit_runs_other_exit_handlers_and_keeps_the_status(tmp_path: Path) -> None:
    marker = tmp_path / "handler-ran"
    code = f"""
import atexit, sys
from heartflow.runtime import fast_exit
fast_exit.install()
import mlflow  # a heavy framework is loaded: the teardown will be skipped
atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))
print("output before exit", flush=False)
fast_exit.exit_with(3)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3
    assert marker.read_text() == "yes" and "output before exit" in out.stdout


def test_streamed_spec_refuses_what_streaming_cannot_honour(tmp_path: Path) -> None:
    import heartflow as hf

    heart_csv(tmp_path / "heart.csv", rows=60)
    spec = heart_spec(tmp_path / "s.yaml")
    text = spec.read_text().replace("  split:", "  streaming: true\n  split:")
    spec.write_text(text + "evaluate:\n  cv: {folds: 3}\n")
    with pytest.raises(SpecError, match=r"s.yaml:\d+:\d+: evaluate.cv: cross-validation"):
        hf.load_spec(spec)
