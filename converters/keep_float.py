"""Selective int8 quantization: the ops an int8 export leaves in float32.

``export_stages(..., quantize="int8", keep_float=RULES)`` (and
`export_static`) quantize everything but the ops the rules pick (one rule
name, or a sequence of them):

- ``"single_channel_input"``: every CONV_2D and DEPTHWISE_CONV_2D that reads
  a single-channel model input (a grayscale image, a spectrogram), and every
  ADD that joins only such convolutions' outputs (a residual block's
  projection). With one input channel there is almost no arithmetic per
  output for int8 to speed up, while every output is requantized: on
  XNNPACK such a convolution runs at 0.56-0.6x of its float32 speed in int8,
  and the MNIST network's first stage is 1.35x faster with them in float32
  (BENCHMARKS.md "Where the int8 first stage loses"). From three input
  channels (RGB) int8 gains as much, so the rule leaves such stems in int8.
- ``"hard_swish"``: every HARD_SWISH (MobileNetV3's activation). XNNPACK has
  no int8 kernel for it, so in an int8 file it runs on TFLite's reference
  kernel, several times slower than in float32, and splits the delegate
  partition; between a DEQUANTIZE and a QUANTIZE (both on XNNPACK) the float
  op rounds its output once, as the int8 op does (BENCHMARKS.md).

Everything else stays int8, and the stage interfaces are what ``interface``
asks: an int8 model input is dequantized once inside the stage (one
DEQUANTIZE op) and a float result quantized once before the next int8 op,
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

RULES = ("single_channel_input", "hard_swish")
_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def rules_of(keep_float, quantize):
    """``keep_float`` as a tuple of rule names; raises ValueError where it is not one.

    None (or an empty sequence) is ``()``: every op int8.

    Example:

    >>> rules_of(None, "int8")
    ()
    >>> rules_of(["single_channel_input", "hard_swish"], "int8")
    ('single_channel_input', 'hard_swish')
    >>> rules_of("hard_swish", None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: keep_float='hard_swish' picks ops ... it needs quantize='int8'. Received: quantize=None
    """
    if keep_float is None:
        return ()
    names = (keep_float,) if isinstance(keep_float, str) else keep_float
    try:
        names = tuple(names)
    except TypeError:
        names = (keep_float,)
    unknown = [name for name in names if name not in RULES]
    if unknown:
        raise ValueError(
            f"`keep_float` takes None, or rule names from {RULES} (one, or a sequence). "
            f"Received: keep_float={keep_float!r}"
        )
    if names and quantize != "int8":
        raise ValueError(
            f"keep_float={keep_float!r} picks ops to leave in float32 in an int8 "
            f"export; it needs quantize='int8'. Received: quantize={quantize!r}"
        )
    return tuple(dict.fromkeys(names))


def float_nodes(calibrated, rules, model_inputs):
    """Output tensor names of the ops of ``calibrated`` that ``rules`` keep in float32.

    Args:
        calibrated: the converter's calibrated float model (bytes).
        rules: rule names (`rules_of`); none picks nothing.
        model_inputs: names of the model's inputs (signature input names);
            other signature inputs are tensors handed on from earlier stages.

    Returns:
        The names, in op order, without duplicates: the quantizer matches a
        name in every subgraph, so a name that also ends an op the rules did
        not pick (in another signature of the file) is left out, and that op
        quantized, rather than leave an op in float that no rule asked for.
    """
    if not rules:
        return []
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    picked, others = [], set()
    for signature in model.signatureDefs or []:
        subgraph = model.subgraphs[signature.subgraphIndex]
        single_channel = set()
        if "single_channel_input" in rules:
            single_channel = {
                item.tensorIndex for item in signature.inputs
                if _name(item.name) in model_inputs
                and _shape(subgraph.tensors[item.tensorIndex])[-1:] == [1]
            }
        stem = set()  # tensors the float stem produces
        for op in subgraph.operators:
            kind = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
            inputs = [i for i in op.inputs if i >= 0]
            in_stem = (kind in _CONVOLUTIONS and inputs[0] in single_channel) or (
                kind == "ADD" and stem and all(i in stem for i in inputs)
            )
            if in_stem:
                stem.update(op.outputs)
            names = [_name(subgraph.tensors[i].name) for i in op.outputs]
            if in_stem or (kind == "HARD_SWISH" and "hard_swish" in rules):
                picked.extend(names)
            else:
                others.update(names)
    return list(dict.fromkeys(n for n in picked if n not in others))


def _name(raw):
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _shape(tensor):
    return [] if tensor.shape is None else [int(d) for d in tensor.shape]


__all__ = ["RULES", "rules_of", "float_nodes"]
