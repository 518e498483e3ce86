"""float32, float16 and int8 chains of one trained multi-exit network: accuracy, size, latency.

Trains `kd.models.multi_exit_cnn` with plain `fit` on MNIST or on the CIFAR-10
subset (../shared/data; skipped where absent), then exports the same model
three ways with `export_stages` (one file per stage; float32, float16
weights, int8 weights and activations with int8 stage interfaces, calibrated
on 200 training images)
and, for each, the static final-exit model with `export_static`. Each chain's
thresholds are calibrated on a validation split (at most
``--max-accuracy-drop`` below its own final exit); on the test split it
reports accuracy per exit and overall, exit shares, file sizes, and batch-1
latency per sample (XNNPACK, 1 thread) of the chain and the static model,
all six models timed in interleaved rounds of one run.

With ``--qat-epochs N`` it also fine-tunes the trained model N epochs with
quantization-aware training (`kd.quantization.quantize_aware`, Adam 1e-4) and
exports that to int8 ("int8 QAT"), and, as the control that separates the
quantization awareness from the extra training, fine-tunes a float copy the
same N epochs before post-training quantization ("int8 PTQ +N").

``--keep-float RULE [RULE ...]`` adds an int8 export with those
`export_stages` ``keep_float`` rules: ``single_channel_input`` (MNIST's first
convolutions stay float32; a CIFAR-10 export would equal the plain int8 one),
``hard_swish`` (every HARD_SWISH stays float32).

``--network separable`` takes a MobileNet-style network of depthwise-separable
units instead (``--activation relu``, ``relu6`` or ``hard_swish``);
``--network resolution_adaptive`` the RANet-style CNN, whose finer stages
concatenate the coarser ones' maps (their int8 hand-off is requantized at
the reading stage's start).

    PYTHONPATH=. .venv/bin/python benchmarks/quantized_chains.py --data mnist [--keep-float single_channel_input]
    PYTHONPATH=. .venv/bin/python benchmarks/quantized_chains.py --data cifar10 --qat-epochs 2
    PYTHONPATH=. .venv/bin/python benchmarks/quantized_chains.py --data cifar10 --network separable --qat-epochs 2
    PYTHONPATH=. .venv/bin/python benchmarks/quantized_chains.py --data cifar10 --network resolution_adaptive
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras  # noqa: E402
import keras_dynamic as kd  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def load(name, num_val, num_test, seed=0):
    """(train, val, test) splits as float32 images in [0, 1] and int64 labels."""
    rng = np.random.default_rng(seed)
    if name == "mnist":
        data = np.load(os.path.join(SHARED, "mnist.npz"))
        x = data["x_train"][..., None].astype("float32") / 255.0
        y = data["y_train"].astype("int64")
        x_test = data["x_test"][:num_test, ..., None].astype("float32") / 255.0
        y_test = data["y_test"][:num_test].astype("int64")
        order = rng.permutation(len(y))
        x, y = x[order], y[order]
        return (x[num_val:], y[num_val:]), (x[:num_val], y[:num_val]), (x_test, y_test)
    data = np.load(os.path.join(SHARED, "cifar10_train.npz"))
    order = rng.permutation(len(data["y"]))
    x = data["x"][order].astype("float32") / 255.0
    y = data["y"][order].astype("int64")
    held = num_val + num_test
    return ((x[held:], y[held:]), (x[:num_val], y[:num_val]),
            (x[num_val:held], y[num_val:held]))


def quantized_input(x, path):
    """``x`` as the static model's input wants it (int8 models take integers)."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=path).get_input_details()[0]
    if np.dtype(detail["dtype"]).kind == "f":
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def static_run(path, x):
    """Per-sample batch-1 run of a static model: (seconds per sample, labels)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    labels = np.empty(len(x), np.int64)
    start = time.perf_counter()
    for row in range(len(x)):
        interpreter.set_tensor(index, x[row : row + 1])
        interpreter.invoke()
        labels[row] = interpreter.get_tensor(output)[0].argmax()
    return (time.perf_counter() - start) / len(x), labels


def fine_tuned(model, x_train, y_train, epochs, x_test, y_test):
    """The two int8 exports of `--qat-epochs`: float fine-tuning + PTQ, and QAT."""
    loss = [keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    qat = kd.quantization.quantize_aware(model)
    for what, network in (("float", tuned), ("quantization-aware", qat)):
        keras.utils.set_random_seed(1)
        network.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
        start = time.perf_counter()
        network.fit(x_train, [y_train] * 3, batch_size=128, epochs=epochs, verbose=0)
        accuracy = " / ".join(
            f"{(logits.argmax(1) == y_test).mean():.4f}"
            for logits in network.predict(x_test, verbose=0, batch_size=256)
        )
        print(f"fine-tuned {epochs} epochs, {what} ({time.perf_counter() - start:.0f} s); "
              f"Keras test accuracy per exit {accuracy}", flush=True)
    return [(f"int8 PTQ +{epochs}", tuned, "int8"), ("int8 QAT", qat, "int8")]


def separable_cnn(input_shape, num_classes, activation):
    """A MobileNet-style multi-exit network: depthwise-separable units, exits
    after the 1st and 2nd of three resolutions (``--network separable``).

    Depthwise convolutions give int8 post-training quantization its known
    trouble: per-tensor activation ranges shared by channels of very
    different spread.
    """
    from keras import layers

    def unit(x, filters, strides=1):
        x = layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False)(x)
        x = layers.Activation(activation)(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        return layers.Activation(activation)(layers.BatchNormalization()(x))

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation(activation)(layers.BatchNormalization()(x))
    x = unit(unit(x, 32), 32)
    exit_1 = kd.layers.EarlyExit(num_classes, name="exit_1")(x)
    x = unit(unit(x, 64, 2), 64)
    exit_2 = kd.layers.EarlyExit(num_classes, name="exit_2")(x)
    x = unit(unit(x, 128, 2), 128)
    final = kd.layers.EarlyExit(num_classes, pooling="avg", conv_filters=None, name="final")(x)
    return keras.Model(inputs, [exit_1, exit_2, final], name="separable_cnn")


def folder_bytes(folder):
    return sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
        if f.endswith(".tflite")
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--epochs", type=int, default=None, help="default 2 (MNIST), 8 (CIFAR-10)")
    parser.add_argument("--num-val", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qat-epochs", type=int, default=0,
                        help="also fine-tune N epochs with quantization-aware training")
    parser.add_argument("--network", choices=("cnn", "separable", "resolution_adaptive"),
                        default="cnn",
                        help="kd.models.multi_exit_cnn, a depthwise-separable "
                        "multi-exit network, or kd.models.resolution_adaptive_cnn "
                        "(widths 32, 64, 64)")
    parser.add_argument("--activation", default="relu",
                        help="activation of --network separable (relu, relu6, hard_swish)")
    parser.add_argument("--keep-float", nargs="+", metavar="RULE",
                        choices=kd.converters.keep_float.RULES,
                        help="also export int8 with these keep_float rules")
    parser.add_argument("--keep", help="also write the exports and the splits here "
                        "(for benchmarks/quantizer_choice.py)")
    args = parser.parse_args()
    path = os.path.join(SHARED, "mnist.npz" if args.data == "mnist" else "cifar10_train.npz")
    if not os.path.exists(path):
        print(f"skipped: {os.path.normpath(path)} not found (see DESIGN.md).")
        return 0
    epochs = args.epochs or (2 if args.data == "mnist" else 8)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load(
        args.data, args.num_val, args.num_test, args.seed
    )
    keras.utils.set_random_seed(args.seed)
    if args.network == "cnn":
        model = kd.models.multi_exit_cnn(x_train.shape[1:], 10)
    elif args.network == "resolution_adaptive":
        model = kd.models.resolution_adaptive_cnn(x_train.shape[1:], 10, widths=(32, 64, 64))
    else:
        model = separable_cnn(x_train.shape[1:], 10, args.activation)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3,
    )
    start = time.perf_counter()
    model.fit(x_train, [y_train] * 3, batch_size=128, epochs=epochs, verbose=0)
    print(
        f"{args.data}: {model.name} trained {epochs} epochs on {len(y_train)} images "
        f"({time.perf_counter() - start:.0f} s); {len(y_val)} validation, "
        f"{len(y_test)} test", flush=True,
    )

    exports = [("float32", model, None), ("float16", model, "float16"), ("int8", model, "int8")]
    if args.keep_float:
        exports.append((f"int8, float {' and '.join(args.keep_float)}", model, "int8"))
    if args.qat_epochs:
        exports += fine_tuned(model, x_train, y_train, args.qat_epochs, x_test, y_test)

    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as temporary:
        out = args.keep or temporary
        if args.keep:
            os.makedirs(out, exist_ok=True)
            np.savez(os.path.join(out, "splits.npz"), x_calibration=x_train[:200],
                     x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
        for name, exported, quantize in exports:
            folder = os.path.join(
                out, name.replace(",", "").replace(" ", "_").replace("+", "")
            )
            options = dict(quantize=quantize)
            if quantize == "int8":
                options["representative_data"] = x_train[:200]
            if args.keep_float and name.startswith("int8, float "):
                options["keep_float"] = args.keep_float
            # One file per stage, so that each stage's ops can be inspected.
            kd.converters.export_stages(
                exported, folder, layout="files", verbose=0, overwrite=True, **options
            )
            static_path = f"{folder}_static.tflite"
            kd.converters.export_static(exported, static_path, verbose=0, **options)
            chain = kd.runtime.load(folder, num_threads=1)
            chain.calibrate(x_val, y_val, max_accuracy_drop=args.max_accuracy_drop)
            runs[name] = (chain, static_path, quantized_input(x_test, static_path), folder)

        times = {name: {"chain": [], "static": []} for name in runs}
        results = {}
        for _ in range(args.rounds):
            for name, (chain, static_path, static_x, _) in runs.items():
                seconds, labels = static_run(static_path, static_x)
                times[name]["static"].append(seconds)
                start = time.perf_counter()
                results[name] = (chain.predict(x_test, mode="sample"), labels)
                times[name]["chain"].append((time.perf_counter() - start) / len(x_test))

        base = {k: float(np.median(v)) for k, v in times["float32"].items()}
        base_bytes = folder_bytes(runs["float32"][3])
        for name, (chain, static_path, _, folder) in runs.items():
            result, static_labels = results[name]
            per_exit = chain.run_all(x_test)
            exit_acc = " / ".join(
                f"{(per_exit[e].argmax(1) == y_test).mean():.4f}" for e in chain.exit_names
            )
            shares = " / ".join(
                f"{(result.exit_index == i).mean():.2f}" for i in range(len(chain.exit_names))
            )
            chain_s = float(np.median(times[name]["chain"]))
            static_s = float(np.median(times[name]["static"]))
            size = folder_bytes(folder)
            rows.append(
                f"| {name} | {exit_acc} | {(result.labels == y_test).mean():.4f} | "
                f"{(static_labels == y_test).mean():.4f} | {shares} | "
                f"{size / 1024:.0f} KiB ({base_bytes / size:.2f}x smaller) | "
                f"{os.path.getsize(static_path) / 1024:.0f} KiB | "
                f"{chain_s * 1e6:.0f} us ({base['chain'] / chain_s:.2f}x) | "
                f"{static_s * 1e6:.0f} us ({base['static'] / static_s:.2f}x) |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| export | accuracy per exit (test, Keras order) | calibrated chain | static model "
        "| exit shares | stage files | static file | chain, per sample (vs float32) "
        "| static, per sample (vs float32) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
