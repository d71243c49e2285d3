"""Prefect task options, each defined once.

Steps that talk to the data source or the tracking server retry transient failures
(network, server briefly down, busy database; see heartflow.tracking.retries) with
backoff, then fail clearly. Training itself is never retried.
"""

from prefect.cache_policies import NO_CACHE

from heartflow.tracking.retries import retry_if_transient

TASK_OPTIONS = {"cache_policy": NO_CACHE, "persist_result": False}
RETRYING = {**TASK_OPTIONS, "retries": 3, "retry_delay_seconds": [1, 3, 6],
            "retry_condition_fn": retry_if_transient}
