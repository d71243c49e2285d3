"""The example notebook runs top to bottom in a real Jupyter kernel (nbclient), the README's way.

The README starts Jupyter at the repository root with ``HEARTFLOW_DATA_DIR=../shared/data``;
the kernel then runs in ``examples/``. The test does exactly that in a copy of the repository's
layout (``pyproject.toml``, ``specs/``, ``examples/`` and ``../shared/data`` beside it) under a
temporary folder, with no ``MLFLOW_TRACKING_URI`` in the kernel's environment: heartflow's
project-root rule must then put the store at the copy's root (where ``heartflow ui`` at the
repository root would look), and the real repository's store is never written.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "examples" / "heart_disease.ipynb"


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def _repository_copy(tmp_path: Path, data: Path) -> Path:
    """``tmp/repo`` laid out as a clone (its root marked by pyproject.toml), with
    ``tmp/shared/data`` beside it, as the README's ``../shared/data`` expects."""
    repo = tmp_path / "repo"
    (repo / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    shutil.copytree(ROOT / "specs", repo / "specs")
    shutil.copy(NOTEBOOK, repo / "examples" / NOTEBOOK.name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data, target_is_directory=True)
    return repo


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return data.get("text/plain", "") + data.get("text/html", "")


@pytest.mark.slow
@pytest.mark.realdata
def test_notebook_executes_the_readme_way(tmp_path: Path, shared_data: Path,
                                          prefect_server) -> None:
    from mlflow import MlflowClient
    from nbclient import NotebookClient

    repo = _repository_copy(tmp_path, shared_data)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HEARTFLOW_PROJECT_DIR",
                        "HEARTFLOW_SPECS")}
    env["HEARTFLOW_DATA_DIR"] = "../shared/data"  # as typed at the repository root
    nb = nbformat.read(repo / "examples" / NOTEBOOK.name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(repo / "examples")}})
    client.execute(env=env)

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr
    images = sum(_text(o).count("<img src='data:image/png;base64,") for o in outputs)
    assert images >= 8  # a run's plots, the comparison, overfitting, confusion matrices, a site
    text = "".join(_text(o) for o in outputs)

    # The store is the project root's, where `heartflow ui` at the repository root looks.
    assert (repo / "mlflow.db").is_file() and (repo / "mlruns").is_dir()
    assert not (repo / "examples" / "mlflow.db").exists()
    assert not (repo / "examples" / "mlruns").exists()
    assert f"sqlite:///{repo / 'mlflow.db'}" in text
    assert f"resolved against the project root {repo}" in text

    # The lecture's numbers: parameters counted by hand (29 inputs, u units, 1 output).
    assert "heartflow run: heart_16" in text and "ranked by roc_auc" in text
    for units in (4, 8, 16):
        assert re.search(rf"\b{29 * units + units + units + 1}\b", text)
    assert re.search(r"\b30\b", text)  # logistic regression: 29 weights and a bias
    assert "sample size (Riley" in text and "corrected roc_auc" in text
    assert "confusion_matrix" in text or "confusion matrix" in text
    assert "probability" in text and "imputed" in text
    assert "chosen update:" in text
    store = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = store.search_runs([store.get_experiment_by_name("heart_16").experiment_id])
    networks = sorted(r.data.params.get("model.hidden") == "[]" for r in runs
                      if "heartflow.baseline" not in r.data.tags)
    assert networks == [False] * 3 + [True]
    monitored = store.get_experiment_by_name("uci-cleveland-monitoring")
    assert monitored is not None and len(store.search_runs([monitored.experiment_id])) == 3
