"""At a plain Python prompt results print a few lines; ``.table()`` and Jupyter's HTML give the
full view with the plots; a record may leave out values, which are imputed like empty cells."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from heartflow.pipelines.results import Figures, RunOutcome, folder_figures
from tests.conftest import ROOT, heart_csv, heart_spec


def _outcome() -> RunOutcome:
    rng = np.random.default_rng(0)
    return RunOutcome(
        spec_name="heart_16", run_id="0123456789abcdef", experiment_id="1", input_width=29,
        parameters=497, metrics={"roc_auc": 0.9012, "accuracy": 0.8197}, test_rows=61,
        split={"train": 181, "validation": 61, "test": 61}, epochs_run=72, best_epoch=62,
        train_seconds=1.5, epochs_planned=100, model_name="heart-disease", version="3",
        promoted=True, decision="better", intervals={"roc_auc": [0.8123, 0.9634],
                                                     "accuracy": [0.72, 0.91]},
        validation={"roc_auc": 0.9385}, validation_rows=61,
        cv={"roc_auc": [0.9071, 0.0213]}, cv_folds=25,
        cv_scores={"roc_auc": list(rng.uniform(0.85, 0.95, 25))})


def test_run_outcome_prints_a_few_lines_and_its_table_in_full() -> None:
    outcome = _outcome()
    short = repr(outcome)
    assert len(short.splitlines()) <= 5 and len(short) < 600
    assert len(repr(outcome.as_dict())) > 3 * len(short)  # what a dataclass repr would print
    assert "heart_16" in short and "497 parameters" in short
    assert "validation roc_auc 0.9385" in short and "0.9012 [0.8123, 0.9634]" in short
    assert "heart-disease v3 (champion)" in short and ".table()" in short
    full = outcome.table()
    assert "test accuracy" in full and "0.8197" in full and "CV roc_auc" in full
    assert str(outcome) == short  # print(result) shows the short form


def test_spec_prints_a_few_lines_and_its_table_is_the_resolved_yaml() -> None:
    import heartflow as hf

    spec = hf.load_spec(ROOT / "specs" / "heart_16.yaml",
                        overrides={"model.hidden.0.units": 8})
    short = repr(spec)
    assert len(short.splitlines()) <= 4 and len(short) < 400 < len(spec.text)
    assert "heart_16" in short and "8 relu" in short
    resolved = yaml.safe_load(spec.table())
    assert resolved["model"]["hidden"][0]["units"] == 8
    assert resolved["train"]["epochs"] == yaml.safe_load(spec.text)["train"]["epochs"]
    assert "<pre>" in spec._repr_html_()


def _png(path: Path) -> bytes:
    from heartflow.evaluation.plots import learning_curves

    learning_curves({"loss": [0.7, 0.5, 0.4], "val_loss": [0.7, 0.6, 0.65]}, str(path))
    return path.read_bytes()


def test_figures_embed_the_png_files_themselves(tmp_path: Path) -> None:
    png = _png(tmp_path / "learning_curves.png")
    figures = folder_figures(tmp_path, "a run")
    page = figures._repr_html_()
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert [base64.b64decode(e) for e in embedded] == [png]
    assert "learning_curves" in repr(figures) and len(repr(figures).splitlines()) == 1
    assert figures.only("roc_curve").images == {}
    saved = figures.save(tmp_path / "out")
    assert [p.read_bytes() for p in saved] == [png]
    assert "no figures" in Figures({}, "x", "nothing drawn")._repr_html_()


def test_comparison_prints_its_leader_and_draws_the_metric_against_what_varies() -> None:
    from heartflow.api import Comparison

    rows = [{"run": f"units-{u}", "run_id": f"id{u}", "status": "FINISHED", "kind": "network",
             "model.hidden.0.units": str(u), "cv_roc_auc": cv, "cv_roc_auc_ci95": 0.02,
             "validation_roc_auc": cv + 0.01, "test_roc_auc": cv - 0.01,
             "test_roc_auc_ci": (cv - 0.08, cv + 0.06), "test_rows": "61"}
            for u, cv in [(8, 0.91), (0, 0.905), (4, 0.90), (16, 0.89)]]
    comparison = Comparison(rows, "roc_auc", ["model.hidden.0.units"])
    short = repr(comparison)
    assert len(short.splitlines()) <= 4
    assert "4 runs" in short and "units-8" in short and "0.9100" in short
    drawn = comparison.figures()
    assert list(drawn.images) == ["sweep_model_hidden_0_units"]
    assert next(iter(drawn.images.values())).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<img" in comparison._repr_html_()
    same = Comparison([{**r, "model.hidden.0.units": "8"} for r in rows], "roc_auc",
                      ["model.hidden.0.units"])
    assert same.figures().images == {} and "varies" in same.figures().why_none


@pytest.fixture(scope="module")
def model(tmp_path_factory, prefect_server):
    import heartflow as hf

    folder = tmp_path_factory.mktemp("partial")
    heart_csv(folder / "heart.csv", rows=200)
    spec = heart_spec(folder / "spec.yaml", epochs=3, model_name="partial-records")
    store = f"sqlite:///{folder}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        result = hf.run(spec)
        loaded = hf.load_model(f"runs:/{result.run_id}/model")
    return loaded, pd.read_csv(folder / "heart.csv").head(1)


def test_a_record_may_leave_out_values_like_empty_cells(model) -> None:
    from heartflow.errors import DataError

    loaded, first = model
    record = {k: v for k, v in first.iloc[0].to_dict().items() if k in loaded.columns}
    partial = {k: v for k, v in record.items() if k not in ("chol", "thal")}
    blank = {**record, "chol": "", "thal": ""}
    left_out, empty = loaded.predict(partial), loaded.predict(blank)
    pd.testing.assert_frame_equal(left_out, empty)
    assert int(left_out["imputed"].iloc[0]) == 2
    assert loaded.check(partial).imputed_cells == 2
    with pytest.raises(DataError, match="'thalch' \\(did you mean 'thalach'\\?\\)"):
        loaded.predict({**{k: v for k, v in record.items() if k != "thalach"}, "thalch": 150})
    with pytest.raises(DataError, match="missing required column"):
        loaded.predict(pd.DataFrame([partial]))  # a table must hold every column
