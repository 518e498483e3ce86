"""Tests of the losses; backend-agnostic (run under every Keras backend)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_dynamic.losses import DistillationLoss
from keras_dynamic.losses import distillation_loss
from keras_dynamic.losses import exit_loss_weights


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def numpy_distillation(teacher, student, temperature):
    log_p = _log_softmax(teacher.astype("float64") / temperature)
    log_q = _log_softmax(student.astype("float64") / temperature)
    return temperature**2 * (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


@pytest.mark.parametrize(
    "num_exits, schedule, normalize, expected",
    [
        (3, "uniform", False, [1.0, 1.0, 1.0]),
        (4, "uniform", True, [0.25, 0.25, 0.25, 0.25]),
        (3, "linear", False, [1.0, 2.0, 3.0]),
        (3, "linear", True, [1 / 6, 2 / 6, 3 / 6]),
        (4, "final_heavy", False, [1.0, 1.0, 1.0, 3.0]),
        (3, "final_heavy", True, [0.25, 0.25, 0.5]),
        (1, "final_heavy", True, [1.0]),
        (1, "linear", False, [1.0]),
    ],
)
def test_exit_loss_weights(num_exits, schedule, normalize, expected):
    weights = exit_loss_weights(num_exits, schedule, normalize=normalize)
    assert all(isinstance(w, float) for w in weights)
    np.testing.assert_allclose(weights, expected, rtol=1e-12)


@pytest.mark.parametrize("schedule", ["uniform", "linear", "final_heavy"])
def test_exit_loss_weights_normalized_sum(schedule):
    assert sum(exit_loss_weights(5, schedule)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_exits": 0}, "num_exits"),
        ({"num_exits": 2.0}, "num_exits"),
        ({"num_exits": True}, "num_exits"),
        ({"num_exits": 3, "schedule": "quadratic"}, "schedule"),
        ({"num_exits": 3, "normalize": "yes"}, "normalize"),
    ],
)
def test_exit_loss_weights_invalid(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        exit_loss_weights(**kwargs)


@pytest.mark.parametrize("temperature", [1.0, 3.0, 0.5])
def test_distillation_loss_matches_numpy(temperature):
    rng = np.random.default_rng(1)
    teacher = rng.normal(size=(6, 5)).astype("float32") * 3
    student = rng.normal(size=(6, 5)).astype("float32") * 3
    got = ops.convert_to_numpy(distillation_loss(teacher, student, temperature))
    assert got.shape == (6,)
    np.testing.assert_allclose(
        got, numpy_distillation(teacher, student, temperature), rtol=1e-5, atol=1e-6
    )


def test_distillation_loss_zero_for_equal_logits():
    logits = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], "float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(distillation_loss(logits, logits, 2.0)), 0.0, atol=1e-6
    )


class _TeacherAndStudent(keras.layers.Layer):
    """Two logit vectors as weights; the distillation term is the only loss."""

    def build(self, input_shape):
        self.teacher = self.add_weight(
            shape=(1, 3), initializer=keras.initializers.Constant([[1.0, 0.0, -1.0]])
        )
        self.student = self.add_weight(
            shape=(1, 3), initializer=keras.initializers.Constant([[0.0, 2.0, 0.0]])
        )

    def call(self, inputs):
        self.add_loss(ops.sum(distillation_loss(self.teacher, self.student, 2.0)))
        return inputs


def test_distillation_loss_does_not_train_the_teacher():
    inputs = keras.Input((1,))
    layer = _TeacherAndStudent()
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(1.0))
    model.fit(np.zeros((1, 1)), epochs=1, verbose=0)
    np.testing.assert_array_equal(layer.teacher.numpy(), [[1.0, 0.0, -1.0]])
    assert np.abs(layer.student.numpy() - [[0.0, 2.0, 0.0]]).sum() > 1e-3


@pytest.mark.parametrize("temperature", [0, -1.0, True, "3"])
def test_distillation_loss_invalid_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss([[0.0, 1.0]], [[1.0, 0.0]], temperature)


def test_distillation_loss_class_reduces_like_keras():
    rng = np.random.default_rng(4)
    teacher = rng.normal(size=(4, 3)).astype("float32")
    student = rng.normal(size=(4, 3)).astype("float32")
    weights = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    per_sample = numpy_distillation(teacher, student, 2.0)
    loss = DistillationLoss(temperature=2.0)
    np.testing.assert_allclose(float(loss(teacher, student)), per_sample.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        float(loss(teacher, student, sample_weight=weights)),
        (per_sample * weights).mean(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(DistillationLoss(2.0, reduction="none")(teacher, student)),
        per_sample,
        rtol=1e-5,
    )


def test_distillation_loss_class_serialization():
    loss = DistillationLoss(temperature=4.0, name="kd")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, DistillationLoss)
    assert (clone.temperature, clone.name) == (4.0, "kd")
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(temperature=0.0)
