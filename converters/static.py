"""`export_static`: one output of a Keras model as a single static .tflite.

The baseline the chained runtime is measured against: the same trained
network, run to its final exit by one interpreter, no decisions.
"""

import os

import keras

from keras_dynamic.converters import batch_size as batch_sizes
from keras_dynamic.converters import checks
from keras_dynamic.converters import dynamic_conv
from keras_dynamic.converters import folders
from keras_dynamic.converters import int8_forms
from keras_dynamic.converters import keep_float as keep_float_rule
from keras_dynamic.converters import logs
from keras_dynamic.converters import samples
from keras_dynamic.converters import tflite
from keras_dynamic.converters.partition import exit_names
from keras_dynamic.converters.partition import input_names
from keras_dynamic.runtime.files import atomic_write_bytes


def export_static(
    model: keras.Model,
    path: "str | os.PathLike",
    *,
    output: "str | None" = None,
    quantize: "str | None" = None,
    representative_data=None,
    interface: "str | None" = None,
    keep_float=None,
    dynamic_conv_form: "str | None" = "auto",
    verbose: int = 1,
) -> str:
    """Converts `model` truncated to one output into `path` (builtins only).

    Args:
        model: a functional `keras.Model` (a mixed_float16 one is converted
            as a float32 copy with the same weights).
        path: the `.tflite` file to write (atomically, with the mode a new
            file gets under the umask).
        output: name of the output to keep (a dict output's key, else its
            layer's name); default the model's deepest output in
            `model.outputs` order (the final exit of a multi-exit model).
        quantize: as in `export_stages`: `None`, `"float16"` or `"int8"`
            (calibrated on `representative_data`: the static baseline of an
            int8 chain).
        representative_data: as in `export_stages`, for `quantize="int8"`.
        interface: as in `export_stages`: with `quantize="int8"` the model's
            input and output are int8 by default (`"uint8"`, or `"float"`).
        keep_float: as in `export_stages`: None, or the rules of ops to
            leave in float32 (`"single_channel_input"`, `"hard_swish"`; the
            static baseline of a chain exported that way).
        dynamic_conv_form: as in `export_stages` (default `"auto"`, so the
            baseline computes its convolutions as the stages do).
        verbose: as in `export_stages`: 0 silent, 1 one line, 2 lets
            TensorFlow's log through.

    Returns:
        `path`. The file has one signature, `serving_default`, with the
        manifest's input names and the output named after the kept layer.

    Example:

    >>> import os, tempfile, keras_dynamic as kd
    >>> model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    >>> path = kd.converters.export_static(
    ...     model, os.path.join(tempfile.mkdtemp(), "m.tflite"), verbose=0)
    >>> os.path.getsize(path) > 0
    True
    """
    checks.require_tensorflow_backend("export_static")
    if quantize not in tflite.QUANTIZE_OPTIONS:
        raise ValueError(
            f"`quantize` must be one of {tflite.QUANTIZE_OPTIONS}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: typical model inputs to "
            "calibrate the activation ranges on."
        )
    interface = _interface(interface, quantize)
    keep_float = keep_float_rule.rules_of(keep_float, quantize)
    dynamic_conv.check_form(dynamic_conv_form)
    logs.check_verbose(verbose)
    names = exit_names(model)
    output = names[-1] if output is None else output
    if output not in names:
        raise ValueError(
            f"Model '{model.name}' has no output named {output!r}. "
            f"Outputs: {names}"
        )
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with logs.captured_stderr(enabled=verbose < 2):
        model = checks.plain_model(model)
        checks.check_inputs(model)
        kept = model.outputs[names.index(output)]
        truncated = keras.Model(model.inputs, kept, name=f"{model.name}_static")
        endpoint = (
            "serving_default",
            truncated,
            input_names(model),
            [kept._keras_history[0].name],
        )
        with dynamic_conv.forms_applied(
            model, dynamic_conv_form, quantize
        ) as forms, int8_forms.forms_applied(model, quantize):
            with folders.staging_folder(folder) as staging:
                batch_size = batch_sizes.signature_batch_size(model, forms)
                with tflite.saved_model_of([endpoint], staging, batch_size) as saved:
                    content = tflite.convert_signatures(
                        saved, ["serving_default"], quantize=quantize,
                        representative_dataset=_dataset(model, representative_data, quantize),
                        interface=interface,
                        keep_float=keep_float,
                        model_inputs=input_names(model),
                    )
                atomic_write_bytes(path, content)
    if verbose:
        print(
            f"Converted output '{output}' of model '{model.name}' to {path} "
            f"({len(content) / 1024:.1f} KiB, {quantize or 'float32'}"
            f"{'' if interface == 'float' else f', {interface} interface'}, TFLite "
            "builtin ops only).",
            flush=True,
        )
    return path


def _interface(interface, quantize):
    # One rule for the stages and their baseline.
    from keras_dynamic.converters.export import _check_interface

    return _check_interface(interface, quantize)


def _dataset(model, representative_data, quantize):
    """The converter's representative dataset: one sample per call, or None."""
    if quantize != "int8":
        return None
    calibration = samples.calibration_inputs(model, representative_data)
    count = len(next(iter(calibration.values())))

    def generate():
        for row in range(count):
            yield "serving_default", {
                name: array[row : row + 1] for name, array in calibration.items()
            }

    return generate
