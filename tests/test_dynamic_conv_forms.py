"""`dynamic_conv_form="auto"`: the exporter's per-layer choice of form.

The rule is checked on layers, then end to end: an export with the default
form runs in the real LiteRT interpreter at any batch with Keras parity, and
the forms that cannot serve an export are refused with a clear message.
"""

import json
import os

import numpy as np
import pytest

import keras
import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic.converters.dynamic_conv import auto_form

Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter


def _called(layer, shape):
    layer(keras.Input(shape))
    return layer


@pytest.mark.parametrize(
    "layer, shape, quantize, expected",
    [
        (lambda: kd.layers.CondConv2D(4, 3), (8, 8, 3), None, "patch_matmul"),
        (lambda: kd.layers.DynamicConv2D(4, 3), (8, 8, 3), "float16", "patch_matmul"),
        (lambda: kd.layers.CondConv2D(4, 3), (8, 8, 3), "int8", "mix_outputs"),
        (lambda: kd.layers.DepthwiseCondConv2D(3), (8, 8, 3), None, "mix_outputs"),
        (lambda: kd.layers.CondConv2D(4, 3), (None, None, 3), None, "mix_outputs"),
    ],
    ids=["full", "full_float16", "full_int8", "depthwise", "unknown_size"],
)
def test_auto_form_rule(layer, shape, quantize, expected):
    assert auto_form(_called(layer(), shape), quantize) == expected


def _two_exit_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3), name="image")
    x = kd.layers.CondConv2D(6, 3, padding="same", num_experts=3, name="cond")(inputs)
    e1 = kd.layers.EarlyExit(4, name="exit_1")(x)
    y = kd.layers.DynamicConv2D(6, 3, strides=2, padding="same", name="dyconv")(x)
    y = kd.layers.DepthwiseCondConv2D(3, padding="same", num_experts=2, name="dwcond")(y)
    final = kd.layers.EarlyExit(4, name="final")(y)
    return keras.Model(inputs, [e1, final])


def _op_names(path):
    interpreter = Interpreter(model_path=path)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def test_default_export_picks_patch_matmul_for_full_convolutions(tmp_path):
    model = _two_exit_model()
    path = converters.export_stages(model, tmp_path / "out", layout="files", verbose=0)
    folder = os.path.dirname(path)
    manifest = json.load(open(path))
    # No layer took mix_kernels, so the stages take any batch.
    specs = [spec for stage in manifest["stages"] for spec in stage["inputs"]]
    assert all(spec["shape"][0] is None for spec in specs), specs
    ops = [_op_names(os.path.join(folder, stage["file"])) for stage in manifest["stages"]]
    # Stage 1 holds `cond`, stage 2 `dyconv` and `dwcond`: the full
    # convolutions became batched matmuls, the depthwise one K static
    # depthwise convolutions; no filter is computed at run time.
    assert "BATCH_MATMUL" in ops[0] and "BATCH_MATMUL" in ops[1]
    assert "DEPTHWISE_CONV_2D" in ops[1]
    chain = kd.runtime.load(folder)
    x = np.random.default_rng(0).standard_normal((5, 12, 12, 3)).astype("float32")
    lite = chain.run_all(x)
    expected = model(x, training=False)
    for name, logits in zip(("exit_1", "final"), expected):
        np.testing.assert_allclose(lite[name], logits, rtol=1e-4, atol=1e-5, err_msg=name)
    # The export set the forms for its span only.
    assert {layer.inference_form for layer in model.layers if hasattr(layer, "inference_form")} == {
        "mix_outputs"
    }


def test_static_baseline_takes_the_same_forms(tmp_path):
    model = _two_exit_model()
    path = converters.export_static(model, tmp_path / "static.tflite", verbose=0)
    assert {"BATCH_MATMUL", "DEPTHWISE_CONV_2D"} <= _op_names(path)


def test_int8_refuses_mix_kernels_and_writes_nothing(tmp_path):
    model = _two_exit_model()
    data = np.random.default_rng(1).standard_normal((32, 12, 12, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"\['cond', 'dyconv', 'dwcond'\].*mix_kernels.*'auto'"):
        converters.export_stages(
            model,
            tmp_path / "out",
            quantize="int8",
            representative_data=data,
            dynamic_conv_form="mix_kernels",
            verbose=0,
        )
    assert not (tmp_path / "out").exists()
    assert model.get_layer("cond").inference_form == "mix_outputs"


@pytest.mark.parametrize(
    "export",
    [
        lambda m, p: converters.export_stages(m, p / "out", dynamic_conv_form="fast"),
        lambda m, p: converters.export_static(m, p / "s.tflite", dynamic_conv_form="fast"),
        lambda m, p: converters.export_conditional(m, p / "c.tflite", dynamic_conv_form="fast"),
    ],
    ids=["stages", "static", "conditional"],
)
def test_unknown_form_is_refused_before_any_work(export, tmp_path):
    with pytest.raises(ValueError, match=r"dynamic_conv_form.*'auto'.*Received: dynamic_conv_form='fast'"):
        export(_two_exit_model(), tmp_path)
    assert list(tmp_path.iterdir()) == []
