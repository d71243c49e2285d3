"""The example notebook runs top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "examples" / "heart_disease.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
@pytest.mark.realdata
def test_notebook_executes(tmp_path: Path, shared_data: Path, prefect_server) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["HEARTFLOW_SPECS"] = str(ROOT / "specs")
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("HEARTFLOW_SPECS", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "heartflow run: heart_16" in html          # a run's summary table
    assert "ranked by roc_auc" in html                 # hf.compare
    predicted = nb.cells[-1].outputs[0]["data"]["text/plain"]
    assert "probability" in predicted and "prediction" in predicted
    from mlflow import MlflowClient

    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("heart_16").experiment_id])
    assert sorted(r.data.params.get("model.hidden") == "[]" for r in runs) == [False] * 3 + [True]
