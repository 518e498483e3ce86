"""Keras-vs-TFLite parity of the dynamic convolutions, TFLITE_BUILTINS only.

Parametrized over model x inference form x conversion path, run on the real
LiteRT interpreter. Tolerance: atol 1e-5 on outputs of magnitude ~1 (float32,
same math, different summation order).
"""

import numpy as np
import pytest

import keras
import tensorflow as tf
from keras_dynamic.layers import CondConv2D
from keras_dynamic.layers import DepthwiseCondConv2D
from keras_dynamic.layers import DynamicConv2D
from keras_dynamic.layers import inference_form

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

ATOL = 1e-5


def _model(name):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    if name == "condconv":
        x = CondConv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    elif name == "depthwise":
        x = DepthwiseCondConv2D(3, depth_multiplier=2, padding="same")(x)
    else:
        x = DynamicConv2D(8, 3, dilation_rate=2, temperature=0.5)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _archive_batch1(model, tmp_path):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, *model.input.shape[1:]), tf.float32)],
    )
    archive.write_out(str(tmp_path / "saved"), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))


def _from_keras_model(model, tmp_path):
    return tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(converter):
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    return interpreter, ops


def _run(interpreter, x):
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _images(batch):
    return np.random.default_rng(3).normal(size=(batch, 12, 12, 3)).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("form", ["mix_outputs", "mix_kernels"])
@pytest.mark.parametrize("name", ["condconv", "depthwise", "dynamic"])
def test_batch1_export_parity(name, form, tmp_path):
    model = _model(name)
    with inference_form(model, form):
        interpreter, ops = _convert(_archive_batch1(model, tmp_path))
        x = _images(1)
        np.testing.assert_allclose(_run(interpreter, x), model(x), atol=ATOL)
    conv_op = "DEPTHWISE_CONV_2D" if name == "depthwise" else "CONV_2D"
    assert conv_op in ops


@pytest.mark.slow
@pytest.mark.parametrize("name", ["condconv", "depthwise", "dynamic"])
def test_mix_outputs_converts_from_keras_model_at_any_batch(name, tmp_path):
    model = _model(name)
    interpreter, _ = _convert(_from_keras_model(model, tmp_path))
    for batch in (1, 3):
        x = _images(batch)
        np.testing.assert_allclose(_run(interpreter, x), model(x), atol=ATOL)


def test_mix_kernels_needs_a_static_batch_of_one(tmp_path):
    # The documented limit: with an unknown batch the per-example kernels
    # form a grouped convolution, which TFLite has no builtin for.
    model = _model("condconv")
    with inference_form(model, "mix_kernels"):
        with pytest.raises(Exception, match="Conv2D"):
            _convert(_from_keras_model(model, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["condconv", "depthwise", "dynamic"])
def test_patch_matmul_converts_at_any_batch_without_a_runtime_filter(name, tmp_path):
    # The patch form multiplies image patches by the mixed kernel: a batched
    # matmul (an elementwise tap sum for depthwise), never a convolution
    # whose filter is computed at run time, and no batch-1 signature needed.
    model = _model(name)
    with inference_form(model, "patch_matmul"):
        interpreter, ops = _convert(_from_keras_model(model, tmp_path))
        for batch in (1, 3):
            x = _images(batch)
            np.testing.assert_allclose(_run(interpreter, x), model(x), atol=ATOL)
    assert "DEPTHWISE_CONV_2D" not in ops
    if name != "depthwise":
        assert "BATCH_MATMUL" in ops
