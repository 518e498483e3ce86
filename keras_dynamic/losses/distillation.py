"""Knowledge distillation between exits (teacher logits -> student logits)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)
    ) or not temperature > 0:
        raise ValueError(
            "`temperature` must be a positive number. "
            f"Received: temperature={temperature!r}"
        )


def distillation_loss(teacher_logits: Any, student_logits: Any, temperature: float) -> Any:
    """Per-sample distillation loss ``T^2 * KL(p_teacher || p_student)``.

    ``p = softmax(logits / T)`` for both sides. The teacher is wrapped in
    ``stop_gradient``: the term pulls the student towards the teacher and
    never the teacher towards the student. The ``T^2`` factor keeps the
    gradient magnitude independent of the temperature (Hinton et al., 2015),
    so the term can be mixed with a cross-entropy at a fixed weight.

    Args:
        teacher_logits: `(batch, num_classes)` logits of the teacher (in
            self-distillation, the final exit).
        student_logits: `(batch, num_classes)` logits of the student.
        temperature: positive float; higher values soften both distributions.

    Returns:
        A `(batch,)` float tensor.

    Example:

    >>> import numpy as np
    >>> from keras_dynamic.losses import distillation_loss
    >>> logits = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> float(distillation_loss(logits, logits, temperature=3.0)[0])
    0.0

    Reference:
        Hinton et al., "Distilling the Knowledge in a Neural Network", 2015.
        Zhang et al., "Be Your Own Teacher: Improve the Performance of
        Convolutional Neural Networks via Self Distillation", ICCV 2019.
    """
    _check_temperature(temperature)
    student_logits = ops.convert_to_tensor(student_logits)
    teacher_logits = ops.stop_gradient(
        ops.cast(ops.convert_to_tensor(teacher_logits), student_logits.dtype)
    )
    teacher_log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(
        ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1
    )
    return (temperature**2) * kl


@keras.saving.register_keras_serializable(package="keras_dynamic")
class DistillationLoss(keras.losses.Loss):
    """`distillation_loss` as a Keras loss: ``y_true`` is the teacher's logits.

    Keras's `Loss` reduction applies (by default the mean over the batch,
    with ``sample_weight`` as in every Keras loss), so it can be used in
    ``compile`` for classic distillation from stored teacher logits, and it
    is what `keras_dynamic.models.SelfDistillation` adds per early exit.

    Args:
        temperature: positive float, softmax temperature ``T``.
        reduction: Keras loss reduction.
        name: loss name.

    Example:

    >>> import numpy as np
    >>> from keras_dynamic.losses import DistillationLoss
    >>> loss = DistillationLoss(temperature=2.0)
    >>> teacher = np.array([[3.0, 0.0], [0.0, 3.0]], "float32")
    >>> student = np.array([[0.0, 0.0], [0.0, 3.0]], "float32")
    >>> round(float(loss(teacher, student)), 4)
    0.4362
    """

    def __init__(
        self,
        temperature: float = 3.0,
        reduction: str | None = "sum_over_batch_size",
        name: str = "distillation",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, reduction=reduction, **kwargs)
        _check_temperature(temperature)
        self.temperature = temperature

    def call(self, y_true, y_pred):
        return distillation_loss(y_true, y_pred, self.temperature)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
