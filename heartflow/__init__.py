"""heartflow: declarative neural networks for tabular data.

A YAML spec is validated (``heartflow.spec``), its data read and encoded
(``heartflow.data``, ``heartflow.preprocess``), its network built and trained
(``heartflow.builder``, ``heartflow.train``), judged (``heartflow.evaluate``),
tracked in MLflow (``heartflow.tracking``) and registered (``heartflow.registry``).
Prefect flows composing these steps live in ``heartflow.pipelines``.
"""

__version__ = "0.1.0"
