"""Reference models, building blocks and training wrappers."""

# Keras before any module of this package: importing Keras runs the hook
# that registers keras_dynamic's serializables (keras_dynamic/__init__.py),
# which imports the sibling packages; they must not meet a half-imported
# module of this one.
import keras  # noqa: F401

from keras_dynamic.models.compute_budget import ComputeBudget
from keras_dynamic.models.gate_residual_blocks import gate_residual_blocks
from keras_dynamic.models.glance_and_focus import glance_and_focus_cnn
from keras_dynamic.models.gated_blocks import channel_gated_conv2d
from keras_dynamic.models.gated_blocks import gated_residual
from keras_dynamic.models.gated_blocks import mixture_of_experts
from keras_dynamic.models.gated_resnet import gated_resnet
from keras_dynamic.models.macs import BranchMacs
from keras_dynamic.models.macs import ConditionalMacs
from keras_dynamic.models.macs import analytic_macs
from keras_dynamic.models.macs import conditional_macs
from keras_dynamic.models.multi_exit_cnn import multi_exit_cnn
from keras_dynamic.models.multi_exit_sequence import multi_exit_sequence_classifier
from keras_dynamic.models.resolution_adaptive import resolution_adaptive_cnn
from keras_dynamic.models.self_distillation import SelfDistillation
from keras_dynamic.models.self_distillation import strip_self_distillation

__all__ = [
    "BranchMacs",
    "ComputeBudget",
    "ConditionalMacs",
    "SelfDistillation",
    "analytic_macs",
    "channel_gated_conv2d",
    "conditional_macs",
    "gate_residual_blocks",
    "glance_and_focus_cnn",
    "gated_residual",
    "gated_resnet",
    "mixture_of_experts",
    "multi_exit_cnn",
    "multi_exit_sequence_classifier",
    "resolution_adaptive_cnn",
    "strip_self_distillation",
]
