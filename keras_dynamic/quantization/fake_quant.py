"""Fake quantization as TFLite's int8 converter quantizes: weights and activations.

Weights: symmetric, per output channel, narrow range [-127, 127], scale
`max|w| / 127` per channel: what the converter writes for CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED filters. Per-channel scales commute with
folding a BatchNormalization into the convolution before it (the fold scales
each output channel), so the weights need no folding to match the export.

Activations: asymmetric, per tensor, 256 levels over a range that holds zero,
through `keras.quantizers.fake_quant_with_min_max_vars` (on TensorFlow the
`FakeQuantWithMinMaxVars` op, with its nudging of the range onto the grid).
"""

import keras
from keras import ops

WEIGHT_LEVELS = 127  # int8 narrow range: -127..127, zero point 0


def fake_quantize_weight(weight, reduce_axes):
    """`weight` rounded to its per-channel int8 grid, with a straight-through gradient.

    Args:
        weight: a float tensor.
        reduce_axes: the axes one scale spans (the filter's input axes); the
            remaining axes are the channels, each with its own scale.

    Returns:
        A tensor of `weight`'s shape and dtype whose values are
        `round(w / scale) * scale`; its gradient is the identity.

    Example:

    >>> import numpy as np
    >>> w = np.array([[0.5, -2.0], [1.0, 1.0]], "float32")
    >>> q = fake_quantize_weight(w, reduce_axes=(0,))
    >>> np.allclose(keras.ops.convert_to_numpy(q), [[0.50394, -2.0], [1.0, 1.00787]], atol=1e-5)
    True
    """
    weight = ops.convert_to_tensor(weight)
    absmax = ops.max(ops.abs(weight), axis=tuple(reduce_axes), keepdims=True)
    scale = ops.stop_gradient(ops.maximum(absmax, 1e-12) / WEIGHT_LEVELS)
    grid = ops.clip(ops.round(weight / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS) * scale
    return weight + ops.stop_gradient(grid - weight)


def fake_quantize_activation(inputs, range_min, range_max):
    """`inputs` on the 256-level grid of `[range_min, range_max]` (int8, per tensor)."""
    return keras.quantizers.fake_quant_with_min_max_vars(
        inputs, range_min, range_max, num_bits=8, narrow_range=False
    )
