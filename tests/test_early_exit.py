"""Layer tests of EarlyExit; backend-agnostic (run under every Keras backend)."""

import keras
import numpy as np
import pytest
from keras import ops
from numpy_reference import numpy_conv

from keras_dynamic.layers import EarlyExit

RNG = np.random.default_rng(0)


def _numpy_reference(layer, x):
    if layer.conv is not None:
        kernel, bias = (v.numpy() for v in layer.conv.weights)
        strides = (layer.conv_strides,) * 2
        x = np.stack(
            [numpy_conv(xb, kernel, strides, "same", (1, 1), False) for xb in x]
        )
        x = np.maximum(x + bias, 0.0)
    if layer.pooling == "grid" and x.ndim == 3:
        p = max(1, x.shape[1] // layer.grid_size)
        steps = x.shape[1] // p
        h = x[:, : steps * p].reshape(len(x), steps, p, -1).mean(axis=2)
        h = h.reshape(len(x), -1)
    elif layer.pooling == "grid":
        ph, pw = (max(1, d // layer.grid_size) for d in x.shape[1:3])
        oh, ow = x.shape[1] // ph, x.shape[2] // pw
        x = x[:, : oh * ph, : ow * pw].reshape(len(x), oh, ph, ow, pw, -1)
        h = x.mean(axis=(2, 4)).reshape(len(x), -1)
    elif layer.pooling == "avg":
        h = x.mean(axis=tuple(range(1, x.ndim - 1)))
    elif layer.pooling == "max":
        h = x.max(axis=tuple(range(1, x.ndim - 1)))
    elif layer.pooling == "flatten":
        h = x.reshape(len(x), -1)
    else:
        h = x
    if layer.hidden_units is not None:
        h = np.maximum(
            h @ layer.hidden_kernel.numpy() + layer.hidden_bias.numpy(), 0.0
        )
    return h @ layer.kernel.numpy() + layer.bias.numpy()


@pytest.mark.parametrize("hidden_units", [None, 5])
@pytest.mark.parametrize(
    "head, shape",
    [
        ({}, (3, 9, 10, 6)),
        ({"conv_filters": 4, "conv_strides": 1}, (3, 8, 8, 6)),
        ({"conv_filters": 3, "pooling": "avg"}, (3, 7, 6, 2)),
        ({"conv_filters": None, "grid_size": 2}, (3, 4, 5, 6)),
        ({"conv_filters": None, "pooling": "avg"}, (3, 4, 5, 6)),
        ({"conv_filters": None, "pooling": "max"}, (3, 4, 5, 6)),
        ({"conv_filters": None, "pooling": "flatten"}, (3, 4, 5, 6)),
        # Sequences and vectors get no convolution.
        ({"pooling": "avg"}, (3, 7, 6)),
        ({}, (3, 9, 6)),
        ({"grid_size": 2}, (3, 6, 5)),
        ({"pooling": None}, (3, 6)),
    ],
)
@pytest.mark.parametrize("grid_pool_form", ["average_pool", "depthwise_conv"])
def test_matches_numpy_reference(head, shape, hidden_units, grid_pool_form):
    layer = EarlyExit(
        4, hidden_units=hidden_units, bias_initializer="uniform", **head
    )
    layer.grid_pool_form = grid_pool_form
    x = RNG.normal(size=shape).astype("float32")
    out = ops.convert_to_numpy(layer(x))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, _numpy_reference(layer, x), rtol=1e-5, atol=1e-5)


def test_default_head_is_a_strided_conv_and_a_grid():
    layer = EarlyExit(10)
    layer.build((None, 14, 14, 8))
    # A stride-2 3x3 conv with 32 filters, 14x14 -> 7x7; 7 // 4 = 1, so no
    # pooling: 7x7x32 features.
    assert (layer.pooling, layer.conv_filters, layer.conv_strides) == ("grid", 32, 2)
    assert tuple(layer.conv.kernel.shape) == (3, 3, 8, 32)
    assert layer.grid_pool is None and tuple(layer.kernel.shape) == (7 * 7 * 32, 10)
    # 32x32 -> 16x16 after the conv, pooled 4x4 to a 4x4 grid.
    large = EarlyExit(10)
    large.build((None, 32, 32, 8))
    assert large.grid_pool.pool_size == (4, 4)
    assert tuple(large.kernel.shape) == (4 * 4 * 32, 10)
    # Vectors get neither.
    vector = EarlyExit(10, pooling=None)
    vector.build((None, 6))
    assert vector.conv is None and tuple(vector.kernel.shape) == (6, 10)


def test_symbolic_shape():
    inputs = keras.Input((8, 8, 3))
    out = EarlyExit(7, hidden_units=16, conv_filters=4)(inputs)
    assert tuple(out.shape) == (None, 7)
    assert EarlyExit(7).compute_output_shape((None, 8, 8, 3)) == (None, 7)


def test_config_round_trip():
    layer = EarlyExit(
        5,
        pooling="max",
        conv_filters=6,
        conv_strides=2,
        hidden_units=8,
        hidden_activation="tanh",
        dropout=0.25,
        kernel_regularizer=keras.regularizers.L2(1e-3),
        seed=3,
        name="head",
    )
    clone = EarlyExit.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.name == "head"
    assert (clone.dropout, clone.conv_filters, clone.seed) == (0.25, 6, 3)


def _model(**kwargs):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    return keras.Model(inputs, EarlyExit(4, name="exit", **kwargs)(x))


@pytest.mark.parametrize(
    "head",
    [
        {},
        {"conv_filters": None, "pooling": "avg"},
        {"conv_filters": None, "pooling": "max"},
        {"conv_filters": None, "pooling": "flatten"},
    ],
)
def test_save_load_without_custom_objects(tmp_path, head):
    model = _model(hidden_units=3, dropout=0.5, **head)
    x = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("exit"), EarlyExit)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_dropout_only_in_training_and_seeded():
    layer = EarlyExit(4, pooling=None, dropout=0.5, seed=1)
    x = RNG.normal(size=(16, 32)).astype("float32")
    inference = ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), inference, rtol=1e-6)
    np.testing.assert_allclose(_numpy_reference(layer, x), inference, rtol=1e-5, atol=1e-5)
    trained = ops.convert_to_numpy(layer(x, training=True))
    assert not np.allclose(trained, inference)
    # The same seed gives the same dropout masks in a fresh layer.
    twin = EarlyExit(4, pooling=None, dropout=0.5, seed=1)
    twin.build(x.shape)
    twin.set_weights(layer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(twin(x, training=True)), trained, rtol=1e-6)


@pytest.mark.parametrize("head", [{}, {"conv_filters": None, "pooling": "avg"}])
def test_trains_in_fit(head):
    model = _model(dropout=0.1, **head)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = RNG.normal(size=(8, 6, 6, 2)).astype("float32")
    y = np.arange(8) % 4
    before = [v.numpy().copy() for v in model.get_layer("exit").trainable_weights]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = model.get_layer("exit").trainable_weights
    assert len(after) == len(before)
    for variable, old in zip(after, before):
        assert not np.allclose(variable.numpy(), old), variable.path


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": 3, "pooling": "mean"}, "pooling"),
        ({"num_classes": 3, "hidden_units": 0}, "hidden_units"),
        ({"num_classes": 3, "grid_size": 0}, "grid_size"),
        ({"num_classes": 3, "conv_filters": 0}, "conv_filters"),
        ({"num_classes": 3, "conv_filters": 4, "conv_strides": True}, "conv_strides"),
        ({"num_classes": 3, "dropout": 1.0}, "dropout"),
        ({"num_classes": 3, "dropout": -0.1}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"EarlyExit.*{argument}"):
        EarlyExit(**kwargs)


@pytest.mark.parametrize(
    "head, shape",
    [
        ({"pooling": None}, (None, 4, 4, 3)),
        ({"pooling": "avg"}, (None, 3)),
        ({"pooling": "flatten"}, (None, None, 4, 3)),
        ({}, (None, 7, 6, 5, 3)),
        ({}, (None, None, None, 3)),
        ({}, (None, None, 3)),
    ],
)
def test_incompatible_input_shape(head, shape):
    with pytest.raises(ValueError, match="EarlyExit.*Received: shape"):
        EarlyExit(3, **head).build(shape)


def test_unknown_grid_pool_form_is_refused_by_name():
    layer = EarlyExit(3, conv_filters=None, name="exit_a")
    layer.grid_pool_form = "max_pool"
    with pytest.raises(ValueError, match="EarlyExit 'exit_a'.*grid_pool_form.*max_pool"):
        layer(np.zeros((1, 8, 8, 2), "float32"))
