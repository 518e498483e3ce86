"""Which weights of a layer an int8 export quantizes, and over which axes one scale spans."""

import keras

from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers.depthwise_cond_conv2d import DepthwiseCondConv2D

_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def quantized_weights(layer):
    """`{id(variable): reduce_axes}` for the filters of `layer` and its sublayers.

    A filter is a trainable weight of rank 2 or more (biases, normalization
    parameters and scalars stay float or int32 in the export). Its channels
    are the output channels of the op the exporter writes for it: the last
    axis, and for depthwise filters the last two (TFLite's depthwise filter
    is `(1, h, w, in * multiplier)`); a dynamic convolution's expert kernels
    `(K, h, w, in, out)` are K separate filters in the int8 export (its
    `mix_outputs` form), so the expert axis is a channel axis too.
    """
    axes = {}
    for sublayer in _layers_within(layer):
        for variable in sublayer._trainable_variables:
            if len(variable.shape) >= 2 and id(variable) not in axes:
                axes[id(variable)] = _reduce_axes(sublayer, variable)
    return axes


def _layers_within(layer):
    # `_flatten_layers` yields the layer itself, then its tracked sublayers.
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _reduce_axes(layer, variable):
    rank = len(variable.shape)
    channel_axes = {rank - 1}
    is_expert_kernel = isinstance(layer, DynamicConvBase) and variable is layer.kernel
    if is_expert_kernel:
        channel_axes.add(0)
    if isinstance(layer, _DEPTHWISE) or (is_expert_kernel and isinstance(layer, DepthwiseCondConv2D)):
        channel_axes.add(rank - 2)
    return tuple(axis for axis in range(rank) if axis not in channel_axes)
