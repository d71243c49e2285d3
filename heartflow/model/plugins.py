"""Plugin modules: the user's own code (custom activations), imported only on request.

A spec never imports code. A user opts in with ``--plugin MODULE`` (CLI) or
``plugins=[...]`` (API); the module calls
:func:`heartflow.model.activations.register_activation`. A model trained with a plugin
activation records the module and ships its file with the logged model, so ``predict``
and ``mlflow models serve`` load it too.
"""

from __future__ import annotations

import importlib
import os
import sys

from heartflow.errors import HeartflowError


def load_plugins(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Import each named module (the working folder is searched too); returns the names."""
    names = list(names or [])
    if names and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise HeartflowError(f"cannot import plugin {name!r}: {exc}. Give an importable "
                                 "module name (a file my_acts.py in the working folder is "
                                 "'my_acts')") from None
    return names


def plugin_code_paths(modules: list[str]) -> list[str]:
    """Files (or package folders) of plugin modules, to ship with a logged model."""
    paths = []
    for name in modules:
        module = sys.modules.get(name) or importlib.import_module(name)
        file = getattr(module, "__file__", None)
        if not file:
            continue
        if os.path.basename(file) == "__init__.py":
            file = os.path.dirname(file)
        paths.append(os.path.abspath(file))
    return paths
