"""Quantization-aware training: `quantize_aware` -> `fit` -> `strip_quantization`.

Backend-agnostic: `./run tests` runs this module under TensorFlow, JAX and
PyTorch (tests/test_backends.py). The export of a quantization-aware model to
int8 stages, against the real interpreter, is in tests/test_qat_export.py.
"""

import keras
import numpy as np
import pytest

import keras_dynamic as kd
from keras_dynamic.quantization import ActivationQuantizer, QuantizeWrapper

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def numpy(value):
    return keras.ops.convert_to_numpy(value)


def every_layer_model():
    """Two exits, batch normalization, and every keras-dynamic layer between them."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = kd.layers.CondConv2D(8, 3, padding="same", activation="relu", name="cond")(x)
    exit_1 = kd.layers.EarlyExit(4, name="exit_1")(x)
    body = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="body")
    x = kd.models.gated_residual(x, body, name="block")
    x = kd.models.channel_gated_conv2d(x, 8, 3, groups=2, activation="relu", name="cg")
    experts = [keras.layers.Conv2D(8, 1, name=f"expert_{i}") for i in range(2)]
    x = kd.models.mixture_of_experts(x, experts, name="moe")
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = kd.layers.DepthwiseCondConv2D(3, padding="same", name="depthwise")(x)
    x = kd.layers.DynamicConv2D(8, 3, padding="same", activation="relu", name="dyconv")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)  # quantized: read by the exit
    final = kd.layers.EarlyExit(4, hidden_units=6, name="final")(x)
    return keras.Model(inputs, [exit_1, final], name="every_layer")


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 3)).astype("float32")
    return x, rng.integers(0, 4, n)


def test_every_layer_trains_quantization_aware_and_strips_back(tmp_path):
    keras.utils.set_random_seed(0)
    model = every_layer_model()
    float_weights = [w.copy() for w in model.get_weights()]
    float_trainable = [numpy(w).copy() for w in model.trainable_weights]
    qat = kd.quantization.quantize_aware(model)
    assert qat.output_names == model.output_names
    kinds = {layer.name: type(layer) for layer in qat.layers}
    assert kinds["image_quantizer"] is ActivationQuantizer
    for name in ("stem", "cond", "exit_1", "depthwise", "dyconv", "final", "moe_router", "block_gate"):
        assert kinds[name] is QuantizeWrapper, name
    # Folded into the convolution before them, or moving values unchanged:
    # no tensor of their own in the int8 graph.
    flags = {layer.name: layer.quantize_outputs for layer in qat.layers if isinstance(layer, QuantizeWrapper)}
    assert flags["stem"] == (False,) and kinds["stem_bn"] is keras.layers.BatchNormalization
    assert flags["stem_relu"] == (True,) and kinds["pool"] is keras.layers.MaxPooling2D
    assert flags["head_bn"] == (True,)

    qat.compile(keras.optimizers.Adam(1e-2), loss=[SCCE, SCCE])
    x, y = _data()
    history = qat.fit(x, (y, y), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # The copy trained; the float model did not.
    for before, after in zip(float_weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    stripped = kd.quantization.strip_quantization(qat)
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    for before, after in zip(float_trainable, stripped.trainable_weights):
        assert not np.allclose(before, numpy(after)), after.path
    # State updates made inside the wrapped layers reach their variables
    # (the moving statistics of a wrapped batch normalization) ...
    for name in ("stem_bn", "head_bn"):
        assert not np.allclose(numpy(stripped.get_layer(name).moving_mean), 0.0), name
    # ... and every range tracker saw all 2 x 4 training batches.
    trackers = [layer for layer in qat._flatten_layers() if isinstance(layer, ActivationQuantizer)]
    assert len(trackers) >= 10
    for tracker in trackers:
        assert float(numpy(tracker.batches_seen)) == 8.0, tracker.path
        assert float(numpy(tracker.range_min)) <= 0.0 < float(numpy(tracker.range_max))
    # The router's load-balancing loss is carried out of the wrapper.
    qat(x[:8], training=True)
    assert len(qat.losses) >= 1

    # Inference runs on the quantized weights and tracked ranges: not the
    # float model's outputs (how close they are on real data is measured in
    # tests/test_qat_export.py, against the int8 export).
    quantized, plain = qat.predict(x, verbose=0), stripped.predict(x, verbose=0)
    for a, b in zip(quantized, plain):
        assert np.all(np.isfinite(a)) and not np.allclose(a, b, atol=1e-6)
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(quantized, loaded.predict(x, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_wrapped_layer_computes_on_per_channel_int8_weights():
    keras.utils.set_random_seed(1)
    dense = keras.layers.Dense(3)
    dense.build((None, 5))
    kernel = np.array(
        [[0.3, -1.0, 0.01], [0.25, 0.5, 0.02], [-0.7, 0.333, 0.0], [0.1, 0.9, -0.03], [1.27, 0.0, 0.005]],
        "float32",
    )
    dense.kernel.assign(kernel)
    wrapped = QuantizeWrapper(dense, quantize_outputs=(False,))
    x = np.eye(5, dtype="float32")
    # Per output channel: scale max|w| / 127, values rounded onto the grid.
    scale = np.abs(kernel).max(axis=0) / 127
    expected = np.clip(np.round(kernel / scale), -127, 127) * scale
    np.testing.assert_allclose(numpy(wrapped(x)), expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(expected, kernel, atol=1e-6)
    np.testing.assert_array_equal(numpy(dense.kernel), kernel)  # float weights kept


def test_an_activation_quantizer_rounds_to_its_tracked_range():
    quantizer = ActivationQuantizer(ema_decay=0.5)
    x = np.array([[-1.0, 0.3, 2.0, 3.0]], "float32")
    np.testing.assert_array_equal(numpy(quantizer(x)), x)  # no range yet
    quantizer(x, training=True)
    quantizer(x * 2, training=True)  # EMA: (-1, 3) then (0.5 * -1 + 0.5 * -2, ...)
    assert float(numpy(quantizer.range_min)) == pytest.approx(-1.5)
    assert float(numpy(quantizer.range_max)) == pytest.approx(4.5)
    out = numpy(quantizer(np.array([[-5.0, 0.0, 0.1, 9.0]], "float32")))
    step = 6.0 / 255
    assert out[0, 0] == pytest.approx(-1.5, abs=step) and out[0, 3] == pytest.approx(4.5, abs=step)
    assert out[0, 1] == 0.0  # zero is on the grid
    assert abs(out[0, 2] - 0.1) <= step / 2 + 1e-6


def test_refusals_name_the_problem():
    model = every_layer_model()
    qat = kd.quantization.quantize_aware(model)
    with pytest.raises(ValueError, match="already quantization-aware"):
        kd.quantization.quantize_aware(qat)
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not a functional model"):
        kd.quantization.quantize_aware(sequential)
    with pytest.raises(ValueError, match="ema_decay"):
        ActivationQuantizer(ema_decay=1.0)
