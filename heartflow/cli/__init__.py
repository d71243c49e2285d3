"""The `heartflow` command: a thin layer over :mod:`heartflow.api`."""

from heartflow.cli.app import main

__all__ = ["main"]
