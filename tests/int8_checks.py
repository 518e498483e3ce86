"""Checks shared by the int8 export tests (not a test module)."""

import json

import pytest

from keras_dynamic.runtime.interpreter import interpreter_class


def manifest_of(folder):
    return json.loads(open(f"{folder}/manifest.json").read())


def assert_integer_hand_off(folder, dtype):
    """Every stage tensor is ``dtype`` at the scale the manifest records, and
    each stage reads a tensor at the scale and zero point its producer wrote
    (so the runtime hands it on without requantizing)."""
    manifest = manifest_of(folder)
    cls, _ = interpreter_class()
    written = {}
    for stage in manifest["stages"]:
        runner = cls(model_path=f"{folder}/{stage['file']}").get_signature_runner(
            stage["signature"]
        )
        files = {**runner.get_input_details(), **runner.get_output_details()}
        for spec in stage["inputs"] + stage["outputs"]:
            assert spec["dtype"] == dtype and spec["quantization"] is not None, spec["name"]
            scale, zero_point = files[spec["name"]]["quantization"]
            assert spec["quantization"]["scale"] == pytest.approx(scale, rel=1e-6)
            assert spec["quantization"]["zero_point"] == zero_point
        for spec in stage["outputs"]:
            written[spec["name"]] = spec["quantization"]
        for spec in stage["inputs"]:
            if spec["name"] in written:
                assert spec["quantization"]["zero_point"] == written[spec["name"]]["zero_point"]
                assert spec["quantization"]["scale"] == pytest.approx(
                    written[spec["name"]]["scale"], rel=1e-6
                )
    return manifest


def exit_scales(manifest):
    """Exit name -> the int8 scale of the tensor that carries its logits."""
    return {
        e["name"]: next(
            o["quantization"]["scale"]
            for s in manifest["stages"] for o in s["outputs"] if o["name"] == e["tensor"]
        )
        for e in manifest["exits"]
    }
