"""Force every gate of a model on or off, e.g. to measure the all-on network."""

import contextlib

from keras_dynamic.layers._gate import FORCE_VALUES
from keras_dynamic.layers._gate import GateBase
from keras_dynamic.layers._sublayers import attribute_set
from keras_dynamic.layers._sublayers import sublayers


@contextlib.contextmanager
def force_gates(model, value):
    """Temporarily sets `force` on every `BlockGate` and `ChannelGate`.

    Walks `model` recursively (nested models and layers inside custom
    layers), sets `force=value` on each gate and restores each gate's own
    setting on exit, also when the body raises. The setting is read when the
    layer is called, so predict, trace or convert inside the block. The
    functions that `fit`, `evaluate` and `predict` of `model` traced before
    are dropped on entry and on exit, so they are traced again with the
    setting in force.

    Args:
        model: a Keras model or layer.
        value: `"on"` (every gate outputs 1), `"off"` (0) or `None` (decide).

    Yields:
        The list of gate layers that were set (empty when there are none).

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> inputs = keras.Input((4,))
    >>> gate = kd.layers.BlockGate(name="gate")(inputs)
    >>> model = keras.Model(inputs, gate)
    >>> with kd.layers.force_gates(model, "off"):
    ...     model.predict(np.ones((2, 4)), verbose=0).tolist()
    [[0.0], [0.0]]
    >>> model.get_layer("gate").force is None
    True
    """
    if value not in FORCE_VALUES:
        raise ValueError(
            f"`value` must be one of {FORCE_VALUES}. Received: value={value!r}"
        )
    gates = sublayers(model, GateBase)
    try:
        with attribute_set(gates, "force", value):
            _drop_traced_functions(model)
            yield gates
    finally:
        _drop_traced_functions(model)


def _drop_traced_functions(model):
    # Keras traces these once and caches them on the model; a cached one
    # would keep the gate setting it was traced with.
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
