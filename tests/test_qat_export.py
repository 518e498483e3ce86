"""A quantization-aware model exported to int8 stages reproduces itself in the real interpreter.

The digits network of the runtime tests (three exits, a residual across an
exit) is fine-tuned with `quantize_aware` and exported with
`quantize="int8"`; the chain's exit logits are compared with the
fake-quantized Keras model's, in steps of each exit's int8 scale.
"""

import functools
import json

import keras
import numpy as np
import pytest
from runtime_fixtures import NUM_TRAIN
from runtime_fixtures import _trained
from runtime_fixtures import digits

import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.runtime.interpreter import interpreter_class

pytestmark = pytest.mark.slow


@functools.cache
def _quantization_aware():
    model = _trained()[0]
    x, y = digits()
    keras.utils.set_random_seed(0)
    qat = kd.quantization.quantize_aware(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    qat.compile(optimizer=keras.optimizers.Adam(1e-3), loss=[loss] * 3)
    qat.fit(x[:NUM_TRAIN], [y[:NUM_TRAIN]] * 3, epochs=3, batch_size=64, verbose=0)
    return qat


@pytest.fixture(scope="module")
def qat_export(tmp_path_factory):
    _, x_val, _, _ = _trained()
    manifest = converters.export_stages(
        _quantization_aware(), tmp_path_factory.mktemp("qat") / "int8",
        quantize="int8", representative_data=x_val[:200], verbose=0,
    )
    return manifest.replace("manifest.json", "")


def test_the_int8_chain_reproduces_the_fake_quantized_model(qat_export):
    qat = _quantization_aware()
    _, x_val, y_val, _ = _trained()
    reference = dict(zip(qat.output_names, qat.predict(x_val, verbose=0)))
    manifest = json.loads(open(f"{qat_export}/manifest.json").read())
    exit_scales = {
        e["name"]: next(
            o["quantization"]["scale"]
            for s in manifest["stages"] for o in s["outputs"] if o["name"] == e["tensor"]
        )
        for e in manifest["exits"]
    }
    with runtime.load(qat_export) as chain:
        assert chain.manifest["inputs"][0]["dtype"] == "int8"  # integer hand-off
        logits = chain.run_all(x_val)
    for name, values in logits.items():
        steps = np.abs(values - reference[name]) / exit_scales[name]
        # On the 597 validation digits (measured): labels agree on 99.8, 99.7
        # and 100%; 95% of the logits within 0.73, 0.76, 0.87 steps of the
        # exit's int8 scale. The few outliers (up to ~50 steps) are logits the
        # Keras model clips at its moving-average range, which the export,
        # calibrated on the representative data's extremes, does not.
        assert (values.argmax(1) == reference[name].argmax(1)).mean() >= 0.99, name
        assert np.quantile(steps, 0.95) <= 1.5, name
        accuracy = (values.argmax(1) == y_val).mean()
        assert accuracy == pytest.approx((reference[name].argmax(1) == y_val).mean(), abs=0.01)


def test_the_exporter_strips_the_model_itself(qat_export, tmp_path):
    _, x_val, _, _ = _trained()
    stripped = kd.quantization.strip_quantization(_quantization_aware())
    assert not converters.checks.is_quantization_aware(stripped)
    manifest = converters.export_stages(
        stripped, tmp_path / "stripped", quantize="int8",
        representative_data=x_val[:200], verbose=0,
    )
    ours = json.loads(open(f"{qat_export}/manifest.json").read())
    theirs = json.loads(open(manifest).read())
    # The same stage files, byte for byte, as exporting the stripped model.
    assert [s["sha256"] for s in ours["files"]] == [s["sha256"] for s in theirs["files"]]


def test_the_static_int8_baseline_takes_the_quantization_aware_model(tmp_path):
    qat = _quantization_aware()
    _, x_val, _, _ = _trained()
    path = converters.export_static(
        qat, tmp_path / "static.tflite", quantize="int8", representative_data=x_val[:200], verbose=0
    )
    cls, _ = interpreter_class()
    runner = cls(model_path=path).get_signature_runner()
    detail = runner.get_input_details()["image"]
    assert detail["dtype"] == np.int8
    scale, zero_point = detail["quantization"]
    x = np.clip(np.round(x_val[:64] / scale) + zero_point, -128, 127).astype(np.int8)
    (out,) = runner(image=x).values()
    out_scale, out_zero = runner.get_output_details()[next(iter(runner.get_output_details()))]["quantization"]
    logits = (out.astype("float32") - out_zero) * out_scale
    final = qat.predict(x_val[:64], verbose=0)[-1]
    assert (logits.argmax(1) == final.argmax(1)).mean() >= 0.97
