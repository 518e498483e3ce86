"""Keras (sub-)models -> builtin-ops-only TFLite flatbuffers with named signatures.

Every stage becomes an endpoint of one Keras `ExportArchive` whose inputs and
outputs carry the manifest's tensor names, then `TFLiteConverter.from_saved_model`
turns the chosen signatures into one flatbuffer. Signature keys address tensors
by name, which matters because TFLite does not preserve the order of list
outputs.
"""

import contextlib
import os
import shutil

import keras
import tensorflow as tf
from tensorflow.lite.python import convert as lite_convert

from keras_dynamic.converters.keep_float import float_nodes

QUANTIZE_OPTIONS = (None, "float16", "int8")
# The dtype of an int8 export's stage inputs and outputs: float32 (quantized
# inside each stage), int8, or uint8 (for delegates that want it).
INTERFACES = ("float", "int8", "uint8")
_INTERFACE_DTYPES = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}


class ConversionError(ValueError):
    """A stage could not be converted with TFLITE_BUILTINS; names the stage."""


@contextlib.contextmanager
def saved_model_of(endpoints, folder, batch_size=None):
    """Writes `endpoints` to a SavedModel inside `folder` and yields its path.

    The SavedModel is removed when the block ends. `folder` is the export's
    staging folder, so a killed export leaves no SavedModel elsewhere.

    Args:
        endpoints: list of `(signature_key, keras_model, input_names,
            output_names)`; the model is called with `training=False` and its
            outputs are returned under `output_names`.
        folder: where to write it.
        batch_size: `None` for signatures that take any batch size, or a
            fixed batch size.
    """
    archive = keras.export.ExportArchive()
    for key, model, input_names, output_names in endpoints:
        archive.track(model)
        archive.add_endpoint(
            name=key,
            fn=_endpoint_fn(model, output_names),
            input_signature=[
                tf.TensorSpec(
                    (batch_size, *tensor.shape[1:]), tensor.dtype, name=name
                )
                for name, tensor in zip(input_names, model.inputs)
            ],
        )
    path = os.path.join(folder, "saved_model")
    try:
        archive.write_out(path, verbose=False)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _endpoint_fn(model, output_names):
    def endpoint(*inputs):
        # Stage models are built from input lists; the static baseline's
        # truncated model keeps the user's structure, a list as well.
        outputs = model(list(inputs), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(output_names, outputs))

    return endpoint


def convert_signatures(
    saved_model_dir,
    signature_keys,
    *,
    quantize=None,
    representative_dataset=None,
    stage_layers=None,
    interface="float",
    keep_float=(),
    model_inputs=(),
):
    """Converts the given signatures of a SavedModel to one TFLite flatbuffer.

    With ``quantize="int8"``, ``interface`` sets the dtype of every input and
    output of the signatures: `"float"` (float32, quantized and dequantized
    inside), `"int8"` or `"uint8"` (the converter's inference input and
    output types: the tensors cross the signature boundary as integers with
    the scale and zero point calibration gave them).

    ``keep_float`` (int8 only) holds names of `keep_float.RULES` for ops
    to leave in float32; ``model_inputs`` are the signature inputs that are
    model inputs, which the rule looks at.

    Only `TFLITE_BUILTINS` are allowed: Flex (select TF ops) models run in
    neither edge runtime, and delegates refuse them. The converter's
    exception holds the diagnostics it also logs, so its first lines go into
    the `ConversionError`.

    Returns:
        The flatbuffer as `bytes`.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=list(signature_keys)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        if interface != "float":
            dtype = _INTERFACE_DTYPES[interface]
            converter.inference_input_type = dtype
            converter.inference_output_type = dtype
    try:
        if quantize == "int8" and keep_float:
            return _quantize_keeping_float(
                converter, _INTERFACE_DTYPES[interface], keep_float, model_inputs
            )
        return converter.convert()
    except Exception as error:  # the converter raises several unrelated types
        layers = ""
        if stage_layers:
            layers = " (layers: " + ", ".join(stage_layers) + ")"
        first_lines = "\n".join(str(error).strip().splitlines()[:12])
        raise ConversionError(
            f"Could not convert {', '.join(map(repr, signature_keys))}{layers} "
            "with TFLITE_BUILTINS only (no Flex ops allowed). A layer in it "
            "uses an op TFLite has no builtin kernel for. Converter said:\n"
            f"{first_lines}"
        ) from error


def _quantize_keeping_float(converter, dtype, rules, model_inputs):
    """The converter's int8 conversion with the ops ``rules`` pick left in float32.

    What ``converter.convert()`` does (calibrate, then the MLIR quantizer with
    ``dtype`` at the interfaces; the same ops, scales and weights when nothing is
    picked), with those ops' output tensors denylisted.
    """
    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    return lite_convert.mlir_quantize(
        calibrated,
        input_data_type=dtype,
        output_data_type=dtype,
        denylisted_nodes=float_nodes(calibrated, rules, set(model_inputs)) or None,
    )
