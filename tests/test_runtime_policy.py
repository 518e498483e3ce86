import numpy as np
import pytest

from keras_dynamic.runtime.policy import ExitRule
from keras_dynamic.runtime.policy import decider
from keras_dynamic.runtime.policy import fires
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.quantized import dequantize


@pytest.mark.parametrize("num_classes", [2, 10, 32, 33, 1000])
@pytest.mark.parametrize("kind", ["max_softmax", "entropy"])
def test_decider_matches_fires_on_every_row(kind, num_classes):
    rng = np.random.default_rng(num_classes)
    logits = (rng.standard_normal((300, num_classes)) * rng.uniform(0.1, 8, (300, 1)))
    logits = logits.astype(np.float32)
    logits[0] = 0.0  # a uniform row
    logits[1, 0] = np.nan
    logits[2, 0] = np.inf
    logits[3, :] = -np.inf
    probabilities = softmax(logits[4:])
    if kind == "max_softmax":
        scores = probabilities.max(axis=1)
    else:
        scores = -(probabilities * np.log(np.maximum(probabilities, 1e-300))).sum(axis=1)
    # Observed scores as thresholds put rows exactly on the boundary.
    thresholds = [0.0, -1.0, 0.5, 2.0, *scores[:20]]
    if kind == "max_softmax":
        scores64 = 1.0 / np.exp(
            logits[4:].astype(np.float64) - logits[4:].max(axis=1, keepdims=True)
        ).sum(axis=1)
        thresholds += [*scores64[:20], *np.nextafter(scores64[:10], 2.0)]
    for threshold in thresholds:
        rule = ExitRule(kind, float(threshold))
        leaves = decider(rule)
        with np.errstate(invalid="ignore"):
            expected = fires(rule, logits)
            got = [leaves(logits[i : i + 1]) for i in range(len(logits))]
        np.testing.assert_array_equal(got, expected, err_msg=f"threshold {threshold}")


@pytest.mark.parametrize("dtype, zero_point", [("int8", -7), ("uint8", 131), ("int16", 12)])
@pytest.mark.parametrize("kind", ["max_softmax", "entropy"])
def test_decider_on_quantized_codes_matches_fires_on_their_real_values(kind, dtype, zero_point):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    codes = rng.integers(max(info.min, -128), min(info.max, 255) + 1, (300, 10)).astype(dtype)
    codes[0] = zero_point  # a uniform row
    quant = {"scale": 0.0937, "zero_point": zero_point}
    real = dequantize(codes, quant)
    probabilities = softmax(real)
    if kind == "max_softmax":
        scores = 1.0 / np.exp(real.astype(np.float64) - real.max(axis=1, keepdims=True)).sum(axis=1)
    else:
        scores = -(probabilities * np.log(np.maximum(probabilities, 1e-300))).sum(axis=1)
    # Observed scores as thresholds put rows exactly on the boundary.
    for threshold in [0.0, 0.5, *scores[:20], *np.nextafter(scores[:10], 2.0)]:
        rule = ExitRule(kind, float(threshold))
        leaves = decider(rule, quantization=quant)
        got = [leaves(codes[i : i + 1]) for i in range(len(codes))]
        np.testing.assert_array_equal(got, fires(rule, real), err_msg=f"threshold {threshold}")


def test_decider_of_no_rule_is_none():
    assert decider(None) is None
