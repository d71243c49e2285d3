"""Prefect flows composing heartflow's steps; installed as ``heartflow.pipelines``."""
