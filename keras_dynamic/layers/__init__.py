"""Keras layers of keras-dynamic: exits, gates and dynamic convolutions."""

from keras_dynamic.layers.cond_conv2d import CondConv2D
from keras_dynamic.layers.depthwise_cond_conv2d import DepthwiseCondConv2D
from keras_dynamic.layers.dynamic_conv2d import DynamicConv2D
from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.inference_form import inference_form

__all__ = [
    "CondConv2D",
    "DepthwiseCondConv2D",
    "DynamicConv2D",
    "EarlyExit",
    "inference_form",
]
