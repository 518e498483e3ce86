"""int8 exports with integer stage interfaces: integer hand-off between stages
(checked on the files' own scales), agreement with the float chain in quantization
steps, integer model inputs on request, uint8, and refusals."""

import json

import numpy as np
import pytest
from int8_checks import assert_integer_hand_off
from int8_checks import exit_scales
from int8_checks import manifest_of
from runtime_fixtures import _trained
from runtime_fixtures import digits_export

from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.converters.interfaces import check_hand_off
from keras_dynamic.converters.tflite import ConversionError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.interpreter import interpreter_class

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    model, x_val, _, _ = _trained()
    base = tmp_path_factory.mktemp("int8_io")
    folders = {}
    for interface in ("int8", "uint8", "float"):
        folders[interface] = converters.export_stages(
            model, base / interface, quantize="int8", interface=interface,
            representative_data=x_val[:200], layout="files", verbose=0,
        ).replace("manifest.json", "")
    return folders


_manifest = manifest_of


@pytest.mark.parametrize("interface", ["int8", "uint8"])
def test_every_stage_tensor_is_integer_and_handed_on_at_one_scale(exports, interface):
    manifest = assert_integer_hand_off(exports[interface], interface)
    assert manifest["inputs"][0]["dtype"] == interface
    assert any(s["name"] == "conv_1" for s in manifest["stages"][1]["inputs"])


def test_the_int8_chain_stays_within_quantization_steps_of_the_float_chain(
        exports, tmp_path_factory):
    float_export = digits_export(tmp_path_factory)
    x = float_export.x_val
    with runtime.load(float_export.folder) as chain:
        reference = chain.run_all(x)
    scales = exit_scales(_manifest(exports["int8"]))
    with runtime.load(exports["int8"]) as chain, runtime.load(exports["float"]) as inside:
        integer, float_io = chain.run_all(x), inside.run_all(x)
    for name, values in integer.items():
        steps = np.abs(values - reference[name]) / scales[name]
        # Weights and activations quantized through three stages: on the 597
        # validation digits 95% of the logits are within one step of the exit's
        # int8 scale of the float chain's (measured: 0.59, 0.61, 0.75 steps)
        # and all within 25 (measured: 8.8, 9.0, 19.5, on a few outliers).
        assert np.quantile(steps, 0.95) <= 1.0, name
        assert steps.max() <= 25, name
        assert (values.argmax(1) == reference[name].argmax(1)).mean() >= 0.98, name
        # Integer interfaces change nothing but where the rounding happens:
        # the same values as the float-interface int8 export (measured: equal).
        assert (np.abs(values - float_io[name]) / scales[name]).max() <= 0.5, name


def test_an_integer_model_input_is_taken_on_request(exports):
    _, x_val, _, _ = _trained()
    with runtime.load(exports["int8"]) as chain:
        quant = chain.manifest["inputs"][0]["quantization"]
        integers = np.clip(np.round(x_val / quant["scale"]) + quant["zero_point"], -128, 127)
        from_floats = chain.predict(x_val)
        from_integers = chain.predict(integers.astype(np.int8))
    np.testing.assert_array_equal(from_floats.labels, from_integers.labels)
    np.testing.assert_array_equal(from_floats.probabilities, from_integers.probabilities)


def test_uint8_and_int8_interfaces_decide_alike(exports):
    _, x_val, _, _ = _trained()
    with runtime.load(exports["int8"]) as a, runtime.load(exports["uint8"]) as b:
        assert (a.predict(x_val).labels == b.predict(x_val).labels).mean() >= 0.99


def test_a_consumer_reading_other_scales_is_refused_at_load(exports, tmp_path):
    import shutil

    folder = tmp_path / "tampered"
    shutil.copytree(exports["int8"], folder)
    manifest = _manifest(folder)
    manifest["stages"][1]["inputs"][0]["quantization"]["scale"] *= 1.01
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="differs from its producer's"):
        runtime.load(folder)


def test_the_exporter_refuses_a_hand_off_that_would_requantize():
    a = ("int8", {"scale": 0.1, "zero_point": 3})
    b = ("int8", {"scale": 0.2, "zero_point": 3})
    interfaces = {"stage_1": {"inputs": {}, "outputs": {"features": a}},
                  "stage_2": {"inputs": {"features": b}, "outputs": {}}}
    with pytest.raises(ConversionError, match="'features'.*interface='float'"):
        check_hand_off(interfaces, set())


@pytest.mark.parametrize("kwargs, message", [
    (dict(interface="int8"), "needs quantize='int8'"),
    (dict(interface="int4", quantize="int8"), "`interface` must be one of"),
])
def test_bad_interfaces_are_refused(tmp_path, kwargs, message):
    model, x_val, _, _ = _trained()
    with pytest.raises(ValueError, match=message):
        converters.export_stages(model, tmp_path / "out", representative_data=x_val[:32],
                                 verbose=0, **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("interface", ["int8", "float"])
def test_the_static_int8_baseline_matches_the_chain_s_final_exit(exports, tmp_path, interface):
    model, x_val, _, _ = _trained()
    path = converters.export_static(
        model, tmp_path / "static.tflite", quantize="int8", representative_data=x_val[:200],
        interface=interface, verbose=0,
    )
    cls, _ = interpreter_class()
    runner = cls(model_path=path).get_signature_runner()
    detail = runner.get_input_details()["image"]
    x = x_val
    if interface == "int8":
        assert np.dtype(detail["dtype"]) == np.int8
        scale, zero_point = detail["quantization"]
        x = np.clip(np.round(x_val / scale) + zero_point, -128, 127).astype(np.int8)
    static = runner(image=x)["final"]
    with runtime.load(exports["int8"]) as chain:
        final = chain.run_all(x_val)["final"]
    # Calibrated on the same data, the static model's final exit is the chain's.
    assert (static.argmax(1) == final.argmax(1)).mean() >= 0.98


def test_the_static_int8_baseline_needs_representative_data(tmp_path):
    model = _trained()[0]
    with pytest.raises(ValueError, match="needs `representative_data`"):
        converters.export_static(model, tmp_path / "s.tflite", quantize="int8", verbose=0)
    assert not (tmp_path / "s.tflite").exists()
