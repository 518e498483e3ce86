"""Dynamic convolutions inside a multi-exit network, trained, exported and run.

The 5-conv CNN of `dynamic_conv_train_step.build_cnn` with an `EarlyExit`
after the second and the fourth convolution, built three times (static
Conv2D, CondConv2D, DynamicConv2D; K=4), trained with plain `fit` on the
CIFAR-10 subset (flips and 4-pixel shifts), exported with the default
`dynamic_conv_form="auto"`, calibrated for at most 1 point of accuracy drop
on a validation split and run on a held-out test split. For each network:
accuracy of its final exit alone and of the calibrated chain, exit shares,
mean MACs per image, and batch-1 latency per sample of the chain and of the
same network's static final-exit model, timed alternately in one run.

With ``--quantize float32 int8`` each trained network is also exported to
int8 (weights and activations, int8 stage interfaces, calibrated through the
chain on 200 training images; the static int8 model keeps a float
interface, so both int8 timings include quantizing the image), calibrated
and run the same way: the dynamic layers under int8, in the form the
exporter picks for it.

    PYTHONPATH=. .venv/bin/python benchmarks/dynamic_conv_exits.py [--epochs 8]
    PYTHONPATH=. .venv/bin/python benchmarks/dynamic_conv_exits.py --kinds condconv dyconv \
        --quantize float32 int8
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np  # noqa: E402
from dynamic_conv_cifar import DATA  # noqa: E402
from dynamic_conv_cifar import load_data  # noqa: E402
from dynamic_conv_cifar import train  # noqa: E402
from dynamic_conv_train_step import KINDS  # noqa: E402
from dynamic_conv_train_step import make_conv  # noqa: E402
from early_exit_demo import measure  # noqa: E402

import keras  # noqa: E402
import keras_dynamic as kd  # noqa: E402


def build_exit_cnn(kind, width=32, input_shape=(32, 32, 3), num_classes=10, seed=0):
    """`build_cnn` with early exits after its second and fourth convolution."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    outputs = []
    for i, filters in enumerate((width, 2 * width, 2 * width, 4 * width)):
        if i in (1, 3):
            x = keras.layers.MaxPooling2D()(x)
        x = make_conv(kind, filters)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        if i in (0, 2):
            name = f"exit_{len(outputs) + 1}"
            outputs.append(kd.layers.EarlyExit(num_classes, name=name)(x))
    final = kd.layers.EarlyExit(num_classes, pooling="avg", conv_filters=None, name="final")
    outputs.append(final(x))
    return keras.Model(inputs, outputs, name=f"exits_{kind}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-test", type=int, default=4000)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--quantize", nargs="+", choices=("float32", "float16", "int8"),
                        default=["float32"])
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {DATA} is absent")
        return 0
    (x_train, y_train), (x_held, y_held) = load_data(args.num_test)
    half = len(x_held) // 2
    x_val, y_val, x_test, y_test = x_held[:half], y_held[:half], x_held[half:], y_held[half:]

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for kind in args.kinds:
            model = build_exit_cnn(kind, width=args.width, seed=args.seed)
            train(model, kind, x_train, y_train, args.epochs, args.batch, args.seed)
            final = model.predict(x_test, batch_size=256, verbose=0)[-1]
            final_accuracy = float((final.argmax(-1) == y_test).mean())
            for quantize in args.quantize:
                options = {} if quantize == "float32" else {"quantize": quantize}
                if quantize == "int8":
                    options["representative_data"] = x_train[:200]
                folder = os.path.join(out, f"{kind}_{quantize}")
                kd.converters.export_stages(model, folder, verbose=0, **options)
                static_path = os.path.join(out, f"{kind}_{quantize}_static.tflite")
                static_options = dict(options)
                if quantize == "int8":
                    static_options["interface"] = "float"
                kd.converters.export_static(model, static_path, verbose=0, **static_options)
                chain = kd.runtime.load(folder, num_threads=1)
                chain.calibrate(x_val, y_val, max_accuracy_drop=args.max_accuracy_drop)
                static_s, chain_s, static_labels, result = measure(
                    chain, static_path, x_test, 1, args.rounds
                )
                shares = [float((result.exit_index == i).mean()) for i in range(3)]
                rows.append(
                    f"| {kind} | {quantize} | {final_accuracy:.4f} | "
                    f"{float((static_labels == y_test).mean()):.4f} | "
                    f"{float((result.labels == y_test).mean()):.4f} | "
                    f"{' / '.join(f'{s:.2f}' for s in shares)} | "
                    f"{np.mean(result.macs) / 1e6:.2f} M of {chain.total_macs / 1e6:.2f} M | "
                    f"{chain_s * 1e6:.0f} us | {static_s * 1e6:.0f} us | "
                    f"{static_s / chain_s:.2f}x |"
                )
                print(rows[-1], flush=True)
    print(
        "\n| network | export | final exit, Keras | static model, TFLite | calibrated chain "
        "| exit shares | mean MACs | chain, per sample | static, per sample | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
