"""Integer stage interfaces of int8 exports: what the files say, and the hand-off check.

With ``export_stages(..., quantize="int8", interface="int8")`` every stage
takes and gives integer tensors, each with the scale and zero point its
calibration found. A tensor that crosses a cut is an output of one stage and
an input of later ones; the runtime hands the integers on as they are, which
is exact only where producer and consumers agree on the quantization. They
do when each stage is calibrated on the activations the earlier stages
really produce (what `export_stages` does): the consumer observes the same
range the producer did. Where the converter still moves a consumer's input
to another scale (an input feeding a concatenation takes the scale the
concatenation ties), the consumer requantizes it (`requantize`). This
module reads each stage's inputs and outputs from the converted files,
checks that agreement, and gives the manifest its tensor specs.
"""

import numpy as np

from keras_dynamic.converters.requantize import Requantization
from keras_dynamic.converters.tflite import ConversionError
from keras_dynamic.runtime.interpreter import interpreter_class

# As the runtime's check at load (runtime/interpreter.py): the manifest
# stores float32 scales as JSON numbers, and two calibrations of one range
# round to scales a few ulps apart.
SCALE_RTOL = 1e-6


def _spec(detail):
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"]).name
    quantization = None
    if scale != 0.0:
        quantization = {"scale": float(scale), "zero_point": int(zero_point)}
    return dtype, quantization


def read_interfaces(paths_by_stage):
    """``{stage: {"inputs"|"outputs": {tensor: (dtype, quantization)}}}`` from the files.

    Args:
        paths_by_stage: ``{stage name (= signature key): .tflite path}``.
    """
    interpreter_type, _ = interpreter_class()
    interpreters, found = {}, {}
    for stage, path in paths_by_stage.items():
        if path not in interpreters:
            interpreters[path] = interpreter_type(model_path=path)
        runner = interpreters[path].get_signature_runner(stage)
        found[stage] = {
            "inputs": {n: _spec(d) for n, d in runner.get_input_details().items()},
            "outputs": {n: _spec(d) for n, d in runner.get_output_details().items()},
        }
    return found


def _agree(a, b):
    if a[0] != b[0] or (a[1] is None) != (b[1] is None):
        return False
    if a[1] is None:
        return True
    scale_a, scale_b = a[1]["scale"], b[1]["scale"]
    return (
        a[1]["zero_point"] == b[1]["zero_point"]
        and abs(scale_a - scale_b) <= SCALE_RTOL * max(scale_a, scale_b)
    )


def _crossings(interfaces):
    """``(stage, tensor, where, first spec, stage's spec)`` of every crossing read.

    ``first`` is the producer's spec (or the first reader's, for a model input).
    """
    seen = {}
    for stage, sides in interfaces.items():
        for name, spec in sides["outputs"].items():
            seen[name] = (f"stage {stage!r} output", spec)
    for stage, sides in interfaces.items():
        for name, spec in sides["inputs"].items():
            if name not in seen:
                seen[name] = (f"stage {stage!r} input", spec)  # a model input
                continue
            where, first = seen[name]
            yield stage, name, where, first, spec


def requantizations(interfaces):
    """The `Requantization`s that make every integer hand-off exact.

    A consumer that reads a crossing int8 (or uint8) tensor at another scale
    or zero point than its producer wrote is to read it at the producer's and
    requantize it itself (`requantize.requantize_inputs`). Mismatches of
    another kind (int8 against float32 or uint8) are left to `check_hand_off`.
    """
    return [
        Requantization(stage, name, first[1]["scale"], first[1]["zero_point"])
        for stage, name, _, first, spec in _crossings(interfaces)
        if not _agree(first, spec)
        and first[0] == spec[0]
        and spec[0] in ("int8", "uint8")
        and first[1] is not None
        and spec[1] is not None
    ]


def check_hand_off(interfaces, model_inputs):
    """Raises `ConversionError` where a crossing tensor's quantization differs.

    Every consumer of a tensor (a later stage, or every stage reading one
    model input) must read it with the quantization its producer wrote (or
    the first reader's, for a model input).
    """
    for stage, name, where, first, spec in _crossings(interfaces):
        if not _agree(first, spec):
            kind = "model input" if name in model_inputs else "tensor"
            raise ConversionError(
                f"int8 interface: {kind} {name!r} is {first[0]} {first[1]} as the "
                f"{where} but stage {stage!r} reads it as {spec[0]} {spec[1]}; handing "
                "it on would need requantization. Export with interface='float' "
                "(float32 stage interfaces) instead."
            )


__all__ = ["read_interfaces", "requantizations", "check_hand_off", "SCALE_RTOL"]
