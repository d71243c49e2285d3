"""Model revision of a binary network: the output layer re-estimated on a site's rows on top of
the frozen hidden layers (Vergouwe et al., Stat Med 2017;36:4529, "model revision", adapted to
a network).

A binary network ends in one sigmoid unit: p = sigmoid(w . h + c), where h is what the output
layer reads: the last hidden layer's activations (after its dropout, which is the identity when
scoring), or the encoded inputs for a network without hidden layers. Revision refits (w, c)
as a logistic regression of the site's outcomes on h (:mod:`heartflow.evaluation.updating`),
and :func:`revised_network` builds the network that scores with them: the same architecture,
the same hidden weights, the new output kernel and bias. Because logit(p) is linear in h,
revision nests recalibration (a + b logit(p)), so likelihood-ratio tests between them hold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OUTPUT_LAYER = "output"  # the name heartflow.model.builder gives the output Dense layer


def output_layer(network: Any) -> Any:
    """The network's output Dense layer; a ValueError unless it is one sigmoid unit."""
    names = [layer.name for layer in network.layers]
    layer = network.get_layer(OUTPUT_LAYER) if OUTPUT_LAYER in names else network.layers[-1]
    units = getattr(layer, "units", None)
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if units != 1 or activation != "sigmoid" or not getattr(layer, "use_bias", False):
        raise ValueError(f"revision re-estimates a binary network's output layer (one sigmoid "
                         f"unit with a bias); this network ends in {units} unit(s) with "
                         f"activation {activation or '?'}")
    return layer


def output_inputs(network: Any, x: np.ndarray) -> np.ndarray:
    """What the output layer reads for an encoded matrix ``x`` (float64, rows by width): the
    last hidden layer's activations, or ``x`` itself when there is no hidden layer."""
    import keras  # lazy: TensorFlow's 4 s import, only when a network is at hand

    layer = output_layer(network)
    if any(layer.input is t for t in network.inputs):
        return np.asarray(x, dtype=np.float64)
    features = keras.Model(network.input, layer.input)
    return np.asarray(features(np.asarray(x, dtype=np.float32), training=False),
                      dtype=np.float64)


def revised_network(network: Any, kernel: np.ndarray, bias: float) -> Any:
    """A new network identical to ``network`` (architecture and hidden weights) whose output
    layer has ``kernel`` (one weight per column of :func:`output_inputs`) and ``bias``. The
    source network is left untouched."""
    import keras  # lazy: TensorFlow

    layer = output_layer(network)
    width = int(layer.kernel.shape[0])
    kernel = np.asarray(kernel, dtype=np.float64).reshape(-1)
    if kernel.shape[0] != width:
        raise ValueError(f"the output layer reads {width} values; got {kernel.shape[0]} weights")
    revised = keras.models.clone_model(network)
    revised.set_weights(network.get_weights())
    revised.get_layer(layer.name).set_weights([
        kernel.reshape(width, 1).astype(np.float32), np.array([bias], dtype=np.float32)])
    return revised
