"""Prefect flows composing heartflow's steps; installed as ``heartflow.pipelines``."""

import logging


class _HideExplainedErrors(logging.Filter):
    """Drop Prefect's traceback logs for heartflow's own errors: the CLI prints them cleanly."""

    def filter(self, record: logging.LogRecord) -> bool:
        from heartflow.errors import HeartflowError
        from heartflow.tracking import Interrupted
        from heartflow.transient import is_transient

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (HeartflowError, Interrupted, KeyboardInterrupt)):
            return False
        if isinstance(exc, Exception) and is_transient(exc):
            return False
        return "Finished in state Failed" not in record.getMessage()


def hide_explained_errors() -> None:
    """Called by the CLI, which prints heartflow's own errors itself (workers keep the logs)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_HideExplainedErrors())
