"""The chain against the single IF-op model and the static model on a larger network.

A MobileNetV2 at 96x96 (keras.applications, 10 classes) with two early exits
(after blocks 3 and 10), exported three ways from the same weights: stages
(`export_stages`, carrying the fused CPU model), static (`export_static`) and one IF-op model
(`export_conditional`). The weights are the initial ones: latency depends on
the architecture and on which exit each sample takes, not on accuracy, so the
thresholds are set at quantiles of the exits' own scores on the images to give
chosen exit shares (default 60 / 30 / 10 %). Images: CIFAR-10 test-split images
from ../shared/data resized to 96x96 where present, else random. Then
`runtime.benchmark.benchmark` times all three (the `keras-dynamic bench`
measurements) and the report is printed and written as JSON.

    PYTHONPATH=. .venv/bin/python benchmarks/runtime_vs_conditional.py [--samples 200 --threads 1 2]
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np

CIFAR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_train.npz"


def build_model():
    import keras

    import keras_dynamic as kd

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
    )
    e1 = kd.layers.EarlyExit(10, name="exit_1")(base.get_layer("block_3_expand_relu").output)
    e2 = kd.layers.EarlyExit(10, name="exit_2")(base.get_layer("block_10_expand_relu").output)
    return keras.Model(base.input, [e1, e2, base.output], name="mobilenet_v2_exits")


def images(count):
    if CIFAR.exists():
        import tensorflow as tf

        x = np.load(CIFAR)["x"][-count:].astype("float32") / 127.5 - 1.0
        return tf.image.resize(x, (96, 96)).numpy()
    return np.random.default_rng(0).uniform(-1, 1, (count, 96, 96, 3)).astype("float32")


def quantile_policy(chain, x, shares):
    """Thresholds giving about ``shares`` of the samples to each early exit."""
    from keras_dynamic import runtime
    from keras_dynamic.runtime.policy import softmax

    values = chain.run_all(x)
    remaining = np.ones(len(x), bool)
    rules = {}
    for name, share in zip(chain.exit_names[:-1], shares):
        scores = softmax(values[name]).max(1)
        wanted = int(round(share * len(x)))
        ranked = np.sort(scores[remaining])[::-1]
        # Midway between two scores: no sample sits on the threshold.
        threshold = float(ranked[wanted - 1 : wanted + 1].mean())
        rules[name] = runtime.ExitRule("max_softmax", threshold)
        remaining &= scores < threshold
    chain.set_policy(rules)
    return chain.save_policy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shares", type=float, nargs=2, default=[0.6, 0.3])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="runtime_vs_conditional.json")
    args = parser.parse_args(argv)

    from keras_dynamic import converters
    from keras_dynamic import runtime
    from keras_dynamic.cli.bench_command import format_report
    from keras_dynamic.runtime.benchmark import benchmark

    model = build_model()
    x = images(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        converters.export_stages(model, tmp / "stages", parity_samples=x[:8], fused_model=True)
        converters.export_static(model, tmp / "static.tflite")
        converters.export_conditional(model, tmp / "conditional.tflite")
        with runtime.load(tmp / "stages") as chain:
            quantile_policy(chain, x, args.shares)
        report = benchmark(
            tmp / "stages", x, threads=tuple(args.threads), rounds=args.rounds,
            static=tmp / "static.tflite", conditional=tmp / "conditional.tflite",
        )
    print(format_report(report))
    pathlib.Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
