"""Reference multi-exit models and training wrappers."""

from keras_dynamic.models.multi_exit_cnn import multi_exit_cnn
from keras_dynamic.models.self_distillation import SelfDistillation
from keras_dynamic.models.self_distillation import strip_self_distillation

__all__ = ["SelfDistillation", "multi_exit_cnn", "strip_self_distillation"]
