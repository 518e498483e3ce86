"""int8 calibration runs through the chain: each stage sees what the earlier stages produce.

`export_stages(quantize="int8")` runs the Keras stages on `representative_data` and
calibrates every stage on the activations its inputs really take there (not on data
made up per stage). Checked on the real converter output: the range the second
stage's input is quantized to is the range of the first stage's output.
"""

import json

import keras
import numpy as np
import pytest

import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic.runtime.interpreter import interpreter_class

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(7)
# Stage 1's output feeds stage 2 scaled far out of a standard normal's range, so a
# calibration on made-up per-stage data (a few units wide) would be off by ~100x.
SCALE = 40.0


def _model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Rescaling(SCALE, name="wide")(x)
    exit_1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_b")(x)
    final = kd.layers.EarlyExit(3, name="final")(y)
    return keras.Model(inputs, [exit_1, final], name="wide_cut")


def _quantize_op_scale(path, input_index):
    """Scale and zero point of the QUANTIZE op that reads the float input ``input_index``."""
    cls, _ = interpreter_class()
    interpreter = cls(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    for op in interpreter._get_ops_details():
        if op["op_name"] == "QUANTIZE" and input_index in op["inputs"]:
            out = tensors[op["outputs"][0]]
            return out["quantization_parameters"]["scales"][0], out["quantization_parameters"][
                "zero_points"
            ][0]
    raise AssertionError(f"no QUANTIZE op reads tensor {input_index} in {path}")


@pytest.mark.parametrize("interface", ["float", "int8"])
def test_each_stage_is_calibrated_on_the_earlier_stages_outputs(tmp_path, interface):
    model = _model()
    data = RNG.random((64, 8, 8, 1), dtype=np.float32)
    manifest_path = converters.export_stages(
        model, tmp_path / "out", quantize="int8", representative_data=data,
        layout="files", interface=interface, verbose=0,
    )
    manifest = json.loads(open(manifest_path).read())
    stage_2 = manifest["stages"][1]
    (crossing,) = stage_2["inputs"]
    # The real activations crossing the cut, on the representative data.
    cut = keras.Model(model.input, model.get_layer("wide").output)
    values = np.asarray(cut.predict(data, verbose=0))
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    cls, _ = interpreter_class()
    runner = cls(model_path=str(tmp_path / "out" / stage_2["file"])).get_signature_runner(
        stage_2["signature"]
    )
    detail = runner.get_input_details()[crossing["name"]]
    if interface == "float":
        # The float input is quantized by the stage's first op.
        scale, _ = _quantize_op_scale(tmp_path / "out" / stage_2["file"], detail["index"])
    else:
        # The input itself is int8, with the scale the manifest records.
        scale = detail["quantization"][0]
        assert crossing["quantization"]["scale"] == pytest.approx(scale, rel=1e-6)
    # int8 covers [low, high] in 255 steps; per-stage random data would give ~1/100 of it.
    assert scale == pytest.approx((high - low) / 255.0, rel=0.05)
    assert high > 10  # the premise: the crossing tensor is far wider than a made-up one


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((20, 9, 9, 1), "float32"), r"expected shape \(samples, 8, 8, 1\)"),
        (np.full((20, 8, 8, 1), "x"), "expected numbers for a float32 input"),
        (np.zeros((0, 8, 8, 1), "float32"), "is empty"),
        (np.zeros((5, 8, 8, 1), "float32"), "5 sample\\(s\\) is too few, pass at least 16"),
        (np.where(np.arange(20 * 64).reshape(20, 8, 8, 1) == 200, np.nan, 0.0), "NaN or Inf \\(first at sample 3\\)"),
    ],
)
def test_bad_representative_data_is_refused(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        converters.export_stages(_model(), tmp_path / "out", quantize="int8",
                                 representative_data=data, verbose=0)
    assert not (tmp_path / "out").exists()
