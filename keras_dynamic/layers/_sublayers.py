"""Finding layers anywhere inside a model, and setting an attribute on them for a while."""

from __future__ import annotations

import contextlib


def sublayers(model, layer_type):
    """Every layer of `layer_type` inside `model` (itself, nested models and
    layers held by custom layers included), in Keras's walk order."""
    # Keras has no public walk that, unlike `model.layers`, also reaches
    # layers held inside custom layers; `_flatten_layers` is the one its own
    # code uses.
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, layer_type)
    ]


@contextlib.contextmanager
def attribute_set(layers, name, value):
    """Sets ``layer.<name> = value`` on every layer for the block; yields `layers`.

    Each layer's own value is restored when the block ends, also when the
    body raises.
    """
    previous = [getattr(layer, name) for layer in layers]
    try:
        for layer in layers:
            setattr(layer, name, value)
        yield layers
    finally:
        for layer, old in zip(layers, previous):
            setattr(layer, name, old)
