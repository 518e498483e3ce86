"""An int8 export of a multi-exit network with every dynamic convolution in its
stages: integer tensors between the stages, the forms the exporter picks for
int8, and decisions and accuracy against the float chain, all on the real
interpreter."""

import numpy as np
import pytest
from int8_checks import assert_integer_hand_off
from int8_checks import exit_scales
from int8_checks import manifest_of
from runtime_fixtures import digits

from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.runtime.interpreter import interpreter_class

pytestmark = pytest.mark.slow

NUM_TRAIN = 1200
# Thresholds that send samples to every exit of this network (measured shares
# 0.84 / 0.05 / 0.11 on the 597 validation digits).
POLICY = {name: {"kind": "max_softmax", "threshold": 0.99} for name in ("exit_1", "exit_2")}


def _dynamic_model():
    import keras

    import keras_dynamic as kd

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inputs)
    exit_1 = kd.layers.EarlyExit(10, name="exit_1")(x)
    x = kd.layers.CondConv2D(16, 3, padding="same", num_experts=4, name="condconv")(x)
    x = keras.layers.ReLU(name="condconv_relu")(x)
    exit_2 = kd.layers.EarlyExit(10, name="exit_2")(x)
    x = kd.layers.DynamicConv2D(24, 3, padding="same", num_experts=4, name="dyconv")(x)
    x = keras.layers.ReLU(name="dyconv_relu")(x)
    x = kd.layers.DepthwiseCondConv2D(3, padding="same", num_experts=3, name="dwcond")(x)
    x = keras.layers.ReLU(name="dwcond_relu")(x)
    final = kd.layers.EarlyExit(10, name="final")(x)
    return keras.Model(inputs, [exit_1, exit_2, final], name="digits_dynamic")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    import keras

    x, y = digits()
    model = _dynamic_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=[loss] * 3)
    model.fit(x[:NUM_TRAIN], [y[:NUM_TRAIN]] * 3, epochs=20, batch_size=64, verbose=0)
    base = tmp_path_factory.mktemp("int8_dynamic")
    folders = {
        quantize or "float32": converters.export_stages(
            model, base / (quantize or "float32"), quantize=quantize, interface=interface,
            representative_data=x[:200], layout="files", verbose=0,
        ).replace("manifest.json", "")
        for quantize, interface in ((None, "float"), ("int8", "int8"))
    }
    return folders, x[NUM_TRAIN:], y[NUM_TRAIN:]


def test_the_int8_stages_hand_integer_tensors_on_at_one_scale(exports):
    folders, _, _ = exports
    manifest = assert_integer_hand_off(folders["int8"], "int8")
    # Every dynamic layer sits inside a stage, and stages 2 and 3 start from
    # the integer tensors that stages 1 and 2 wrote.
    assert [s["inputs"][0]["name"] for s in manifest["stages"]] == [
        "image", "stem", "condconv_relu",
    ]


def test_int8_takes_the_forms_whose_filters_are_constants(exports):
    folders, _, _ = exports
    cls, _ = interpreter_class()
    manifest = manifest_of(folders["int8"])
    ops = set()
    for stage in manifest["stages"]:
        interpreter = cls(model_path=f"{folders['int8']}/{stage['file']}")
        interpreter.allocate_tensors()
        for op in interpreter._get_ops_details():
            ops.add(op["op_name"])
            if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                # `mix_outputs`: K convolutions whose filters are constants,
                # as an int8 convolution needs (no run-time filter).
                assert interpreter._get_tensor_details(op["inputs"][1], 0)["dtype"] == np.int8
    assert "BATCH_MATMUL" not in ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "SPLIT", "MUL"} <= ops


def test_the_int8_chain_decides_as_the_float_chain_does(exports):
    folders, x_val, y_val = exports
    scales = exit_scales(manifest_of(folders["int8"]))
    with runtime.load(folders["float32"], policy=POLICY) as reference, runtime.load(
        folders["int8"], policy=POLICY
    ) as integer:
        float_logits, int8_logits = reference.run_all(x_val), integer.run_all(x_val)
        float_run, int8_run = reference.predict(x_val), integer.predict(x_val)
    for name, values in int8_logits.items():
        steps = np.abs(values - float_logits[name]) / scales[name]
        # Measured on the 597 validation digits, per exit: labels agree on
        # 99.8 / 99.8 / 99.3%, 95% of the logits within 0.64 / 1.09 / 1.87
        # steps of the exit's int8 scale (the routing weights are quantized
        # too, and their error multiplies the experts' outputs).
        assert (values.argmax(1) == float_logits[name].argmax(1)).mean() >= 0.98, name
        assert np.quantile(steps, 0.95) <= 2.5, name
        float_accuracy = (float_logits[name].argmax(1) == y_val).mean()
        assert abs((values.argmax(1) == y_val).mean() - float_accuracy) <= 0.01, name
    # The same thresholds send the samples out at the same exits (measured:
    # 99.7%) with the same labels (99.5%), every exit used.
    assert (int8_run.exit_index == float_run.exit_index).mean() >= 0.98
    assert (int8_run.labels == float_run.labels).mean() >= 0.98
    assert set(np.unique(int8_run.exit_index)) == {0, 1, 2}
    accuracy = {k: (r.labels == y_val).mean() for k, r in (("f", float_run), ("i", int8_run))}
    assert abs(accuracy["i"] - accuracy["f"]) <= 0.01
