"""Losses of dynamic networks: multi-exit weighting, distillation, gates, routing."""

# Keras before any module of this package: importing Keras runs the hook
# that registers keras_dynamic's serializables (keras_dynamic/__init__.py),
# which imports the sibling packages; they must not meet a half-imported
# module of this one.
import keras  # noqa: F401

from keras_dynamic.losses.distillation import DistillationLoss
from keras_dynamic.losses.distillation import distillation_loss
from keras_dynamic.losses.gates import compute_budget_loss
from keras_dynamic.losses.gates import executed_fraction
from keras_dynamic.losses.gates import target_rate_loss
from keras_dynamic.losses.routing import load_balancing_loss
from keras_dynamic.losses.schedules import exit_loss_weights

__all__ = [
    "DistillationLoss",
    "compute_budget_loss",
    "distillation_loss",
    "executed_fraction",
    "exit_loss_weights",
    "load_balancing_loss",
    "target_rate_loss",
]
