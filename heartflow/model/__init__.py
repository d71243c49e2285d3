"""The network: spec -> Keras model (builder), activations, training, devices, the scorer."""
