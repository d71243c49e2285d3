"""The spec: a YAML file validated into typed models (no TensorFlow needed)."""

from heartflow.spec.loading import LoadedSpec, load_spec, load_spec_text
from heartflow.spec.schema import Spec

__all__ = ["LoadedSpec", "Spec", "load_spec", "load_spec_text"]
