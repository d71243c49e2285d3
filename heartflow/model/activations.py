"""Custom activations, registered with Keras so saved models reload in safe mode.

Specs may only name activations registered here (or by a plugin module the user
opts into with ``--plugin``); nothing is imported from a spec.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from heartflow.spec.vocabulary import CUSTOM_ACTIVATIONS, register_plugin_activation

_REGISTRY: dict[str, Callable] = {}
_MODULES: dict[str, str] = {}  # activation name -> module that registered it


def register_activation(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` usable as ``activation: name`` in specs."""

    def wrap(fn: Callable) -> Callable:
        fn = keras.saving.register_keras_serializable(package="heartflow", name=name)(fn)
        _REGISTRY[name] = fn
        _MODULES[name] = fn.__module__
        if name not in CUSTOM_ACTIVATIONS:
            register_plugin_activation(name)
        return fn

    return wrap


@register_activation("leaky_relu_01")
def leaky_relu_01(x):
    """Leaky ReLU with slope 0.1 for negative inputs."""
    return ops.leaky_relu(x, negative_slope=0.1)


@register_activation("squareplus")
def squareplus(x):
    """Smooth ReLU-like activation (x + sqrt(x^2 + 4)) / 2."""
    return (x + ops.sqrt(ops.square(x) + 4.0)) / 2.0


def plugin_modules(names: list[str]) -> list[str]:
    """Modules outside heartflow that registered any of the activations ``names``."""
    return sorted({_MODULES[n] for n in names
                   if n in _MODULES and not _MODULES[n].startswith("heartflow.")})


def resolve(name: str) -> str | Callable:
    """The Keras activation for a spec name: a custom function or Keras' own name."""
    return _REGISTRY.get(name, name)
