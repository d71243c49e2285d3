"""heartflow: declarative neural networks for tabular data.

    import heartflow as hf
    result = hf.run(hf.load_spec("specs/heart_16.yaml"))

The public API lives in :mod:`heartflow.api` and is re-exported here lazily, so
``import heartflow`` stays free of TensorFlow, MLflow and Prefect. The package is laid
out by concern, each layer importing only the ones below it:

- ``cli/``, ``api.py``: the `heartflow` command and the Python API
- ``pipelines/`` (installed as ``heartflow.pipelines``): the Prefect flows
- ``tracking/``: MLflow runs, the logged model, the registry, comparisons
- ``model/``, ``evaluation/``: the network and its training; metrics, plots, CV, baselines
- ``data/``: sources, tables, the split, the encoder, in-memory and streamed batches
- ``spec/``: the YAML spec, validated (no TensorFlow)
- ``runtime/``: process helpers (quiet imports, the local Prefect server, exits)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Model", "compare", "evaluate", "load_model", "load_spec", "load_sweep",
           "model_card", "recalibrate", "run", "sweep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from heartflow import api

        return getattr(api, name)
    raise AttributeError(f"module 'heartflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
