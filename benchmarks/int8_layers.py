"""Where int8 pays at batch 1 on XNNPACK: single layers timed as float32 and int8 models.

The int8 chain of `multi_exit_cnn` gains little over the float32 one because
most images leave at its first stage, and that stage's layers are the ones
int8 speeds up least. This times, one layer per model, the first stage's
pieces on a 28x28 digit, float32 against int8 (weights and activations,
int8 interfaces), interleaved in one run: a model that only copies its input
(the cost of one invoke from Python), a 3x3 convolution from the single
input channel to 32 (and the same as a depthwise convolution with a depth
multiplier of 32), its 1x1 residual projection, the exit head's 3x3 stride-2
convolution over 32 channels, and the head's grid pooling as
AVERAGE_POOL_2D against a depthwise convolution of constant weights (which
XNNPACK takes in int8).

Then the whole first stage of `multi_exit_cnn((28, 28, 1), 10)` (its exit
and the block output, initial weights, calibrated on random images) three
ways, converted as `export_stages` converts a stage: float32, int8 (the grid
pooling as a depthwise convolution), and int8 with
``keep_float="single_channel_input"`` (the two single-channel convolutions
and their residual ADD left in float32; int8 interfaces in both).

    PYTHONPATH=. .venv/bin/python benchmarks/int8_layers.py [--rounds 15]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras  # noqa: E402
from keras_dynamic.runtime.xnnpack import interpreter_coverage  # noqa: E402


def _layers():
    """(name, input shape, layer factory) of every measured model."""
    def pooling_as_depthwise():
        layer = keras.layers.DepthwiseConv2D(3, strides=3, use_bias=False, trainable=False)
        layer.build((1, 14, 14, 32))
        layer.set_weights([np.full((3, 3, 32, 1), 1 / 9, "float32")])
        return layer

    return [
        ("copy of the input (one invoke)", (28, 28, 1), lambda: keras.layers.ReLU()),
        ("conv 3x3, 1 -> 32 channels, 28x28", (28, 28, 1),
         lambda: keras.layers.Conv2D(32, 3, padding="same")),
        ("depthwise 3x3, 1 -> 32 (multiplier 32)", (28, 28, 1),
         lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=32)),
        ("conv 1x1, 1 -> 32 (residual projection)", (28, 28, 1),
         lambda: keras.layers.Conv2D(32, 1)),
        ("conv 3x3 stride 2, 32 -> 32, 28x28", (28, 28, 32),
         lambda: keras.layers.Conv2D(32, 3, strides=2, padding="same")),
        ("average pool 3x3 stride 3, 14x14x32", (14, 14, 32),
         lambda: keras.layers.AveragePooling2D(3)),
        ("the same pooling as a depthwise conv", (14, 14, 32), pooling_as_depthwise),
    ]


def convert(model, int8, shape):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        data = np.random.default_rng(0).random((64,) + shape).astype("float32")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([d[None]] for d in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def first_stage_contents():
    """``{form: .tflite bytes}`` of multi_exit_cnn's first stage (see the docstring)."""
    import tempfile

    import tensorflow as tf

    import keras_dynamic as kd
    from keras_dynamic.converters import int8_forms
    from keras_dynamic.converters import tflite

    keras.utils.set_random_seed(0)
    model = kd.models.multi_exit_cnn((28, 28, 1), 10)
    stage = keras.Model(
        model.input, [model.get_layer("exit_1").output, model.get_layer("block1_out").output]
    )
    data = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    contents = {"float32": tf.lite.TFLiteConverter.from_keras_model(stage).convert()}
    # The int8 forms through the exporter's own conversion of a stage.
    endpoint = ("stage_1", stage, ["image"], ["exit_1", "block1_out"])

    def dataset():
        return (("stage_1", {"image": d[None]}) for d in data)

    with int8_forms.forms_applied(model, "int8"), tempfile.TemporaryDirectory() as folder:
        with tflite.saved_model_of([endpoint], folder, batch_size=1) as saved:
            for form, rule in (("int8 (the default)", None),
                               ("int8, keep_float='single_channel_input'", "single_channel_input")):
                contents[form] = tflite.convert_signatures(
                    saved, ["stage_1"], quantize="int8", representative_dataset=dataset,
                    interface="int8", keep_float=rule, model_inputs=["image"],
                )
    return contents


def loaded(content):
    """``(interpreter, input index, zero input)`` of a .tflite, 1 thread, allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    return interpreter, detail["index"], np.zeros(detail["shape"], detail["dtype"])


def median_seconds(runs, rounds, invokes):
    """``{key: median seconds per invoke}``, the models of ``runs`` interleaved per round."""
    times = {key: [] for key in runs}
    for _ in range(rounds):
        for key, (interpreter, index, x) in runs.items():
            start = time.perf_counter()
            for _ in range(invokes):
                interpreter.set_tensor(index, x)
                interpreter.invoke()
            times[key].append((time.perf_counter() - start) / invokes)
    return {key: float(np.median(value)) for key, value in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--invokes", type=int, default=200)
    args = parser.parse_args()

    runs = {}
    for name, shape, make in _layers():
        inputs = keras.Input(shape, batch_size=1)
        model = keras.Model(inputs, make()(inputs))
        for int8 in (False, True):
            runs[(name, int8)] = loaded(convert(model, int8, shape))
    times = median_seconds(runs, args.rounds, args.invokes)
    print("| layer | float32 | int8 | int8 speed-up | int8 ops on XNNPACK |")
    print("|---|---|---|---|---|")
    for name, _, _ in _layers():
        f32, i8 = times[(name, False)], times[(name, True)]
        coverage = interpreter_coverage(runs[(name, True)][0])
        print(f"| {name} | {f32 * 1e6:.1f} us | {i8 * 1e6:.1f} us | {f32 / i8:.2f}x "
              f"| {coverage.taken} of {coverage.total} |")

    stages = {form: loaded(content) for form, content in first_stage_contents().items()}
    stage_times = median_seconds(stages, args.rounds, args.invokes)
    base = stage_times["float32"]
    print("\n| first stage | latency | vs float32 | ops on XNNPACK |")
    print("|---|---|---|---|")
    for form, (interpreter, _, _) in stages.items():
        seconds = stage_times[form]
        coverage = interpreter_coverage(interpreter)
        print(f"| {form} | {seconds * 1e6:.1f} us | {base / seconds:.2f}x "
              f"| {coverage.taken} of {coverage.total} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
