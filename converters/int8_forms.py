"""The forms an int8 export gives ops that XNNPACK runs in float but not in int8.

XNNPACK (LiteRT's CPU delegate) has no int8 kernel for AVERAGE_POOL_2D: in an
int8 file it runs on TFLite's reference kernel, splits the stage's delegate
partition and is slower than in float32 (0.4x; BENCHMARKS.md "Where the int8
first stage loses"). While an int8 export converts, `forms_applied` writes an
`EarlyExit`'s grid pooling as a depthwise convolution of constant weights
1 / pool area (`EarlyExit.grid_pool_form`): the same values (1/area is exact
on the per-channel int8 grid of a constant filter), on XNNPACK. A Keras
`AveragePooling2D` with VALID padding (the resolution-adaptive CNN's
downsampling, the glance of Glance and Focus) becomes the same convolution
(`pools_taken`).

HARD_SWISH has no int8 XNNPACK kernel either (8x slower than float32 on a
32x32x32 feature map). No int8 form replaces it: written as
``(x / 6) * relu6(x + 3)`` it runs on XNNPACK, 5x faster, but rounds three
int8 tensors instead of one, and a MobileNet-style network's final exit then
left the int8 parity tolerance (0.173 of the exit's scale against 0.15).
``export_stages(..., keep_float="hard_swish")`` leaves it in float32
instead, on XNNPACK, rounding once (`keras_dynamic.converters.keep_float`).

Float exports keep the plain ops, which XNNPACK runs as fast.
"""

from __future__ import annotations

import contextlib
import functools

import keras

from keras_dynamic.layers._sublayers import attribute_set
from keras_dynamic.layers._sublayers import sublayers
from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.early_exit import depthwise_average


# `EarlyExit.grid_pool_form` in int8 exports (float exports keep the layer's own).
INT8_POOL_FORM = "depthwise_conv"


@contextlib.contextmanager
def forms_applied(model, quantize=None):
    """Gives `model`'s layers the forms of an export with `quantize` for the block.

    A no-op unless ``quantize == "int8"``. Every layer's own form is
    restored when the block ends, also on error.
    """
    if quantize != "int8":
        yield
        return
    with attribute_set(
        sublayers(model, EarlyExit), "grid_pool_form", INT8_POOL_FORM
    ), _average_pools_as_depthwise(model):
        yield


def pools_taken(model):
    """The Keras `AveragePooling2D` layers an int8 export writes as depthwise convolutions.

    Those with VALID padding and channels-last data: there every window holds
    ``pool area`` values, so the average is a depthwise convolution with
    constant weights 1 / area. A SAME-padded window at the border averages
    fewer values, which such a convolution would not; those stay pools.
    """
    return [
        layer
        for layer in sublayers(model, keras.layers.AveragePooling2D)
        if layer.padding == "valid" and layer.data_format == "channels_last"
    ]


@contextlib.contextmanager
def _average_pools_as_depthwise(model):
    layers = pools_taken(model)
    try:
        for layer in layers:
            # An instance attribute: Keras calls `self.call`, and deleting it
            # gives the class's own back.
            layer.call = functools.partial(
                depthwise_average,
                pool=tuple(layer.pool_size),
                strides=tuple(layer.strides),
            )
        yield
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call
