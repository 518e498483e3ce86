"""`keep_float`: int8 exports with the ops XNNPACK runs slower in int8 left in float32.

``"single_channel_input"``: the convolutions that read a single-channel model
input (and their residual ADD) stay float32; a three-channel stem is left in
int8. ``"hard_swish"``: every HARD_SWISH stays float32, on XNNPACK. Every
other op, and every stage interface, is int8, so the hand-off between stages
is unchanged.
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
RULE = "single_channel_input"


def _weight_dtypes(path):
    """``[(op name, dtype of its weight operand)]`` of the convolutions and dense ops of a file."""
    cls, _ = interpreter_class()
    interpreter = cls(model_path=str(path), num_threads=1)
    dtypes = {d["index"]: np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details()}
    return [
        (op["op_name"], dtypes[op["inputs"][1]])
        for op in interpreter._get_ops_details()
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
    ]


def _assert_chain_agrees_with_keras(folder, model, data):
    """Every exit's labels from the loaded chain agree with Keras on 90% of ``data``."""
    chain = kd.runtime.load(folder)
    keras_logits = model.predict(data, verbose=0)
    chain_logits = chain.run_all(data)
    for index, name in enumerate(chain_logits):
        agree = (np.asarray(chain_logits[name]).argmax(1) == keras_logits[index].argmax(1)).mean()
        assert agree >= 0.9, (name, agree)


def _export(tmp_path, shape, keep_float, interface=None):
    keras.utils.set_random_seed(0)
    model = kd.models.multi_exit_cnn(shape, 4)
    data = np.random.default_rng(0).random((48, *shape), dtype=np.float32)
    manifest_path = converters.export_stages(
        model, tmp_path / f"out_{keep_float}", quantize="int8", representative_data=data,
        interface=interface, keep_float=keep_float, layout="files", verbose=0,
    )
    return model, data, manifest_path


@pytest.mark.parametrize("interface", ["int8", "uint8"])
def test_the_convolutions_of_a_single_channel_input_stay_float32(tmp_path, interface):
    model, data, manifest_path = _export(tmp_path, (16, 16, 1), RULE, interface)
    manifest = json.load(open(manifest_path))
    folder = os.path.dirname(manifest_path)
    files = [os.path.join(folder, stage["file"]) for stage in manifest["stages"]]
    first = _weight_dtypes(files[0])
    # The 3x3 convolution and the 1x1 projection of the input channel, then
    # the exit head in int8.
    assert [dtype for _, dtype in first[:2]] == ["float32", "float32"], first
    assert {dtype for _, dtype in first[2:]} == {"int8"}, first
    for path in files[1:]:
        assert {dtype for _, dtype in _weight_dtypes(path)} == {"int8"}, path
    # The interfaces are still integer everywhere: the image included.
    for stage in manifest["stages"]:
        for spec in stage["inputs"] + stage["outputs"]:
            assert spec["dtype"] == interface and spec["quantization"], (stage["name"], spec)
    # The chain runs (the export's parity check passed) and agrees with Keras.
    _assert_chain_agrees_with_keras(folder, model, data)


def test_a_three_channel_stem_is_left_in_int8(tmp_path):
    _, _, manifest_path = _export(tmp_path, (16, 16, 3), RULE)
    manifest = json.load(open(manifest_path))
    folder = os.path.dirname(manifest_path)
    for stage in manifest["stages"]:
        path = os.path.join(folder, stage["file"])
        assert {dtype for _, dtype in _weight_dtypes(path)} == {"int8"}, stage["name"]


def test_the_static_model_with_a_float_interface(tmp_path):
    keras.utils.set_random_seed(0)
    model = kd.models.multi_exit_cnn((16, 16, 1), 4)
    data = np.random.default_rng(0).random((48, 16, 16, 1), dtype=np.float32)
    path = converters.export_static(
        model, tmp_path / "static.tflite", quantize="int8", representative_data=data,
        interface="float", keep_float=RULE, verbose=0,
    )
    cls, _ = interpreter_class()
    interpreter = cls(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    # A float image goes straight into the float convolutions: no QUANTIZE first.
    assert ops[:3] == ["CONV_2D", "CONV_2D", "ADD"] and ops[3] == "QUANTIZE", ops
    dtypes = _weight_dtypes(path)
    assert [d for _, d in dtypes[:2]] == ["float32", "float32"], dtypes
    assert {d for _, d in dtypes[2:]} == {"int8"}, dtypes
    runner = interpreter.get_signature_runner()
    (output,) = runner(image=data[:1]).values()
    expected = model.predict(data[:1], verbose=0)[-1]
    assert output.dtype == np.float32 and output.argmax() == expected.argmax()


@pytest.mark.parametrize(
    "quantize, keep_float, message",
    [
        ("int8", "stem", "rule names"),
        ("int8", ["hard_swish", 3], "rule names"),
        (None, RULE, "needs quantize='int8'"),
        ("float16", RULE, "needs quantize='int8'"),
    ],
)
def test_refusals_name_the_argument(tmp_path, quantize, keep_float, message):
    model = kd.models.multi_exit_cnn((16, 16, 1), 4)
    data = np.zeros((4, 16, 16, 1), np.float32)
    with pytest.raises(ValueError, match=message):
        converters.export_stages(
            model, tmp_path / "out", quantize=quantize, representative_data=data,
            keep_float=keep_float, verbose=0,
        )
    with pytest.raises(ValueError, match=message):
        converters.export_static(
            model, tmp_path / "m.tflite", quantize=quantize, representative_data=data,
            keep_float=keep_float, verbose=0,
        )
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "m.tflite")


def _hard_swish_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_1")(inputs)
    x = keras.layers.Activation("hard_swish", name="hs_1")(x)
    exit_1 = kd.layers.EarlyExit(4, name="exit_1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv_2")(x)
    x = keras.layers.Activation("hard_swish", name="hs_2")(x)
    final = kd.layers.EarlyExit(4, pooling="avg", conv_filters=None, name="final")(x)
    return keras.Model(inputs, [exit_1, final])


def _ops(path):
    cls, _ = interpreter_class()
    interpreter = cls(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()  # applies XNNPACK
    return [op["op_name"] for op in interpreter._get_ops_details()]


@pytest.mark.parametrize("keep_float", [None, "hard_swish", [RULE, "hard_swish"]])
def test_hard_swish_in_float32_stays_on_xnnpack(tmp_path, keep_float):
    model = _hard_swish_model()
    data = np.random.default_rng(0).random((48, 16, 16, 1), dtype=np.float32)
    manifest_path = converters.export_stages(
        model, tmp_path / "out", quantize="int8", representative_data=data,
        keep_float=keep_float, layout="files", verbose=0,
    )
    manifest = json.load(open(manifest_path))
    folder = os.path.dirname(manifest_path)
    for stage in manifest["stages"]:
        path = os.path.join(folder, stage["file"])
        ops = _ops(path)
        # The interpreter lists the file's ops, then one DELEGATE per XNNPACK
        # partition. int8 HARD_SWISH has no XNNPACK kernel: it stays outside
        # and splits the stage into two partitions. In float32 (with its
        # DEQUANTIZE and QUANTIZE) it is taken, and the stage is one partition.
        assert "HARD_SWISH" in ops, ops
        assert ops.count("DELEGATE") == (2 if keep_float is None else 1), ops
        weights = {dtype for _, dtype in _weight_dtypes(path)}
        if stage is manifest["stages"][0] and isinstance(keep_float, list):
            assert weights == {"float32", "int8"}, weights  # the stem conv is float
        else:
            assert weights == {"int8"}, weights
        for spec in stage["inputs"] + stage["outputs"]:
            assert spec["dtype"] == "int8", (stage["name"], spec)
    _assert_chain_agrees_with_keras(folder, model, data)
