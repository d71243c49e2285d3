"""The Prefect flows that compose heartflow's steps; installed as ``heartflow.pipelines``.

- ``training.py``: ``heartflow run`` / ``hf.run`` (preprocess -> train -> evaluate -> register)
- ``sweep.py``: ``heartflow sweep`` / ``hf.sweep`` (trials in worker processes)
- ``retraining.py``: scheduled retraining on Prefect workers
- ``deployments.py``: create, list and remove those deployments

Flows hold task boundaries, retries and composition only; every step's logic lives in
the ``heartflow`` library.
"""
