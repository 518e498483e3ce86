"""Requantizing hand-off: a stage reads a crossing integer tensor at its producer's scale.

With int8 interfaces the runtime hands a stage's integer output to later
stages as it is. Calibration usually gives producer and consumer the same
scale, but the converter may move a consumer's input to another one: an input
that feeds a CONCATENATION takes the scale the concatenation ties its inputs
to, which the producer (where the tensor feeds a convolution, say) never
sees. The integers would then mean different values on the two sides.

The fix keeps both calibrations: the consumer's signature input gets the
producer's quantization, and one QUANTIZE op at the start of the stage (int8
to int8, or uint8 to uint8) requantizes it to the scale the converter chose,
before its first use. Nothing else in the subgraph changes. The export's
parity check then runs the rewritten files on the real interpreter.
"""

import copy
import dataclasses

from keras_dynamic.runtime.flatbuffer import pack
from keras_dynamic.runtime.flatbuffer import tflite_schema

# The TFLite version of QUANTIZE that requantizes an integer tensor (version 1
# is float to integer only).
_REQUANTIZE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Requantization:
    """One signature input to read at another quantization.

    Attributes:
        signature: the stage's signature key.
        tensor: the signature's input name.
        scale: the scale it is to be read at (the producer's).
        zero_point: the zero point it is to be read at.
    """

    signature: str
    tensor: str
    scale: float
    zero_point: int


def requantize_inputs(content: bytes, requantizations) -> bytes:
    """The model with each named signature input read at its new quantization.

    Args:
        content: the ``.tflite`` file's bytes.
        requantizations: `Requantization`s of signatures of this file.

    Returns:
        The rewritten file's bytes; ``content`` itself where there is nothing
        to do.

    Raises:
        ValueError: a signature or input is not in the file, or the input is
            not a per-tensor quantized int8 or uint8 tensor.
    """
    requantizations = list(requantizations)
    if not requantizations:
        return content
    schema = tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    signatures = {s.signatureKey.decode(): s for s in model.signatureDefs or ()}
    opcode = _quantize_opcode(schema, model)
    for change in requantizations:
        if change.signature not in signatures:
            raise ValueError(f"the file has no signature {change.signature!r}.")
        signature = signatures[change.signature]
        entries = {entry.name.decode(): entry for entry in signature.inputs or ()}
        if change.tensor not in entries:
            raise ValueError(
                f"signature {change.signature!r} has no input {change.tensor!r}."
            )
        entry = entries[change.tensor]
        subgraph = model.subgraphs[signature.subgraphIndex]
        entry.tensorIndex = _requantized_input(
            schema, subgraph, entry.tensorIndex, change, opcode
        )
    return pack(model, len(content))


def _quantize_opcode(schema, model):
    """The index of a QUANTIZE operator code that requantizes; added where missing.

    A file's own float-to-int8 QUANTIZE code keeps its version (delegates
    check versions): ops of one kind and two versions have two codes.
    """
    code = schema.BuiltinOperator.QUANTIZE
    for index, existing in enumerate(model.operatorCodes):
        if (
            max(existing.builtinCode, existing.deprecatedBuiltinCode) == code
            and existing.version == _REQUANTIZE_VERSION
        ):
            return index
    added = schema.OperatorCodeT()
    added.builtinCode = code
    added.deprecatedBuiltinCode = min(code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    added.version = _REQUANTIZE_VERSION
    model.operatorCodes.append(added)
    return len(model.operatorCodes) - 1


def _requantized_input(schema, subgraph, index, change, opcode):
    """Adds the new input tensor and its QUANTIZE op; returns the new tensor's index."""
    old = subgraph.tensors[index]
    quantization = old.quantization
    if (
        old.type not in (schema.TensorType.INT8, schema.TensorType.UINT8)
        or quantization is None
        or quantization.scale is None
        or len(quantization.scale) != 1
    ):
        raise ValueError(
            f"input {change.tensor!r} of signature {change.signature!r} is not a "
            "per-tensor quantized int8 or uint8 tensor."
        )
    new = copy.deepcopy(old)
    new.name = old.name + b"/handed_off"
    new.buffer = 0  # an activation: no data of its own
    new.quantization.scale = [float(change.scale)]
    new.quantization.zeroPoint = [int(change.zero_point)]
    subgraph.tensors.append(new)
    new_index = len(subgraph.tensors) - 1
    subgraph.inputs = [new_index if i == index else i for i in subgraph.inputs]
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = [new_index]
    op.outputs = [index]
    # First: TFLite runs the ops in their order, and the old tensor is now
    # this op's output, read by every op that read the input.
    subgraph.operators.insert(0, op)
    return new_index


__all__ = ["Requantization", "requantize_inputs"]
