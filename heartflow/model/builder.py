"""Compile a spec's model section into a Keras 3 network."""

from __future__ import annotations

from heartflow.spec.schema import Spec


def count_parameters(spec: Spec, input_width: int) -> int:
    """Trainable parameters of the network, computed without TensorFlow."""
    total, width = 0, input_width
    for layer in spec.model.hidden:
        total += width * layer.units + layer.units
        width = layer.units
    return total + width * spec.model.output.units + spec.model.output.units


def layer_table(spec: Spec, input_width: int) -> list[dict[str, object]]:
    """One row per layer: name, shape, activation, parameters (for `heartflow show`)."""
    rows: list[dict[str, object]] = [{"layer": "input", "units": input_width,
                                      "activation": "", "initializer": "", "params": 0}]
    width = input_width
    for i, layer in enumerate(spec.model.hidden, start=1):
        extra = []
        if layer.dropout:
            extra.append(f"dropout {layer.dropout}")
        if layer.l2:
            extra.append(f"l2 {layer.l2}")
        rows.append({"layer": f"hidden_{i}" + (f" ({', '.join(extra)})" if extra else ""),
                     "units": layer.units, "activation": layer.activation,
                     "initializer": layer.initializer,
                     "params": width * layer.units + layer.units})
        width = layer.units
    out = spec.model.output
    rows.append({"layer": "output", "units": out.units, "activation": out.activation,
                 "initializer": out.initializer, "params": width * out.units + out.units})
    return rows


def build_model(spec: Spec, input_width: int):
    """A functional Keras model: Input(width) -> hidden Dense layers -> output Dense."""
    # lazy: TensorFlow's 4 s import, only when a model is built or trained
    import keras

    # lazy: registers Keras activations (imports Keras)
    from heartflow.model.activations import resolve

    inputs = keras.Input(shape=(input_width,), name="features")
    x = inputs
    for i, layer in enumerate(spec.model.hidden, start=1):
        regularizer = keras.regularizers.L2(layer.l2) if layer.l2 else None
        x = keras.layers.Dense(layer.units, activation=resolve(layer.activation),
                               kernel_initializer=layer.initializer,
                               kernel_regularizer=regularizer, name=f"hidden_{i}")(x)
        if layer.dropout:
            x = keras.layers.Dropout(layer.dropout, name=f"dropout_{i}")(x)
    out = spec.model.output
    outputs = keras.layers.Dense(out.units, activation=out.activation,
                                 kernel_initializer=out.initializer, name="output",
                                 dtype="float32")(x)
    return keras.Model(inputs, outputs, name=spec.name.replace(".", "_"))
