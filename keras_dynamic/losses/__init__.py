"""Losses and loss weighting for multi-exit networks."""

from keras_dynamic.losses.distillation import DistillationLoss
from keras_dynamic.losses.distillation import distillation_loss
from keras_dynamic.losses.schedules import exit_loss_weights

__all__ = ["DistillationLoss", "distillation_loss", "exit_loss_weights"]
