"""`export_static`: one output of a Keras model as a single static .tflite.

The baseline the chained runtime is measured against: the same trained
network, run to its final exit by one interpreter, no decisions.
"""

import os

import keras

from keras_dynamic.converters import tflite


def export_static(model, path, *, output=None, quantize=None, dynamic_conv_form=None):
    """Converts `model` truncated to one output into `path` (builtins only).

    Args:
        model: a functional `keras.Model`.
        path: the `.tflite` file to write (atomically).
        output: name of the output layer to keep; default the model's last
            output (the final exit of a multi-exit model).
        quantize: as in `export_stages` (`None` or `"float16"`).
        dynamic_conv_form: as in `export_stages`.

    Returns:
        `path`. The file has one signature, `serving_default`, with input
        names of the model and the output named after the kept layer.

    Example:

    >>> import os, tempfile, keras_dynamic as kd
    >>> model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    >>> path = kd.converters.export_static(model, os.path.join(tempfile.mkdtemp(), "m.tflite"))
    >>> os.path.getsize(path) > 0
    True
    """
    if quantize not in (None, "float16"):
        raise ValueError(
            "export_static supports quantize=None or 'float16'. "
            f"Received: quantize={quantize!r}"
        )
    names = [t._keras_history[0].name for t in model.outputs]
    output = names[-1] if output is None else output
    if output not in names:
        raise ValueError(
            f"Model '{model.name}' has no output named {output!r}. "
            f"Outputs: {names}"
        )
    truncated = keras.Model(
        model.inputs, model.outputs[names.index(output)], name=f"{model.name}_static"
    )
    input_names = [t._keras_history[0].name for t in model.inputs]
    with tflite.dynamic_conv_form(model, dynamic_conv_form):
        endpoint = ("serving_default", truncated, input_names, [output])
        batch_size = tflite.signature_batch_size(dynamic_conv_form)
        with tflite.saved_model_of([endpoint], batch_size) as saved_model:
            content = tflite.convert_signatures(
                saved_model, ["serving_default"], quantize=quantize
            )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tflite.write_atomically(path, content)
    return path
