"""int8 exports write an exit's grid pooling, and a Keras VALID average pool,
as a depthwise convolution.

XNNPACK does not run int8 AVERAGE_POOL_2D; left in, it splits the stage's
delegate partition and runs on the reference kernel. The exporter gives int8
stages (and the int8 static model) the depthwise form, keeps the pool in
float exports, and leaves the layers' own form as it was.
"""

import json
import os

import numpy as np
import pytest

import keras
import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic.runtime.interpreter import interpreter_class

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(0)


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(inputs)
    # conv stride 2 -> 8x8, grid 4 -> a 2x2 average pool.
    exit_1 = kd.layers.EarlyExit(4, conv_filters=8, name="exit_1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_2")(x)
    final = kd.layers.EarlyExit(4, pooling="avg", conv_filters=None, name="final")(x)
    return keras.Model(inputs, [exit_1, final])


def _ops(path):
    cls, _ = interpreter_class()
    interpreter = cls(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return [op["op_name"] for op in interpreter._get_ops_details()]


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_the_first_stage_pools_in_the_form_its_quantization_runs_fastest(tmp_path, quantize):
    model = _model()
    data = RNG.random((64, 16, 16, 1), dtype=np.float32)
    manifest_path = converters.export_stages(
        model, tmp_path / "out", quantize=quantize, representative_data=data,
        layout="files", verbose=0,
    )
    manifest = json.load(open(manifest_path))
    folder = os.path.dirname(manifest_path)
    first = _ops(os.path.join(folder, manifest["stages"][0]["file"]))
    if quantize == "int8":
        assert "AVERAGE_POOL_2D" not in first and "DEPTHWISE_CONV_2D" in first, first
        # One XNNPACK partition: nothing of the stage is left outside it.
        assert first.count("DELEGATE") == 1, first
    else:
        assert "AVERAGE_POOL_2D" in first and "DEPTHWISE_CONV_2D" not in first, first
    # The export put each layer's own form back.
    assert all(
        layer.grid_pool_form == "average_pool"
        for layer in model.layers if isinstance(layer, kd.layers.EarlyExit)
    )
    # And the chain still agrees with Keras on the exit it reports.
    chain = kd.runtime.load(os.path.dirname(manifest_path))
    keras_logits = model.predict(data, verbose=0)[0]
    chain_logits = chain.run_all(data)["exit_1"]
    agree = (chain_logits.argmax(1) == keras_logits.argmax(1)).mean()
    assert agree >= (0.95 if quantize else 1.0), agree


def test_the_int8_static_model_takes_the_depthwise_form_too(tmp_path):
    model = _model()
    data = RNG.random((64, 16, 16, 1), dtype=np.float32)
    path = converters.export_static(
        model, tmp_path / "static.tflite", output="exit_1", quantize="int8",
        representative_data=data, verbose=0,
    )
    ops = _ops(path)
    assert "AVERAGE_POOL_2D" not in ops and "DEPTHWISE_CONV_2D" in ops, ops
    assert ops.count("DELEGATE") == 1, ops


def _pooling_model(padding):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.AveragePooling2D(2, padding=padding, name="downsample")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(x)
    exit_1 = kd.layers.EarlyExit(4, pooling="avg", conv_filters=None, name="exit_1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_2")(x)
    final = kd.layers.EarlyExit(4, pooling="avg", conv_filters=None, name="final")(x)
    return keras.Model(inputs, [exit_1, final])


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_a_keras_average_pool_is_a_depthwise_conv_where_that_is_the_same_average(
        tmp_path, padding):
    model = _pooling_model(padding)
    pool = model.get_layer("downsample")
    data = np.random.default_rng(1).random((64, 16, 16, 3), dtype=np.float32)
    manifest_path = converters.export_stages(
        model, tmp_path / "out", quantize="int8", representative_data=data,
        layout="files", verbose=0,
    )
    folder = os.path.dirname(manifest_path)
    first = _ops(os.path.join(folder, "stage_1.tflite"))
    if padding == "valid":
        assert "AVERAGE_POOL_2D" not in first and first.count("DELEGATE") == 1, first
    else:
        # A SAME window at the border averages fewer values: it stays a pool.
        assert "AVERAGE_POOL_2D" in first, first
    # The layer calls its own class's `call` again after the export.
    assert "call" not in vars(pool)
    expected = model.predict(data, verbose=0)[0]
    with kd.runtime.load(folder) as chain:
        logits = chain.run_all(data)["exit_1"]
    # Within int8 rounding of Keras, relative to the exit's largest logit (the
    # export's own parity measure; an untrained exit's labels are near ties).
    error = np.abs(logits - expected).max() / np.abs(expected).max()
    assert error <= 0.05, error
