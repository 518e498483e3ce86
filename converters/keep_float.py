"""Selective int8 quantization: the ops an int8 export leaves in float32.

``export_stages(..., quantize="int8", keep_float=RULE)`` (and
`export_static`) quantize everything but the ops the rule picks:

- ``"single_channel_input"``: every CONV_2D and DEPTHWISE_CONV_2D that reads
  a single-channel model input (a grayscale image, a spectrogram), and every
  ADD that joins only such convolutions' outputs (a residual block's
  projection). With one input channel there is almost no arithmetic per
  output for int8 to speed up, while every output is requantized: on
  XNNPACK such a convolution runs at 0.56-0.59x of its float32 speed in int8,
  and the MNIST network's first stage is faster with them in float32
  (BENCHMARKS.md "Where the int8 first stage loses"). From three input
  channels (RGB) int8 wins, so the rule leaves such stems in int8.

Everything else stays int8, and the stage interfaces are what ``interface``
asks: an int8 model input is dequantized once inside the stage (one
DEQUANTIZE op) and the float result quantized once before the first int8 op,
so the tensors that cross the cuts are integers as before. NPU and DSP
delegates that take integer ops only leave a float op to the CPU: keep the
default (None, every op int8) for them.

The conversion is the converter's own: calibration, then its MLIR quantizer
with ``denylisted_nodes`` (what `tf.lite.experimental.QuantizationDebugger`
does for selective quantization), the float ops named by their output
tensors in the calibrated model.
"""

from __future__ import annotations

from tensorflow.lite.tools import flatbuffer_utils

RULES = (None, "single_channel_input")
_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def check(keep_float, quantize):
    """Raises ValueError for an unknown rule, or a rule without int8."""
    if keep_float not in RULES:
        raise ValueError(
            f"`keep_float` must be one of {RULES}. Received: keep_float={keep_float!r}"
        )
    if keep_float is not None and quantize != "int8":
        raise ValueError(
            f"keep_float={keep_float!r} picks ops to leave in float32 in an int8 "
            f"export; it needs quantize='int8'. Received: quantize={quantize!r}"
        )


def float_nodes(calibrated, rule, model_inputs):
    """Output tensor names of the ops of ``calibrated`` that ``rule`` keeps in float32.

    Args:
        calibrated: the converter's calibrated float model (bytes).
        rule: one of `RULES` (None picks nothing).
        model_inputs: names of the model's inputs (signature input names);
            other signature inputs are tensors handed on from earlier stages.

    Returns:
        The names, in op order, without duplicates: the quantizer matches a
        name in every subgraph, so a name that also ends an op the rule did
        not pick (in another signature of the file) is left out, and that op
        quantized, rather than leave an op in float that the rule did not ask for.
    """
    if rule is None:
        return []
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    picked, others = [], set()
    for signature in model.signatureDefs or []:
        subgraph = model.subgraphs[signature.subgraphIndex]
        single_channel = {
            item.tensorIndex for item in signature.inputs
            if _name(item.name) in model_inputs
            and _shape(subgraph.tensors[item.tensorIndex])[-1:] == [1]
        }
        kept = set()  # tensors the float ops produce
        for op in subgraph.operators:
            kind = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            inputs = [i for i in op.inputs if i >= 0]
            keep = (kind in _CONVOLUTIONS and inputs[0] in single_channel) or (
                kind == "ADD" and all(i in kept for i in inputs)
            )
            names = [_name(subgraph.tensors[i].name) for i in op.outputs]
            if keep:
                kept.update(op.outputs)
                picked.extend(names)
            else:
                others.update(names)
    return list(dict.fromkeys(n for n in picked if n not in others))


def _name(raw):
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _shape(tensor):
    return [] if tensor.shape is None else [int(d) for d in tensor.shape]


__all__ = ["RULES", "check", "float_nodes"]
