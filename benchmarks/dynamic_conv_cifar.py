"""CIFAR-10 evidence for the dynamic convolutions: accuracy, MACs, TFLite latency.

Trains the CNN of `dynamic_conv_train_step.build_cnn` three ways (static
Conv2D, CondConv2D, DynamicConv2D; equal width, 4 experts, stem static) on the
20k-image CIFAR-10 subset in ../shared/data (random flips and 4-pixel shifts,
Adam with cosine decay) over several seeds, and reports per dynamic layer the
mean test-accuracy difference against the static network with a 95% t
interval over the seeds (paired: one seed gives all three models the same
augmentation draws). Then, for the first seed's models, it converts each to
TFLite with TFLITE_BUILTINS only at batch 1 (every inference form of the
dynamic ones) and times them side by side (interleaved rounds, median, 1 thread).

    PYTHONPATH=. .venv/bin/python benchmarks/dynamic_conv_cifar.py \
        [--epochs 15] [--seeds 0 1 2 3 4] [--results results.jsonl]

With ``--results``, each trained model's test accuracy is appended to that
file as it finishes and models already there are not trained again, so a
long run can be resumed; the tables are computed from the file.
MACs are counted analytically per image (batch 1), see `count_macs`.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from dynamic_conv_train_step import KINDS  # noqa: E402
from dynamic_conv_train_step import build_cnn  # noqa: E402

from keras_dynamic.callbacks import TemperatureScheduler  # noqa: E402
from keras_dynamic.losses import exit_loss_weights  # noqa: E402
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


def augment(x, rng, shift=4):
    """Random horizontal flips and shifts of up to `shift` pixels (zero fill)."""
    flips = rng.random(len(x)) < 0.5
    x = np.where(flips[:, None, None, None], x[:, :, ::-1], x)
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    out = np.empty_like(x)
    offsets = rng.integers(0, 2 * shift + 1, size=(len(x), 2))
    height, width = x.shape[1:3]
    for i, (top, left) in enumerate(offsets):
        out[i] = padded[i, top : top + height, left : left + width]
    return out


def train(model, kind, x, y, epochs, batch, seed, learning_rate=2e-3):
    """Adam with cosine decay on freshly augmented data each epoch.

    Works for single- and multi-output models (every output gets the label,
    weighted uniformly). DynamicConv2D's softmax temperature is annealed
    30 -> 1 over the first half of the epochs, as its recipe does over the
    first 10 of 100+.
    """
    num_outputs = len(model.output_names)
    steps = epochs * (len(x) // batch)
    model.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
        ),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * num_outputs,
        loss_weights=exit_loss_weights(num_outputs, schedule="uniform"),
    )
    callbacks = (
        [TemperatureScheduler(30.0, 1.0, epochs=max(1, epochs // 2))]
        if kind == "dyconv"
        else []
    )
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        # One fit call per epoch on a fresh augmented copy; the temperature
        # scheduler reads the epoch index it is given.
        model.fit(
            augment(x, rng), [y] * num_outputs, batch_size=batch, epochs=epoch + 1,
            initial_epoch=epoch, callbacks=callbacks, verbose=0,
        )


def test_accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    if isinstance(logits, list):
        logits = logits[-1]
    return float((np.argmax(logits, axis=-1) == y).mean())


def interval(differences, level=0.95):
    """Mean and two-sided t interval of paired differences over seeds."""
    d = np.asarray(differences, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, float("nan"), float("nan")
    half = scipy.stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return mean, mean - half, mean + half


def read_results(path, config):
    """{(seed, kind): accuracy} of the runs in ``path`` made with ``config``."""
    found = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if record["config"] == config:
                    found[(record["seed"], record["kind"])] = record["accuracy"]
    return found


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
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--num-test", type=int, default=4000)
    parser.add_argument("--results", help="JSON-lines file to resume from and append to")
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {os.path.normpath(DATA)} not found (see DESIGN.md).")
        return 0

    (x_train, y_train), (x_test, y_test) = load_data(args.num_test)
    config = {
        "epochs": args.epochs, "width": args.width, "batch": args.batch,
        "num_test": args.num_test, "augment": "flip+shift4", "schedule": "cosine 2e-3",
    }
    print(
        f"CIFAR-10 subset: {len(y_train)} train / {len(y_test)} test, "
        f"width {args.width}, {args.epochs} epochs, batch {args.batch}, "
        f"seeds {args.seeds}", flush=True,
    )
    accuracy = read_results(args.results, config)
    first_models = {}
    for seed in args.seeds:
        for kind in KINDS:
            if (seed, kind) in accuracy and seed != args.seeds[0]:
                continue
            model = build_cnn(kind, width=args.width, seed=seed)
            if (seed, kind) not in accuracy:
                start = time.perf_counter()
                train(model, kind, x_train, y_train, args.epochs, args.batch, seed)
                train_s = time.perf_counter() - start
                accuracy[(seed, kind)] = test_accuracy(model, x_test, y_test)
                print(
                    f"  seed {seed} {kind:9s} test acc {accuracy[(seed, kind)]:.4f}"
                    f"  (fit {train_s:.0f} s)", flush=True,
                )
                if args.results:
                    with open(args.results, "a") as f:
                        record = {"config": config, "seed": seed, "kind": kind,
                                  "accuracy": accuracy[(seed, kind)]}
                        f.write(json.dumps(record) + "\n")
            if seed == args.seeds[0]:
                first_models[kind] = model  # latency does not depend on the weights

    per_kind = {
        kind: [accuracy[(seed, kind)] for seed in args.seeds] for kind in KINDS
    }
    print(f"\nTest accuracy over seeds {args.seeds}, and the paired difference "
          "against the static network (95% t interval):\n")
    print("| model | parameters | test acc, mean | per seed | difference vs static | 95% interval |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        accs = per_kind[kind]
        params = first_models[kind].count_params()
        if kind == "static":
            diff_cells = "- | -"
        else:
            mean, low, high = interval(np.subtract(accs, per_kind["static"]))
            diff_cells = (
                f"{mean * 100:+.2f} points | [{low * 100:+.2f}, {high * 100:+.2f}]"
            )
        print(
            f"| {kind} | {params:,} | {np.mean(accs):.4f} | "
            f"{', '.join(f'{a:.4f}' for a in accs)} | {diff_cells} |"
        )

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
    print("\n| model | inference form | MACs / image | MACs vs static | TFLite latency, batch 1, 1 thread | latency vs static |")
    print("|---|---|---|---|---|---|")
    for name, seconds in latency.items():
        kind, _, form = name.partition("/")
        macs = count_macs(first_models[kind], form or None)
        print(
            f"| {kind} | {form or '-'} | {macs / 1e6:.2f} M | "
            f"{macs / static_macs:.2f}x | {seconds * 1e6:.0f} us | "
            f"{seconds / latency['static']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
