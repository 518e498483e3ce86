"""CIFAR-10 evidence for the dynamic convolutions: accuracy, MACs, TFLite latency.

Trains the CNN of `dynamic_conv_train_step.build_cnn` three ways (static
Conv2D, CondConv2D, DynamicConv2D; equal width, 4 experts, stem static) on the
20k-image CIFAR-10 subset in ../shared/data, for a few epochs and at least two
seeds, then for the first seed's models converts each to TFLite with
TFLITE_BUILTINS only at batch 1 (both inference forms of the dynamic ones) and
times them side by side (interleaved rounds, median, 1 thread).

    .venv/bin/python benchmarks/dynamic_conv_cifar.py [--epochs 4] [--seeds 0 1]

MACs are counted analytically per image (batch 1), see `count_macs`.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from dynamic_conv_train_step import KINDS  # noqa: E402
from dynamic_conv_train_step import build_cnn  # noqa: E402

from keras_dynamic.callbacks import TemperatureScheduler  # noqa: E402
from keras_dynamic.layers import CondConv2D  # noqa: E402
from keras_dynamic.layers import DynamicConv2D  # noqa: E402
from keras_dynamic.layers import inference_form  # noqa: E402

DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
    "cifar10_train.npz",
)
FORMS = ("mix_outputs", "mix_kernels", "patch_matmul")


def load_data(num_test, seed=1234):
    data = np.load(DATA)
    order = np.random.default_rng(seed).permutation(len(data["y"]))
    x = data["x"][order].astype("float32") / 255.0
    y = data["y"][order].astype("int32")
    mean, std = x[:-num_test].mean(axis=(0, 1, 2)), x[:-num_test].std(axis=(0, 1, 2))
    x = (x - mean) / std
    return (x[:-num_test], y[:-num_test]), (x[-num_test:], y[-num_test:])


def count_macs(model, form):
    """Multiply-accumulates per image at batch 1, by formula.

    Conv2D: H'W' kh kw C F; Dense: in*out. A dynamic conv adds its routing
    (global pooling H W C, counted as MACs, + FC C K for CondConv, or
    C h + h K for DyConv's attention MLP with h hidden units) and the bias
    mix K F, then
      mix_kernels and patch_matmul: the kernel mix K kh kw C F + one conv H'W' kh kw C F;
      mix_outputs: K convs K H'W' kh kw C F + the output mix K H'W' F.
    BatchNorm, ReLU, pooling and the final GAP are left out (same in all).
    """
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
            continue
        if not isinstance(layer, (keras.layers.Conv2D, CondConv2D, DynamicConv2D)):
            continue
        _, in_h, in_w, channels = layer.input.shape
        _, out_h, out_w, filters = layer.output.shape
        kernel_macs = int(np.prod(layer.kernel.shape[-4:]))  # kh kw C F
        conv = out_h * out_w * kernel_macs
        if isinstance(layer, keras.layers.Conv2D):
            total += conv
            continue
        experts = layer.num_experts
        routing = in_h * in_w * channels + experts * filters
        if isinstance(layer, CondConv2D):
            routing += channels * experts
        else:
            hidden = layer.attention_hidden_kernel.shape[1]
            routing += channels * hidden + hidden * experts
        if form in ("mix_kernels", "patch_matmul"):
            total += routing + experts * kernel_macs + conv
        else:
            total += routing + experts * conv + experts * out_h * out_w * filters
    return total


def to_tflite(model, batch_size=1):
    """TFLITE_BUILTINS-only conversion with a static batch (see DESIGN.md)."""
    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda x: model(x, training=False),
            input_signature=[
                tf.TensorSpec((batch_size, *model.input.shape[1:]), tf.float32)
            ],
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def tflite_latencies(flatbuffers, x, rounds=30, invokes=20):
    """Median invoke time (s) of each model, interleaved round by round."""
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for name, flatbuffer in flatbuffers.items():
        interpreter = Interpreter(model_content=flatbuffer, num_threads=1)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        for _ in range(invokes):
            interpreter.invoke()
        runners[name] = interpreter
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, interpreter in runners.items():
            for _ in range(invokes):
                start = time.perf_counter()
                interpreter.invoke()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-test", type=int, default=4000)
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {os.path.normpath(DATA)} not found (see DESIGN.md).")
        return 0

    (x_train, y_train), (x_test, y_test) = load_data(args.num_test)
    print(
        f"CIFAR-10 subset: {len(y_train)} train / {len(y_test)} test, "
        f"width {args.width}, {args.epochs} epochs, batch {args.batch}, "
        f"seeds {args.seeds}"
    )
    accuracy = {kind: [] for kind in KINDS}
    first_models = {}
    for seed in args.seeds:
        for kind in KINDS:
            model = build_cnn(kind, width=args.width, seed=seed)
            model.compile(
                optimizer=keras.optimizers.Adam(2e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            # DyConv's recipe anneals 30 -> 1 over the first 10 of 100+
            # epochs; here over the first half of the short schedule.
            callbacks = (
                [TemperatureScheduler(30.0, 1.0, epochs=max(1, args.epochs // 2))]
                if kind == "dyconv"
                else []
            )
            start = time.perf_counter()
            model.fit(
                x_train, y_train, batch_size=args.batch, epochs=args.epochs,
                callbacks=callbacks, verbose=0,
            )
            train_s = time.perf_counter() - start
            _, acc = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
            accuracy[kind].append(acc)
            print(f"  seed {seed} {kind:9s} test acc {acc:.4f}  (fit {train_s:.0f} s)")
            first_models.setdefault(kind, model)

    flatbuffers = {}
    for kind, model in first_models.items():
        if kind == "static":
            flatbuffers["static"] = to_tflite(model)
            continue
        for form in FORMS:
            with inference_form(model, form):
                flatbuffers[f"{kind}/{form}"] = to_tflite(model)
    latency = tflite_latencies(flatbuffers, x_test[:1])

    static_macs = count_macs(first_models["static"], None)
    print("\n| model | inference form | test acc (mean of seeds) | per seed | MACs / image | MACs vs static | TFLite latency, batch 1, 1 thread | latency vs static |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds in latency.items():
        kind, _, form = name.partition("/")
        macs = count_macs(first_models[kind], form or None)
        accs = accuracy[kind]
        print(
            f"| {kind} | {form or '-'} | {np.mean(accs):.4f} | "
            f"{', '.join(f'{a:.4f}' for a in accs)} | {macs / 1e6:.2f} M | "
            f"{macs / static_macs:.2f}x | {seconds * 1e6:.0f} us | "
            f"{seconds / latency['static']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
