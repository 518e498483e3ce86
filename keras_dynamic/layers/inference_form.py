"""Switch the inference form of every dynamic convolution in a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from keras_dynamic.layers._dynamic_conv_base import INFERENCE_FORMS
from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers._sublayers import attribute_set
from keras_dynamic.layers._sublayers import sublayers


@contextlib.contextmanager
def inference_form(
    model: keras.layers.Layer, form: str
) -> Iterator[list[keras.layers.Layer]]:
    """Temporarily sets `inference_form` on every dynamic-conv layer of `model`.

    Walks `model` recursively (nested models and layers inside custom
    layers), sets `form` on each `CondConv2D`, `DepthwiseCondConv2D` and
    `DynamicConv2D`, and restores each layer's own form on exit, also when the
    body raises. The form is read when the layer is called, so trace or
    convert inside the block.

    Args:
        model: a Keras model or layer.
        form: `"mix_outputs"` (K static convolutions, outputs mixed; every
            filter is a constant, so XNNPACK and delegates run it, at any
            batch), `"mix_kernels"` (one convolution with a per-example
            mixed kernel; fewest MACs, but the filter is a runtime tensor)
            or `"patch_matmul"` (the mixed kernel times image patches in a
            batched matmul that XNNPACK runs; any batch).

    Yields:
        The list of layers whose form was set (empty when there are none).

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, kd.layers.CondConv2D(4, 3)(inputs))
    >>> with kd.layers.inference_form(model, "mix_kernels") as layers:
    ...     [layer.inference_form for layer in layers]
    ['mix_kernels']
    >>> model.layers[1].inference_form
    'mix_outputs'
    """
    if form not in INFERENCE_FORMS:
        raise ValueError(
            f"`form` must be one of {INFERENCE_FORMS}. Received: form={form!r}"
        )
    with attribute_set(sublayers(model, DynamicConvBase), "inference_form", form) as layers:
        yield layers
