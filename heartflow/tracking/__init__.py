"""MLflow: runs (params, tags, metrics, artifacts), the logged model, the registry, comparisons."""
