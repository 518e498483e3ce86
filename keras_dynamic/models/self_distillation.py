"""Training wrapper that distills the final exit into the early exits."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dynamic.losses.distillation import DistillationLoss


@keras.saving.register_keras_serializable(package="keras_dynamic")
class SelfDistillation(keras.Model):
    """Wraps a multi-exit model so that `fit` adds self-distillation.

    The wrapper behaves like the wrapped model (``call`` delegates, the
    outputs and their names are the same, so ``compile`` takes the same
    per-output losses, ``loss_weights`` and metrics) and adds to the compiled
    loss, for every early exit ``e``::

        weight * T^2 * KL(softmax(stop_gradient(teacher) / T) || softmax(e / T))

    where the teacher is the final exit's logits. The term is added in
    `compute_loss`, so the ``loss`` that `fit` and `evaluate` report includes
    it; its value alone is reported as ``distillation_loss``. It is computed
    in evaluation as well, so ``val_loss`` measures the same objective.

    The flow follows tensorflow-model-optimization's: wrap -> `fit` ->
    `strip` -> export. `strip` returns the wrapped functional model itself
    (same layers, same weight variables), ready for
    `keras_dynamic.converters`.

    Args:
        model: a `keras.Model` with at least two outputs, each
            `(batch, num_classes)` logits (e.g. from `EarlyExit` layers).
        temperature: positive float, softmax temperature ``T``.
        weight: non-negative float, weight of each exit's distillation term.
        teacher: index or name of the teacher output; by default the last
            output (the final exit). Every other output is a student.

    Example:

    >>> import numpy as np, keras
    >>> from keras_dynamic.models import SelfDistillation, multi_exit_cnn
    >>> base = multi_exit_cnn((8, 8, 1), num_classes=3, widths=(4, 4, 4))
    >>> model = SelfDistillation(base, temperature=3.0, weight=0.5)
    >>> model.compile(
    ...     "adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> x = np.random.rand(8, 8, 8, 1).astype("float32")
    >>> y = np.arange(8) % 3
    >>> history = model.fit(x, [y, y, y], epochs=1, verbose=0)
    >>> "distillation_loss" in history.history
    True
    >>> model.strip() is base
    True

    Reference:
        Zhang et al., "Be Your Own Teacher: Improve the Performance of
        Convolutional Neural Networks via Self Distillation", ICCV 2019.
        Phuong and Lampert, "Distillation-Based Training for Multi-Exit
        Architectures", ICCV 2019.
    """

    # Keyword-only: `keras.Model(a, b)` with two positional arguments is the
    # functional constructor and would bypass this class.
    def __init__(
        self,
        model: keras.Model,
        *,
        temperature: float = 3.0,
        weight: float = 0.5,
        teacher: int | str = -1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(
                "`model` must be a keras.Model. "
                f"Received: model={type(model).__name__}"
            )
        outputs = model.outputs if hasattr(model, "outputs") else None
        if not outputs or len(outputs) < 2:
            raise ValueError(
                f"SelfDistillation needs a model with at least two outputs; "
                f"model '{model.name}' has "
                f"{len(outputs) if outputs else 0}."
            )
        # Validates the temperature; as a Keras `Loss` it reduces and weights
        # samples, and scales for distribution, like the compiled losses.
        self._distillation = DistillationLoss(temperature)
        if isinstance(weight, bool) or not isinstance(
            weight, (int, float)
        ) or not weight >= 0:
            raise ValueError(
                "`weight` must be a non-negative number. "
                f"Received: weight={weight!r}"
            )
        names = list(model.output_names)
        if isinstance(teacher, str):
            if teacher not in names:
                raise ValueError(
                    f"`teacher` must name an output of model '{model.name}' "
                    f"({names}). Received: teacher={teacher!r}"
                )
            teacher_index = names.index(teacher)
        elif (
            isinstance(teacher, int)
            and not isinstance(teacher, bool)
            and -len(names) <= teacher < len(names)
        ):
            teacher_index = teacher % len(names)
        else:
            raise ValueError(
                f"`teacher` must be an output name or an index in "
                f"[{-len(names)}, {len(names)}). Received: teacher={teacher!r}"
            )
        self.model = model
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.teacher = teacher
        self._teacher_index = teacher_index
        self.distillation_tracker = keras.metrics.Mean(name="distillation_loss")

    @property
    def output_names(self):
        # `compile` maps dict losses/metrics to outputs through these names.
        return self.model.output_names

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def distillation_term(self, y_pred, sample_weight=None):
        """The weighted distillation loss summed over the early exits.

        Args:
            y_pred: the model's outputs (a list or tuple of logits).
            sample_weight: optional `(batch,)` weights; a nested structure
                (per-output weights) is ignored here and still applies to
                the compiled losses.

        Returns:
            A scalar tensor: ``weight * sum_e mean_batch(T^2 KL(...))``
            (a weighted sample counts ``sample_weight`` times in the mean).
        """
        y_pred = list(y_pred)
        if keras.tree.is_nested(sample_weight):
            sample_weight = None
        teacher = y_pred[self._teacher_index]
        terms = [
            self._distillation(teacher, student, sample_weight=sample_weight)
            for i, student in enumerate(y_pred)
            if i != self._teacher_index
        ]
        return self.weight * sum(terms[1:], terms[0])

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
        term = self.distillation_term(y_pred, sample_weight)
        self.distillation_tracker.update_state(term)
        return loss + ops.cast(term, loss.dtype)

    def strip(self) -> keras.Model:
        """Returns the wrapped model (the same object, with trained weights)."""
        return self.model

    def get_config(self):
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "temperature": self.temperature,
            "weight": self.weight,
            "teacher": self.teacher,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)


def strip_self_distillation(model: keras.Model) -> keras.Model:
    """Returns the plain model inside a `SelfDistillation` wrapper.

    Any other model is returned unchanged, so export code can call it
    unconditionally (like tfmot's ``strip_pruning``).

    Example:

    >>> from keras_dynamic.models import (
    ...     SelfDistillation, multi_exit_cnn, strip_self_distillation)
    >>> base = multi_exit_cnn((8, 8, 1), num_classes=3, widths=(4, 4, 4))
    >>> strip_self_distillation(SelfDistillation(base)) is base
    True
    >>> strip_self_distillation(base) is base
    True
    """
    if isinstance(model, SelfDistillation):
        return model.strip()
    return model
