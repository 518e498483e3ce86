"""Frame skipping on a stream of redundant frames: reuse answers while the first stage sees no change.

The stream is built from real MNIST digits (../shared/data/mnist.npz): each
digit is held for a random 1-10 frames, and every frame is shifted by up to
2 pixels and gets Gaussian noise, so consecutive frames are similar but
never identical. A multi-exit CNN (`kd.models.multi_exit_cnn`, trained with
plain `fit` on shifted, noisy digits) is exported with `export_stages`; its
exit thresholds are calibrated on a validation stream, and so is the reuse
threshold of `kd.runtime.FrameStream`. On the test stream, per frame at
batch 1, it compares: the static model (every frame runs the whole
network), the chain (early exits), and the chain with frame reuse:
accuracy, how many frames ran the full network (reached the last stage),
how many were computed at all, mean MACs, and latency per frame, alternated
in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/frame_skipping.py
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np  # noqa: E402
from early_exit_demo import static_latency_and_labels  # noqa: E402

import keras  # noqa: E402
import keras_dynamic as kd  # noqa: E402

DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist.npz"
)


def jitter(images, rng, shift=2, noise=0.05):
    """Each image shifted by up to ``shift`` pixels (wrapping) plus Gaussian noise."""
    out = np.empty_like(images)
    offsets = rng.integers(-shift, shift + 1, size=(len(images), 2))
    for i, (dy, dx) in enumerate(offsets):
        out[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    return np.clip(out + rng.normal(0, noise, out.shape), 0, 1).astype(np.float32)


def make_stream(images, labels, rng, max_hold=10):
    """Digits held for 1..max_hold frames each, every frame jittered anew."""
    holds = rng.integers(1, max_hold + 1, size=len(images))
    frames = jitter(np.repeat(images, holds, axis=0), rng)
    return frames, np.repeat(labels, holds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--digits-val", type=int, default=1000)
    parser.add_argument("--digits-test", type=int, default=400)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {os.path.normpath(DATA)} not found (see DESIGN.md).")
        return 0
    data = np.load(DATA)
    rng = np.random.default_rng(args.seed)
    x = data["x_train"].astype("float32")[..., None] / 255.0
    y = data["y_train"].astype("int64")
    order = rng.permutation(len(y))
    train_idx = order[: args.num_train]
    val_idx = order[args.num_train : args.num_train + args.digits_val]
    x_test = data["x_test"].astype("float32")[..., None] / 255.0
    y_test = data["y_test"].astype("int64")

    keras.utils.set_random_seed(args.seed)
    model = kd.models.multi_exit_cnn((28, 28, 1), 10)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3,
    )
    for _ in range(args.epochs):
        model.fit(jitter(x[train_idx], rng), [y[train_idx]] * 3, batch_size=128, verbose=0)
    val_frames, val_labels = make_stream(x[val_idx], y[val_idx], rng)
    test_frames, test_labels = make_stream(
        x_test[: args.digits_test], y_test[: args.digits_test], rng
    )
    print(
        f"MNIST stream: {len(test_frames)} test frames of {args.digits_test} digits "
        f"(held 1-10 frames, shifted <= 2 px, noise 0.05); validation stream "
        f"{len(val_frames)} frames", flush=True,
    )

    from keras_dynamic.converters.macs import count_macs

    static_macs = count_macs(keras.Model(model.inputs, model.outputs[-1]))
    with tempfile.TemporaryDirectory() as out:
        folder = os.path.join(out, "stages")
        kd.converters.export_stages(model, folder, verbose=0)
        static_path = os.path.join(out, "static.tflite")
        kd.converters.export_static(model, static_path, verbose=0)
        chain = kd.runtime.load(folder, num_threads=1)
        closed = {name: None for name in chain.exit_names[:-1]}
        # Frame reuse alone: early exits closed, every computed frame runs it all.
        chain.set_policy(closed)
        # Frames of a stream are correlated: bound the drop at 95% confidence.
        target = dict(max_accuracy_drop=args.max_accuracy_drop, confidence=0.95)
        alone, _ = kd.runtime.calibrate_reuse(chain, val_frames, val_labels, **target)
        exits = chain.calibrate(val_frames, val_labels, **target)
        threshold, _ = kd.runtime.calibrate_reuse(chain, val_frames, val_labels, **target)
        print(f"calibrated reuse thresholds (total variation): {alone:.4g} alone, "
              f"{threshold:.4g} with the calibrated exits", flush=True)

        def timed(run):
            start = time.perf_counter()
            result = run()
            return (time.perf_counter() - start) / len(test_frames), result

        runs = {
            "chain, early exits": (exits, lambda: chain.predict(test_frames, mode="sample")),
            f"frame reuse alone (threshold {alone:.3g}, exits closed)": (
                closed, lambda: kd.runtime.FrameStream(chain, alone).run(test_frames)),
            f"early exits + frame reuse (threshold {threshold:.3g})": (
                exits, lambda: kd.runtime.FrameStream(chain, threshold).run(test_frames)),
        }
        times = {name: [] for name in ["static", *runs]}
        results = {}
        for _ in range(args.rounds):
            seconds, static_labels = static_latency_and_labels(static_path, test_frames, 1)
            times["static"].append(seconds)
            for name, (policy, run) in runs.items():
                chain.set_policy(policy)
                seconds, results[name] = timed(run)
                times[name].append(seconds)
        seconds = {name: float(np.median(t)) for name, t in times.items()}
        last = len(chain.stage_names) - 1
        n = len(test_frames)
        rows = [("static model", static_labels, n, n, static_macs, seconds["static"])]
        for name, result in results.items():
            computed = n - int(getattr(result, "reused", np.zeros(n, bool)).sum())
            rows.append((name, result.labels, int(result.stages_run[:, last].sum()),
                         computed, result.macs.mean(), seconds[name]))
    print(
        "\n| run | accuracy | frames through the full network | frames computed "
        "| mean MACs per frame | latency per frame | vs static |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, labels, full, computed, macs, s in rows:
        print(
            f"| {name} | {(labels == test_labels).mean():.4f} | {full} of {n} "
            f"({n / max(full, 1):.1f}x fewer) | {computed} | {macs / 1e6:.3f} M | "
            f"{s * 1e6:.0f} us | {seconds['static'] / s:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
