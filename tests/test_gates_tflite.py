"""Gates, routers and merges convert to builtin TFLite ops and match Keras.

The exporter cuts gated models into stages that must run on builtin kernels
only (no Flex), so the decision and merge layers themselves must convert
that way. Needs the TensorFlow backend and a TFLite interpreter.
"""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip(
        "TFLite conversion needs the TensorFlow backend", allow_module_level=True
    )
tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

import keras_dynamic as kd  # noqa: E402

RNG = np.random.default_rng(4)
DECISION_LAYERS = (kd.layers.BlockGate, kd.layers.ChannelGate, kd.layers.Router)


def _convert_and_run(model, x):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = litert.Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    outputs = runner(**{input_name: x})
    # Signature outputs are named output_0, output_1, ... in model order.
    return [outputs[f"output_{i}"] for i in range(len(outputs))]


@pytest.mark.slow
@pytest.mark.parametrize(
    "options, force",
    [
        ({"gating": "block", "moe_experts": 3}, None),
        ({"gating": "block", "moe_experts": 3}, "off"),
        ({"gating": "channel", "channel_groups": 2}, None),
    ],
    ids=["block_gates_and_router", "gates_forced_off", "channel_gates"],
)
def test_builtin_conversion_matches_keras(options, force):
    model = kd.models.gated_resnet(
        (8, 8, 3), num_classes=5, widths=(4, 8), blocks_per_stage=(2, 1), **options
    )
    decisions = [
        layer.output for layer in model.layers if isinstance(layer, DECISION_LAYERS)
    ]
    probe = keras.Model(model.input, [model.output, *decisions])
    x = RNG.normal(size=(1, 8, 8, 3)).astype("float32")
    with kd.layers.force_gates(probe, force):
        expected = probe.predict(x, verbose=0)
        got = _convert_and_run(probe, x)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
    for g, e in zip(got[1:], expected[1:]):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
