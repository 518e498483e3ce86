"""Batch-1 TFLite latency of the dynamic-convolution inference forms.

Three tables, each timed side by side in one run (interleaved rounds,
medians, XNNPACK, 1 thread), with the share of each model's ops that XNNPACK
takes and the form `dynamic_conv_form="auto"` picks:

1. the 5-conv CIFAR-size CNN of `dynamic_conv_train_step.build_cnn`: static
   Conv2D, CondConv2D and DynamicConv2D (K=4, equal width), every form;
2. a separable CNN of the same widths (depthwise 3x3 + pointwise 1x1 blocks):
   static DepthwiseConv2D against DepthwiseCondConv2D (K=4), every form;
3. table 1's models as int8 (weights and activations, float interface), in
   the forms that quantize.

Latency does not depend on the trained values, so the models keep their
initial weights; int8 calibrates on uniform random images.

    PYTHONPATH=. .venv/bin/python benchmarks/dynamic_conv_forms.py [--width 32] [--rounds 15]
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from dynamic_conv_cifar import to_tflite  # noqa: E402
from dynamic_conv_cifar import tflite_latencies  # noqa: E402
from dynamic_conv_train_step import build_cnn  # noqa: E402

import keras  # noqa: E402
from keras_dynamic.converters.dynamic_conv import auto_form  # noqa: E402
from keras_dynamic.converters.dynamic_conv import dynamic_conv_layers  # noqa: E402
from keras_dynamic.layers import DepthwiseCondConv2D  # noqa: E402
from keras_dynamic.layers import inference_form  # noqa: E402
from keras_dynamic.layers._dynamic_conv_base import INFERENCE_FORMS  # noqa: E402
from keras_dynamic.runtime.xnnpack import xnnpack_coverage  # noqa: E402

INPUT_SHAPE = (32, 32, 3)


def build_separable(kind, width=32, num_classes=10, seed=0):
    """A MobileNet-style CNN: stem, then 4 depthwise 3x3 + pointwise blocks.

    `kind` `"static"` uses DepthwiseConv2D, `"depthwise"` DepthwiseCondConv2D
    with 4 experts; the pointwise 1x1 convolutions stay static.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(INPUT_SHAPE)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for i, filters in enumerate((width, 2 * width, 2 * width, 4 * width)):
        if i in (1, 3):
            x = keras.layers.MaxPooling2D()(x)
        if kind == "static":
            depthwise = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)
        else:
            depthwise = DepthwiseCondConv2D(
                3, num_experts=4, padding="same", use_bias=False
            )
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(depthwise(x)))
        x = keras.layers.Conv2D(filters, 1, use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=f"separable_{kind}")


def to_int8(model, calibration):
    """Full-integer conversion at batch 1 with a float interface."""
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec((1, *INPUT_SHAPE), tf.float32)],
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def auto_choice(model, quantize=None):
    """The form(s) `dynamic_conv_form="auto"` gives the model's layers."""
    forms = {auto_form(layer, quantize) for layer in dynamic_conv_layers(model)}
    return ", ".join(sorted(forms)) or "-"


def table(title, flatbuffers, auto, x, rounds):
    latency = tflite_latencies(flatbuffers, x, rounds=rounds)
    print(f"\n{title}\n")
    print(
        "| model | inference form | latency, batch 1, 1 thread | vs static "
        "| ops on XNNPACK | `auto` picks |"
    )
    print("|---|---|---|---|---|---|")
    for name, seconds in latency.items():
        kind, _, form = name.partition("/")
        coverage = xnnpack_coverage(flatbuffers[name])
        print(
            f"| {kind} | {form or '-'} | {seconds * 1e6:.0f} us | "
            f"{seconds / latency['static']:.2f}x | {coverage.taken} of {coverage.total} | "
            f"{'yes' if form and form == auto.get(kind) else ''} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((1, *INPUT_SHAPE), dtype=np.float32)
    calibration = np.random.default_rng(1).random((100, *INPUT_SHAPE), dtype=np.float32)

    full, separable, int8 = {}, {}, {}
    auto_full, auto_separable, auto_int8 = {}, {}, {}
    for kind in ("static", "condconv", "dyconv"):
        model = build_cnn(kind, width=args.width)
        if kind == "static":
            full["static"] = to_tflite(model)
            int8["static"] = to_int8(model, calibration)
            continue
        auto_full[kind] = auto_choice(model)
        auto_int8[kind] = auto_choice(model, "int8")
        for form in INFERENCE_FORMS:
            with inference_form(model, form):
                full[f"{kind}/{form}"] = to_tflite(model)
                if form != "mix_kernels":  # refused under int8
                    int8[f"{kind}/{form}"] = to_int8(model, calibration)
    for kind in ("static", "depthwise"):
        model = build_separable(kind, width=args.width)
        if kind == "static":
            separable["static"] = to_tflite(model)
            continue
        auto_separable[kind] = auto_choice(model)
        for form in INFERENCE_FORMS:
            with inference_form(model, form):
                separable[f"{kind}/{form}"] = to_tflite(model)

    table("Full convolutions, float32 (5-conv CNN)", full, auto_full, x, args.rounds)
    table(
        "Depthwise convolutions, float32 (separable CNN)",
        separable, auto_separable, x, args.rounds,
    )
    table("Full convolutions, int8 (5-conv CNN)", int8, auto_int8, x, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
