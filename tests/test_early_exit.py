import numpy as np
import pytest

from keras_dynamic.compat import keras
from keras_dynamic.layers import EarlyExit

RNG = np.random.default_rng(0)


def _numpy_reference(layer, x):
    if layer.pooling == "avg":
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
    "pooling, shape",
    [
        ("avg", (3, 4, 5, 6)),
        ("max", (3, 4, 5, 6)),
        ("flatten", (3, 4, 5, 6)),
        ("avg", (3, 7, 6)),
        (None, (3, 6)),
    ],
)
def test_matches_numpy_reference(pooling, shape, hidden_units):
    layer = EarlyExit(
        4, pooling=pooling, hidden_units=hidden_units, bias_initializer="uniform"
    )
    x = RNG.normal(size=shape).astype("float32")
    out = np.asarray(layer(x))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, _numpy_reference(layer, x), rtol=1e-5, atol=1e-5)


def test_symbolic_shape():
    inputs = keras.Input((8, 8, 3))
    out = EarlyExit(7, hidden_units=16)(inputs)
    assert tuple(out.shape) == (None, 7)
    assert EarlyExit(7).compute_output_shape((None, 8, 8, 3)) == (None, 7)


def test_config_round_trip():
    layer = EarlyExit(
        5,
        pooling="max",
        hidden_units=8,
        hidden_activation="tanh",
        dropout=0.25,
        kernel_regularizer=keras.regularizers.L2(1e-3),
        name="head",
    )
    clone = EarlyExit.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.name == "head"
    assert clone.dropout == 0.25


def _model(**kwargs):
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, padding="same")(inputs)
    return keras.Model(inputs, EarlyExit(4, name="exit", **kwargs)(x))


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_save_load_without_custom_objects(tmp_path, pooling):
    model = _model(pooling=pooling, hidden_units=3, dropout=0.5)
    x = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("exit"), EarlyExit)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_dropout_only_in_training():
    layer = EarlyExit(4, pooling=None, dropout=0.5)
    x = RNG.normal(size=(16, 32)).astype("float32")
    inference = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(np.asarray(layer(x)), inference, rtol=1e-6)
    np.testing.assert_allclose(_numpy_reference(layer, x), inference, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(layer(x, training=True)), inference)


def test_trains_in_fit():
    model = _model(dropout=0.1)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = RNG.normal(size=(8, 6, 6, 2)).astype("float32")
    y = np.arange(8) % 4
    before = model.get_layer("exit").kernel.numpy().copy()
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(model.get_layer("exit").kernel.numpy(), before)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": 3, "pooling": "mean"}, "pooling"),
        ({"num_classes": 3, "hidden_units": 0}, "hidden_units"),
        ({"num_classes": 3, "dropout": 1.0}, "dropout"),
        ({"num_classes": 3, "dropout": -0.1}, "dropout"),
    ],
)
def test_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        EarlyExit(**kwargs)


@pytest.mark.parametrize(
    "pooling, shape",
    [(None, (None, 4, 4, 3)), ("avg", (None, 3)), ("flatten", (None, None, 4, 3))],
)
def test_incompatible_input_shape(pooling, shape):
    with pytest.raises(ValueError, match="EarlyExit"):
        EarlyExit(3, pooling=pooling).build(shape)
