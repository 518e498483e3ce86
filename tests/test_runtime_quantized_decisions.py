"""Gate and route decisions read on int8/uint8 codes equal those on their real values."""

import numpy as np
import pytest

from keras_dynamic.runtime.quantized import dequantize
from keras_dynamic.runtime.walk import Decision


@pytest.mark.parametrize(
    "dtype, zero_point", [("int8", -3), ("int8", 120), ("int8", -128), ("uint8", 7), ("uint8", 250)]
)
@pytest.mark.parametrize("scale", [1e-4, 1 / 255, 0.0039, 0.02, 0.5, 3.0])
def test_decisions_on_codes_match_the_dequantized_ones(dtype, zero_point, scale):
    quant = {"scale": scale, "zero_point": zero_point}
    info = np.iinfo(dtype)
    # Every code, so the gate's first "on" code is tested on both sides
    # (and a gate that can never be on, where 0.5 is above every code).
    codes = np.arange(info.min, info.max + 1).astype(dtype).reshape(-1, 1)
    gate = Decision("gate", "g", "t", quant, 1)
    np.testing.assert_array_equal(gate.read(codes), dequantize(codes, quant) > 0.5)
    rows = np.random.default_rng(0).integers(info.min, info.max + 1, (500, 4)).astype(dtype)
    rows[0] = rows[0, 0]  # a tie: the first of the equal codes wins, as on the reals
    route = Decision("route", "r", "t", quant, 4)
    np.testing.assert_array_equal(route.read(rows), dequantize(rows, quant).argmax(axis=1))


def test_float_decisions_are_read_as_before():
    gate = Decision("gate", "g", "t", None, 2)
    np.testing.assert_array_equal(gate.read(np.array([[0.5, 0.51]], np.float32)), [[False, True]])
