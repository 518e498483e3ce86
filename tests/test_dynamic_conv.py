"""Layer tests of CondConv2D, DepthwiseCondConv2D, DynamicConv2D.

The numeric reference convolves each example with its own mixed kernel in
NumPy (im2col), from routing weights recomputed in NumPy from the layer's
weights; all forms (training, mix_outputs, mix_kernels at batch > 1, which
is the grouped convolution over the folded batch on every backend, and at a
static batch of 1) must match it. Backend-agnostic: run under every Keras backend.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops
from numpy_reference import numpy_conv

from keras_dynamic.callbacks import TemperatureScheduler
from keras_dynamic.layers import CondConv2D
from keras_dynamic.layers import DepthwiseCondConv2D
from keras_dynamic.layers import DynamicConv2D
from keras_dynamic.layers import inference_form

FORMS = ("mix_outputs", "mix_kernels", "patch_matmul")
ATOL = 1e-4  # float32 convolutions summed in different orders


def _np_routing(layer, x):
    pooled = x.mean(axis=(1, 2))
    if isinstance(layer, DynamicConv2D):
        hidden = np.maximum(
            pooled @ layer.attention_hidden_kernel.numpy()
            + layer.attention_hidden_bias.numpy(),
            0.0,
        )
        logits = hidden @ layer.attention_kernel.numpy() + layer.attention_bias.numpy()
        logits = logits / layer.temperature.numpy()
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    logits = pooled @ layer.routing_kernel.numpy() + layer.routing_bias.numpy()
    return 1.0 / (1.0 + np.exp(-logits))


def _np_reference(layer, x):
    routing = _np_routing(layer, x)
    kernels = np.einsum("bk,k...->b...", routing, layer.kernel.numpy())
    out = np.stack(
        [
            numpy_conv(
                x[b], kernels[b], layer.strides, layer.padding,
                layer.dilation_rate, isinstance(layer, DepthwiseCondConv2D),
            )
            for b in range(len(x))
        ]
    )
    if layer.use_bias:
        out = out + (routing @ layer.bias.numpy())[:, None, None, :]
    return out


LAYERS = {
    "cond_same": lambda **kw: CondConv2D(5, 3, num_experts=3, padding="same", **kw),
    "cond_strided_valid": lambda **kw: CondConv2D(
        4, (3, 2), strides=(2, 1), num_experts=2, **kw
    ),
    # A horizontal stride of 2 takes patch_matmul's full im2col; the others
    # its row form (row taps in, column taps out of the product).
    "cond_strided_across_same": lambda **kw: CondConv2D(
        4, 3, strides=(1, 2), num_experts=2, padding="same", **kw
    ),
    "cond_column_kernel": lambda **kw: CondConv2D(3, (3, 1), num_experts=2, **kw),
    "cond_dilated": lambda **kw: CondConv2D(
        3, 3, dilation_rate=2, padding="same", use_bias=False, **kw
    ),
    "depthwise_same": lambda **kw: DepthwiseCondConv2D(
        3, depth_multiplier=2, padding="same", **kw
    ),
    "depthwise_strided": lambda **kw: DepthwiseCondConv2D(3, strides=2, num_experts=2, **kw),
    "dyconv_same": lambda **kw: DynamicConv2D(6, 3, padding="same", temperature=2.0, **kw),
    "dyconv_dilated_valid": lambda **kw: DynamicConv2D(
        4, 3, dilation_rate=(1, 2), num_experts=3, **kw
    ),
}


def _np(tensor):
    return ops.convert_to_numpy(tensor)


def _inputs(batch=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 9, 10, 4)).astype("float32")


def _with_random_biases(layer, x):
    """Builds `layer` and makes its (zero-initialized) biases non-trivial."""
    layer(x[:1])
    rng = np.random.default_rng(1)
    for variable in layer.trainable_variables:
        if "bias" in variable.path:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    return layer


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_matches_numpy_reference_in_every_form(name):
    x = _inputs()
    layer = _with_random_biases(LAYERS[name](), x)
    expected = _np_reference(layer, x)
    np.testing.assert_allclose(_np(layer(x, training=True)), expected, atol=ATOL)
    for form in FORMS:
        layer.inference_form = form
        np.testing.assert_allclose(_np(layer(x)), expected, atol=ATOL, err_msg=form)
        # A static batch of 1 takes the plain-convolution branch.
        np.testing.assert_allclose(
            _np(layer(x[:1])), expected[:1], atol=ATOL, err_msg=form
        )
    assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape)


def test_routing_shapes_and_ranges():
    x = _inputs(batch=5)
    cond = CondConv2D(4, 3, num_experts=6)
    cond(x)
    routing = _np(cond.compute_routing(x))
    assert routing.shape == (5, 6) and routing.dtype == np.float32
    assert np.all((routing > 0) & (routing < 1))
    assert not np.allclose(routing, routing[:1]), "routing must depend on x"

    dyconv = DynamicConv2D(4, 3, num_experts=4, temperature=1.0)
    dyconv(x)
    attention = _np(dyconv.compute_routing(x))
    assert attention.shape == (5, 4)
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-6)
    # A high temperature flattens the attention toward uniform.
    dyconv.temperature.assign(1e4)
    np.testing.assert_allclose(_np(dyconv.compute_routing(x)), 0.25, atol=1e-3)


def test_one_expert_reduces_to_ordinary_convolution():
    x = _inputs()
    conv = keras.layers.Conv2D(5, 3, padding="same")
    dyconv = _with_random_biases(DynamicConv2D(5, 3, num_experts=1, padding="same"), x)
    conv(x)
    conv.set_weights([dyconv.kernel.numpy()[0], dyconv.bias.numpy()[0]])
    for training in (True, False):
        np.testing.assert_allclose(
            _np(dyconv(x, training=training)), _np(conv(x)), atol=ATOL
        )
    # CondConv's sigmoid scales its single expert: r * conv(x).
    cond = CondConv2D(5, 3, num_experts=1, padding="same", use_bias=False)
    cond(x)
    plain = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    plain(x)
    plain.set_weights([cond.kernel.numpy()[0]])
    scale = _np(cond.compute_routing(x)).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(_np(cond(x)), scale * _np(plain(x)), atol=ATOL)


def test_experts_initialized_independently():
    layer = CondConv2D(4, 3, num_experts=3, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    layer(_inputs())
    kernel = layer.kernel.numpy()
    assert not np.allclose(kernel[0], kernel[1])
    # Each expert has the scale of an ordinary kernel (fan-in 3*3*4, not x3).
    limit = np.sqrt(6.0 / (3 * 3 * 4 + 3 * 3 * 4))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit


@pytest.mark.parametrize("name", ["cond_same", "depthwise_strided", "dyconv_same"])
def test_config_round_trip_and_symbolic_call(name):
    layer = LAYERS[name]()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    inputs = keras.Input((9, 10, 4))
    outputs = layer(inputs)
    assert tuple(outputs.shape) == layer.compute_output_shape((None, 9, 10, 4))


def test_save_and_load_without_custom_objects(tmp_path):
    inputs = keras.Input((9, 10, 4))
    x = CondConv2D(4, 3, padding="same", inference_form="mix_kernels")(inputs)
    x = DepthwiseCondConv2D(3, padding="same")(x)
    x = DynamicConv2D(3, 3, temperature=5.0)(x)
    model = keras.Model(inputs, x)
    x_in = _inputs()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(_np(loaded(x_in)), _np(model(x_in)), atol=1e-6)
    assert loaded.layers[1].inference_form == "mix_kernels"
    assert float(loaded.layers[3].temperature.numpy()) == 5.0


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: CondConv2D(0, 3), "filters=0"),
        (lambda: CondConv2D(4, 3, num_experts=0), "num_experts=0"),
        (lambda: CondConv2D(4, 3, padding="causal"), "padding='causal'"),
        (lambda: CondConv2D(4, (3, 3, 3)), "kernel_size"),
        (lambda: CondConv2D(4, 3, strides=2, dilation_rate=2), "dilation_rate"),
        (lambda: CondConv2D(4, 3, inference_form="fast"), "inference_form='fast'"),
        (lambda: CondConv2D(4, 3, routing_dropout=1.0), "routing_dropout=1.0"),
        (lambda: DepthwiseCondConv2D(3, strides=(1, 2)), "strides"),
        (lambda: DepthwiseCondConv2D(3, depth_multiplier=0), "depth_multiplier=0"),
        (lambda: DynamicConv2D(4, 3, temperature=0.0), "temperature=0.0"),
        (lambda: DynamicConv2D(4, 3, reduction=0), "reduction=0"),
    ],
)
def test_bad_arguments_name_layer_and_argument(factory, message):
    with pytest.raises(ValueError, match=message) as info:
        factory()
    assert "Conv2D '" in str(info.value)


def test_inference_form_context_manager_recurses_and_restores():
    inner_in = keras.Input((9, 10, 4))
    inner = keras.Model(inner_in, DynamicConv2D(4, 3, padding="same")(inner_in))
    inputs = keras.Input((9, 10, 4))
    x = CondConv2D(4, 3, padding="same", inference_form="mix_kernels")(inputs)
    model = keras.Model(inputs, inner(x))
    forms = lambda: sorted(  # noqa: E731
        layer.inference_form
        for layer in model._flatten_layers()
        if hasattr(layer, "inference_form")
    )
    assert forms() == ["mix_kernels", "mix_outputs"]
    with inference_form(model, "mix_outputs") as layers:
        assert len(layers) == 2
        assert forms() == ["mix_outputs", "mix_outputs"]
    assert forms() == ["mix_kernels", "mix_outputs"]
    with pytest.raises(RuntimeError):
        with inference_form(model, "mix_kernels"):
            raise RuntimeError
    assert forms() == ["mix_kernels", "mix_outputs"]
    with pytest.raises(ValueError, match="mix_outputs.*mix_kernels.*form='x'"):
        with inference_form(model, "x"):
            pass


def _tiny_model(layer_factory=DynamicConv2D):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = layer_factory(6, 3, padding="same", activation="relu")(x)
    x = DepthwiseCondConv2D(3, padding="same", routing_dropout=0.2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _tiny_data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("layer_factory", [CondConv2D, DynamicConv2D])
def test_fit_updates_every_weight_at_batch_above_one(layer_factory):
    keras.utils.set_random_seed(0)
    model = _tiny_model(layer_factory)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [v.numpy().copy() for v in model.trainable_variables]
    x, y = _tiny_data()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for variable, old in zip(model.trainable_variables, before):
        assert not np.allclose(variable.numpy(), old), variable.path


def test_mixed_precision_keeps_routing_in_float32():
    x, y = _tiny_data()
    keras.utils.set_random_seed(0)
    reference = _tiny_model()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = _tiny_model()
        model.set_weights(reference.get_weights())
        layer = model.layers[2]
        assert layer.compute_dtype == "float16" and layer.kernel.dtype == "float32"
        features = model.layers[1](x)
        dtype = keras.backend.standardize_dtype
        assert dtype(layer.compute_routing(features).dtype) == "float32"
        assert dtype(layer(features).dtype) == "float16"
        np.testing.assert_allclose(_np(model(x)), _np(reference(x)), atol=2e-2)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_temperature_scheduler_anneals_the_layer_temperature():
    model = _tiny_model()
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _tiny_data(8)
    layer = model.layers[2]
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(float(layer.temperature.numpy()))
    )
    scheduler = TemperatureScheduler(start=30.0, end=1.0, epochs=2)
    history = model.fit(x, y, epochs=4, verbose=0, callbacks=[scheduler, record])
    assert seen == [30.0, 15.5, 1.0, 1.0]
    assert history.history["temperature"] == seen


def test_temperature_scheduler_rejects_model_without_temperature():
    model = _tiny_model(CondConv2D)
    model.compile(optimizer="sgd", loss="mse")
    x, _ = _tiny_data(4)
    with pytest.raises(ValueError, match="no layer with a `temperature`"):
        model.fit(x, np.zeros((4, 3)), verbose=0, callbacks=[TemperatureScheduler()])
    with pytest.raises(ValueError, match="epochs=0"):
        TemperatureScheduler(epochs=0)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from keras_dynamic.callbacks import TemperatureScheduler
    from keras_dynamic.layers import CondConv2D, DynamicConv2D

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        x = CondConv2D(4, 3, padding="same")(inputs)
        x = DynamicConv2D(4, 3, padding="same")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3)(x))
        model.compile(
            optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    before = model.layers[1].kernel.numpy().copy()
    history = model.fit(
        x, y, batch_size=8, epochs=2, verbose=0,
        callbacks=[TemperatureScheduler(4.0, 2.0, epochs=1)],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(model.layers[1].kernel.numpy(), before)
    assert float(model.layers[2].temperature.numpy()) == 2.0
    print("MIRRORED_OK")
    """
)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="a tf.distribute strategy"
)
def test_mirrored_strategy_on_two_logical_cpus():
    # Logical devices must be configured before TensorFlow initializes its
    # devices, which this test process has already done: use a subprocess.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]
