"""Knowledge distillation between exits (teacher logits -> student logits)."""

from keras_dynamic.compat import tf


def distillation_loss(teacher_logits, student_logits, temperature):
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
    if isinstance(temperature, bool) or not isinstance(
        temperature, (int, float)
    ) or not temperature > 0:
        raise ValueError(
            "`temperature` must be a positive number. "
            f"Received: temperature={temperature!r}"
        )
    student_logits = tf.convert_to_tensor(student_logits)
    teacher_logits = tf.stop_gradient(
        tf.cast(tf.convert_to_tensor(teacher_logits), student_logits.dtype)
    )
    teacher_log_p = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = tf.nn.log_softmax(student_logits / temperature, axis=-1)
    kl = tf.reduce_sum(
        tf.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1
    )
    return (temperature**2) * kl
