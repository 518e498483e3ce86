"""Losses of dynamic networks: multi-exit weighting, distillation, gates, routing."""

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
