"""How the exits' grid pooling is written in an export.

XNNPACK runs int8 DEPTHWISE_CONV_2D but not int8 AVERAGE_POOL_2D: in an int8
stage the pooling of an `EarlyExit` grid head would run on TFLite's
reference kernel and split the stage's delegate partition in two. int8
exports therefore write that pooling as a depthwise convolution with
constant weights 1 / pool area (the same values; 3.4x faster than the int8
pool and on XNNPACK, BENCHMARKS.md "Where the int8 first stage loses").
Float exports keep AVERAGE_POOL_2D, which XNNPACK runs as fast.
"""

from __future__ import annotations

import contextlib

from keras_dynamic.layers.early_exit import EarlyExit


def pool_form(quantize=None):
    """The `EarlyExit.grid_pool_form` an export with `quantize` takes.

    Example:

    >>> from keras_dynamic.converters.exit_pooling import pool_form
    >>> pool_form(None), pool_form("int8")
    ('average_pool', 'depthwise_conv')
    """
    return "depthwise_conv" if quantize == "int8" else "average_pool"


@contextlib.contextmanager
def forms_applied(model, quantize=None):
    """Sets `pool_form(quantize)` on every `EarlyExit` of `model` for the block.

    Each exit's own form is restored when the block ends, also on error.
    """
    # `_flatten_layers` also reaches layers inside nested models and custom
    # layers (see dynamic_conv.dynamic_conv_layers).
    exits = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, EarlyExit)
    ]
    previous = [layer.grid_pool_form for layer in exits]
    try:
        for layer in exits:
            layer.grid_pool_form = pool_form(quantize)
        yield
    finally:
        for layer, old in zip(exits, previous):
            layer.grid_pool_form = old
