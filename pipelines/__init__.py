"""The Prefect flows: every job a user starts is one flow here, composed of library steps;
installed as ``heartflow.pipelines``.

- ``training.py``: ``heartflow run`` / ``hf.run`` (preprocess -> train -> threshold ->
  evaluate -> CV -> baselines -> register -> promotion gate -> card); ``promotion.py``
  is its gate step
- ``sweep.py``, ``trials.py``, ``sweep_pool.py``, ``sweep_workers.py``: ``heartflow sweep``
- ``site_evaluation.py``: ``heartflow evaluate``; ``recalibration.py``:
  ``heartflow recalibrate``; ``model_card.py``: ``heartflow card``
- ``monitoring.py``: ``heartflow monitor``; ``updating.py``: ``heartflow update``
- ``retraining.py``: scheduled retraining by evidence on Prefect workers;
  ``deployments.py``: create, list and remove those deployments
- ``results.py``: what flows return; ``specs.py``: loading a spec to run it;
  ``task_options.py``: task retries and caching

Flows hold composition, task boundaries and retries only; every step's logic lives below
(``heartflow.evaluation``, ``heartflow.tracking``, ``heartflow.model``, ``heartflow.data``).
"""
