"""Loading a spec to run it, in one home: plugins imported first (their activations are
names the spec may use), the YAML validated (file, line and field in every error), dotted
overrides applied, and the data source checked before anything starts.

Used by the API (``hf.load_spec``), sweep trials, retraining and deployments. Imports no
TensorFlow, MLflow or Prefect.
"""

from __future__ import annotations

from typing import Any

from heartflow.data.sources import check_spec_source
from heartflow.model.plugins import load_plugins
from heartflow.spec.loading import LoadedSpec, load_spec_text
from heartflow.spec.yaml_source import read_text


def runnable_spec(text: str | None = None, path: str = "<spec>", *,
                  overrides: dict[str, Any] | None = None,
                  plugins: list[str] | None = None) -> LoadedSpec:
    """A validated spec whose data source exists: from ``text`` (named ``path`` in errors), or
    read from the file at ``path`` when no text is given."""
    load_plugins(plugins)
    loaded = load_spec_text(read_text(path) if text is None else text, path,
                            overrides=dict(overrides) if overrides else None)
    check_spec_source(loaded)
    return loaded
