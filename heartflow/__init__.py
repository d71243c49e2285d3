"""heartflow: declarative neural networks for tabular data.

```python
import heartflow as hf

result = hf.run("specs/heart_16.yaml")          # train, evaluate, register
model = hf.load_model(result.model_uri)
model.predict(hf.read_records("patients.csv"))
hf.versions("heart-disease")                    # the registry
```

The public API lives in :mod:`heartflow.api` and is re-exported here lazily, so
``import heartflow`` stays free of TensorFlow, MLflow and Prefect. The package is laid
out by concern, each layer importing only the ones below it
(cli -> api -> pipelines -> tracking -> evaluation -> model -> data -> spec -> runtime,
errors; ``tests/test_layers.py`` checks it):

- ``cli/``: the `heartflow` command, over ``api.py`` only (its tables in ``console.py``)
- ``api.py``: the Python API (specs, runs, sweeps, models, the registry, deployments, UI)
- ``pipelines/`` (installed as ``heartflow.pipelines``): the Prefect flows (training,
  sweeps, site evaluation, recalibration, model cards, scheduled retraining)
- ``tracking/``: MLflow (the store, runs, the logged model, the registry, comparisons)
- ``evaluation/``: how a model is judged (metrics, intervals, clinical figures, subgroups,
  the promotion gate, ranking, plots, reports, text tables)
- ``model/``: the network, its training, its scorer and metadata (``ModelMeta``)
- ``data/``: sources, tables, the split, the encoder, in-memory and streamed batches
- ``spec/``: the YAML spec, validated (no TensorFlow)
- ``runtime/``, ``errors.py``: process helpers (quiet imports, the local Prefect server,
  exits); heartflow's exceptions and their exit codes
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Model", "approve", "compare", "configure", "deploy", "deployments", "evaluate",
           "figures", "load_model", "load_spec", "load_sweep", "model_card", "monitor",
           "promote", "read_records", "recalibrate", "rollback", "run", "runs_page", "show",
           "spec_schema", "stale_runs", "start_ui", "sweep", "tracking_store", "undeploy",
           "update", "versions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from heartflow import api  # lazy: `import heartflow` stays cheap until first use

        return getattr(api, name)
    raise AttributeError(f"module 'heartflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
