"""Spatial dynamics on CIFAR-10: resolution-adaptive and glance-and-focus networks.

Trains one of two networks with plain `fit` on the CIFAR-10 subset in
../shared/data (flips and 4-pixel shifts, cosine decay):

* ``--model resolution_adaptive``: `kd.models.resolution_adaptive_cnn`
  (scales 4, 2, 1 of a 32x32 image, the coarser sub-network's features
  reused by the finer one);
* ``--model glance_and_focus``: `kd.models.glance_and_focus_cnn` (a glance
  at the image pooled by 2, then one of five 20x20 full-resolution crops
  chosen by a policy head).

It exports the network with `export_stages` and its final exit with
`export_static`, calibrates the exits on a validation split at several
operating points and runs the test split at batch 1: accuracy, exit shares,
mean executed MACs against the static network's, and latency per sample of
the chain and of the static model, alternated in one run.

For the resolution-adaptive network it also measures where the downsampling
is cheaper: inside each stage (an AVERAGE_POOL_2D on the full image, what
the export does) or once on the host (numpy block means, which would then
be fed to the stages).

    PYTHONPATH=. .venv/bin/python benchmarks/spatial_dynamics.py \
        --model resolution_adaptive|glance_and_focus [--epochs 12]
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np  # noqa: E402
from dynamic_conv_cifar import DATA  # noqa: E402
from dynamic_conv_cifar import load_data  # noqa: E402
from dynamic_conv_cifar import train  # noqa: E402
from early_exit_demo import measure  # noqa: E402

import keras  # noqa: E402
import keras_dynamic as kd  # noqa: E402


def downsampling_costs(image, scales, repeats=2000):
    """Seconds per image to pool ``image`` by every scale: (in a TFLite model, on the host)."""
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input(image.shape[1:])
    pooled = [keras.layers.AveragePooling2D(s)(inputs) for s in scales if s > 1]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "pool.tflite")
        _convert(keras.Model(inputs, pooled), path)
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]
        start = time.perf_counter()
        for _ in range(repeats):
            interpreter.set_tensor(index, image)
            interpreter.invoke()
        in_model = (time.perf_counter() - start) / repeats
    height, width, channels = image.shape[1:]
    start = time.perf_counter()
    for _ in range(repeats):
        for s in scales:
            if s > 1:
                image.reshape(height // s, s, width // s, s, channels).mean(axis=(1, 3))
    on_host = (time.perf_counter() - start) / repeats
    return in_model, on_host


def _convert(model, path):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with open(path, "wb") as f:
        f.write(converter.convert())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resolution_adaptive", "glance_and_focus"),
                        default="resolution_adaptive")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--distill", type=float, default=0.0,
                        help="weight of self-distillation from the final exit into "
                        "the early ones (kd.models.SelfDistillation, T=3); 0: none")
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 48, 64],
                        help="resolution_adaptive: filters per scale, coarse to fine")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-test", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {os.path.normpath(DATA)} not found (see DESIGN.md).")
        return 0
    (x_train, y_train), (x_held, y_held) = load_data(args.num_test)
    half = len(x_held) // 2
    x_val, y_val, x_test, y_test = x_held[:half], y_held[:half], x_held[half:], y_held[half:]

    scales = (4, 2, 1)
    keras.utils.set_random_seed(args.seed)
    if args.model == "resolution_adaptive":
        model = kd.models.resolution_adaptive_cnn(
            (32, 32, 3), 10, scales=scales, widths=tuple(args.widths)
        )
    else:
        model = kd.models.glance_and_focus_cnn((32, 32, 3), 10)
    start = time.perf_counter()
    trained = model
    if args.distill:
        trained = kd.models.SelfDistillation(model, temperature=3.0, weight=args.distill)
    train(trained, "static", x_train, y_train, args.epochs, args.batch, args.seed)
    keras_acc = [
        float((logits.argmax(1) == y_test).mean())
        for logits in model.predict(x_test, batch_size=256, verbose=0)
    ]
    print(
        f"CIFAR-10 subset, {len(y_train)} train / {half} val / {len(y_test)} test, "
        f"{args.epochs} epochs ({time.perf_counter() - start:.0f} s); {args.model}, Keras "
        f"test accuracy per exit ({', '.join(model.output_names)}): "
        f"{', '.join(f'{a:.4f}' for a in keras_acc)}",
        flush=True,
    )
    if args.model == "resolution_adaptive":
        in_model, on_host = downsampling_costs(x_test[:1], scales)
        print(
            f"downsampling one image by {scales[:-1]}: {in_model * 1e6:.1f} us in a TFLite "
            f"model, {on_host * 1e6:.1f} us on the host (numpy)", flush=True,
        )

    from keras_dynamic.converters.macs import count_macs

    static_macs = count_macs(keras.Model(model.inputs, model.outputs[-1]))
    rows = []
    with tempfile.TemporaryDirectory() as out:
        folder = os.path.join(out, "stages")
        kd.converters.export_stages(model, folder, verbose=0)
        static_path = os.path.join(out, "static.tflite")
        kd.converters.export_static(model, static_path, verbose=0)
        chain = kd.runtime.load(folder, num_threads=1)
        targets = {
            "max_softmax, drop <= 0.5 point": dict(max_accuracy_drop=0.005),
            "max_softmax, drop <= 1 point": dict(max_accuracy_drop=0.01),
            "max_softmax, drop <= 2 points": dict(max_accuracy_drop=0.02),
            "max_softmax, mean cost <= 0.3": dict(target_mean_cost=0.3),
        }
        for name, target in targets.items():
            chain.calibrate(x_val, y_val, **target)
            static_s, chain_s, static_labels, result = measure(
                chain, static_path, x_test, 1, args.rounds
            )
            shares = [
                float((result.exit_index == i).mean()) for i in range(len(chain.exit_names))
            ]
            static_acc = float((static_labels == y_test).mean())
            chain_acc = float((result.labels == y_test).mean())
            rows.append(
                f"| {name} | {chain_acc:.4f} | {static_acc:.4f} | "
                f"{(static_acc - chain_acc) * 100:+.2f} | "
                f"{' / '.join(f'{s:.2f}' for s in shares)} | "
                f"{np.mean(result.macs) / 1e6:.2f} M | {static_macs / 1e6:.2f} M | "
                f"{static_macs / np.mean(result.macs):.2f}x | "
                f"{chain_s * 1e6:.0f} us | {static_s * 1e6:.0f} us | {static_s / chain_s:.2f}x |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| operating point (calibrated on validation) | chain acc | static acc | points lost "
        f"| exit shares ({' / '.join(model.output_names)}) | mean MACs | static MACs | fewer MACs "
        "| chain, per sample | static, per sample | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
