"""Keras layers of keras-dynamic: exits, gates and dynamic convolutions."""

# Keras before any module of this package: importing Keras runs the hook
# that registers keras_dynamic's serializables (keras_dynamic/__init__.py),
# which imports the sibling packages; they must not meet a half-imported
# module of this one.
import keras  # noqa: F401

from keras_dynamic.layers.block_gate import BlockGate
from keras_dynamic.layers.channel_gate import ChannelGate
from keras_dynamic.layers.cond_conv2d import CondConv2D
from keras_dynamic.layers.depthwise_cond_conv2d import DepthwiseCondConv2D
from keras_dynamic.layers.dynamic_conv2d import DynamicConv2D
from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.force_gates import force_gates
from keras_dynamic.layers.gated_concat import GatedConcat
from keras_dynamic.layers.gated_residual import GatedResidual
from keras_dynamic.layers.inference_form import inference_form
from keras_dynamic.layers.routed_sum import RoutedSum
from keras_dynamic.layers.router import Router

__all__ = [
    "BlockGate",
    "ChannelGate",
    "CondConv2D",
    "DepthwiseCondConv2D",
    "DynamicConv2D",
    "EarlyExit",
    "GatedConcat",
    "GatedResidual",
    "RoutedSum",
    "Router",
    "force_gates",
    "inference_form",
]
