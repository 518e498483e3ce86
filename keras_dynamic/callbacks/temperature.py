"""`TemperatureScheduler`: the DyConv softmax-temperature annealing."""

from __future__ import annotations

import keras


class TemperatureScheduler(keras.callbacks.Callback):
    """Anneals the `temperature` variable of every layer that has one.

    Dynamic Convolution (Chen et al., CVPR 2020) trains its kernel attention
    with a softmax temperature that falls linearly from 30 to 1 over the first
    10 epochs: near-uniform attention at first lets every kernel learn, and
    the sharp attention at the end is what inference uses. At the start of
    epoch `e` this callback sets

        temperature = start + (end - start) * min(e / epochs, 1)

    on every layer of the model (found recursively, nested models included)
    whose `temperature` attribute is a variable, e.g. `DynamicConv2D`, and
    reports the value in the epoch logs as `"temperature"`.

    Args:
        start: float > 0, the temperature of the first epoch.
        end: float > 0, the temperature from epoch `epochs` on.
        epochs: int >= 1, the number of epochs the annealing takes.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = kd.layers.DynamicConv2D(4, 3)(inputs)
    >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    >>> model.compile("sgd", "mse")
    >>> scheduler = kd.callbacks.TemperatureScheduler(30.0, 1.0, epochs=2)
    >>> history = model.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 4)),
    ...                     epochs=3, verbose=0, callbacks=[scheduler])
    >>> history.history["temperature"]
    [30.0, 15.5, 1.0]

    Reference:
        Chen et al., "Dynamic Convolution: Attention over Convolution
        Kernels", CVPR 2020.
    """

    def __init__(self, start: float = 30.0, end: float = 1.0, epochs: int = 10) -> None:
        super().__init__()
        for arg, value in (("start", start), ("end", end)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    f"TemperatureScheduler: `{arg}` must be a positive "
                    f"number. Received: {arg}={value!r}"
                )
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                "TemperatureScheduler: `epochs` must be a positive int. "
                f"Received: epochs={epochs!r}"
            )
        self.start = float(start)
        self.end = float(end)
        self.epochs = epochs

    def temperature_at(self, epoch: int) -> float:
        """The temperature used during (0-based) `epoch`."""
        return self.start + (self.end - self.start) * min(epoch / self.epochs, 1.0)

    def on_train_begin(self, logs=None):
        # Keras has no public walk that reaches layers nested inside models
        # and custom layers; `_flatten_layers` is the one its own code uses.
        self._variables = [
            layer.temperature
            for layer in self.model._flatten_layers(
                include_self=True, recursive=True
            )
            if isinstance(getattr(layer, "temperature", None), keras.Variable)
        ]
        if not self._variables:
            raise ValueError(
                "TemperatureScheduler: the model has no layer with a "
                "`temperature` variable (e.g. DynamicConv2D); nothing to "
                "anneal."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._current = self.temperature_at(epoch)
        for variable in self._variables:
            variable.assign(self._current)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = self._current

    def get_config(self) -> dict:
        return {"start": self.start, "end": self.end, "epochs": self.epochs}
