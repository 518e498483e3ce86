"""Early exits end to end on real handwritten digits.

Trains a multi-exit CNN with `model.fit`, exports it as TFLite stages, calibrates
the exit thresholds on a validation split, and compares the chained runtime with
the same network's final exit run as one static .tflite, on a held-out test split:
accuracy, where samples exit, and latency per sample measured side by side.

    ./run demo                 # or: python examples/early_exit_demo.py --help
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.005)
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="bound the accuracy drop at this one-sided confidence (the "
        "validation split has only 360 samples)",
    )
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train(data, args):
    import keras
    import tensorflow as tf

    import keras_dynamic as kd

    # Same seed, same model and figures on the same machine.
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    model = kd.models.multi_exit_cnn(
        input_shape=data.x_train.shape[1:], num_classes=data.num_classes
    )
    num_exits = len(model.outputs)
    batch_size = 32
    steps = args.epochs * -(-len(data.x_train) // batch_size)
    model.compile(
        # Decaying to zero lets the final exit settle: with a constant rate its
        # validation accuracy swung by several points from epoch to epoch, and
        # calibration compares every exit against it.
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(2e-3, steps)
        ),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
        * num_exits,
        loss_weights=kd.losses.exit_loss_weights(num_exits, schedule="uniform"),
        metrics=[["accuracy"]] * num_exits,
    )
    # 897 training images are few: small random shifts help every exit.
    shift = keras.layers.RandomTranslation(
        0.1, 0.1, fill_mode="constant", seed=args.seed
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices(
            (data.x_train, (data.y_train,) * num_exits)
        )
        .shuffle(len(data.x_train), seed=args.seed)
        .batch(batch_size)
        .map(lambda x, y: (shift(x, training=True), y))
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = tf.data.Dataset.from_tensor_slices(
        (data.x_val, (data.y_val,) * num_exits)
    ).batch(128)
    start = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        # The dataset shuffles itself; fit's own shuffle flag would only warn.
        shuffle=False,
        verbose=0,
        callbacks=_epoch_bar(args.epochs),
    )
    accuracies = ", ".join(
        f"{name} {history.history[f'val_{name}_accuracy'][-1]:.3f}"
        for name in model.output_names
    )
    print(
        f"Trained {args.epochs} epochs in {time.perf_counter() - start:.0f} s; "
        f"validation accuracy: {accuracies}."
    )
    return model


def _epoch_bar(epochs):
    """A bar over the epochs on a terminal (tqdm comes with ai-edge-litert)."""
    try:
        from tqdm.keras import TqdmCallback
    except ImportError:
        return []
    return [
        TqdmCallback(
            epochs=epochs, verbose=0, file=sys.stdout, disable=None, leave=False,
            desc="training",
        )
    ]


def static_latency_and_labels(path, x, threads):
    """Runs the static model one sample at a time: (mean seconds, labels)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    labels = np.empty(len(x), dtype=np.int64)
    start = time.perf_counter()
    for row in range(len(x)):
        interpreter.set_tensor(input_index, x[row : row + 1])
        interpreter.invoke()
        labels[row] = interpreter.get_tensor(output_index)[0].argmax()
    return (time.perf_counter() - start) / len(x), labels


def chain_latency_and_result(chain, x):
    start = time.perf_counter()
    result = chain.predict(x, mode="sample")
    return (time.perf_counter() - start) / len(x), result


def measure(chain, static_path, x, threads, rounds):
    """Alternates static and chained runs over `x`; medians over the rounds."""
    static_times, chain_times = [], []
    for _ in range(rounds):
        seconds, static_labels = static_latency_and_labels(static_path, x, threads)
        static_times.append(seconds)
        seconds, result = chain_latency_and_result(chain, x)
        chain_times.append(seconds)
    return float(np.median(static_times)), float(np.median(chain_times)), static_labels, result


def report(data, chain, result, static_labels, static_s, chain_s):
    exits = chain.exit_names
    rows = []
    for index, name in enumerate(exits):
        taken = result.exit_index == index
        accuracy = (
            float((result.labels[taken] == data.y_test[taken]).mean())
            if taken.any()
            else None
        )
        rows.append(
            {"exit": name, "share": float(taken.mean()), "accuracy": accuracy}
        )
    return {
        "test_samples": int(len(data.y_test)),
        "exits": rows,
        "thresholds": chain.policy.to_dict(),
        "chain_accuracy": float((result.labels == data.y_test).mean()),
        "static_accuracy": float((static_labels == data.y_test).mean()),
        "chain_mean_macs": float(np.mean(result.macs)),
        "static_macs": float(chain.total_macs),
        "chain_latency_us": chain_s * 1e6,
        "static_latency_us": static_s * 1e6,
        "speedup": static_s / chain_s,
    }


def print_table(figures, threads):
    print()
    print(f"{'exit':<10}{'share':>8}{'accuracy':>10}")
    for row in figures["exits"]:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
        print(f"{row['exit']:<10}{row['share']:>8.3f}{accuracy:>10}")
    print()
    print(f"test samples                 {figures['test_samples']}")
    print(f"accuracy  chain / static     {figures['chain_accuracy']:.4f} / {figures['static_accuracy']:.4f}")
    gap = 100 * (figures["static_accuracy"] - figures["chain_accuracy"])
    print(f"accuracy given up            {gap:+.2f} points")
    print(f"MACs      chain / static     {figures['chain_mean_macs']:.0f} / {figures['static_macs']:.0f}")
    print(
        f"latency   chain / static     {figures['chain_latency_us']:.1f} us / "
        f"{figures['static_latency_us']:.1f} us per sample ({threads} thread(s), batch 1)"
    )
    print(f"speed-up                     {figures['speedup']:.2f}x")


def main(argv=None):
    args = parse_args(argv)
    # First: importing the converters imports TensorFlow with its start-up
    # log hidden, so the demo prints only its own lines.
    from keras_dynamic import converters
    import keras_dynamic as kd

    data = kd.data.load_digits_splits(image_size=args.image_size, seed=args.seed)
    print(
        f"Data: scikit-learn digits at {args.image_size}x{args.image_size}, "
        f"{len(data.x_train)} train / {len(data.x_val)} validation / "
        f"{len(data.x_test)} test images."
    )
    model = train(data, args)

    stages_dir = os.path.join(args.out, "stages")
    static_path = os.path.join(args.out, "static.tflite")
    # fused_model: the export also carries the IF-op model, which the runtime
    # runs in sample mode on a CPU where it is faster than the stage calls.
    converters.export_stages(
        model, stages_dir, representative_data=data.x_val, overwrite=True,
        fused_model=True,
    )
    converters.export_static(model, static_path)
    conditional_path = os.path.join(args.out, "conditional.tflite")
    converters.export_conditional(model, conditional_path)
    # The splits as .npz files, for the `keras-dynamic` command line.
    for split in ("val", "test"):
        np.savez(os.path.join(args.out, f"{split}.npz"),
                 x=getattr(data, f"x_{split}"), y=getattr(data, f"y_{split}"))

    chain = kd.runtime.load(stages_dir, num_threads=args.threads)
    chain.calibrate(
        data.x_val,
        data.y_val,
        max_accuracy_drop=args.max_accuracy_drop,
        confidence=args.confidence,
    )
    chain.save_policy()
    thresholds = ", ".join(
        f"{name} {rule['kind']} {rule['threshold']:.3f}"
        for name, rule in chain.policy.to_dict().items()
        if rule is not None
    )
    print(
        f"Calibrated on the validation split: {thresholds}; saved in "
        f"{os.path.join(stages_dir, 'manifest.json')}."
    )

    print(
        f"Timing {args.rounds} rounds over the {len(data.x_test)} test images, "
        "chain and static model alternately, one sample at a time."
    )
    static_s, chain_s, static_labels, result = measure(
        chain, static_path, data.x_test, args.threads, args.rounds
    )
    figures = report(data, chain, result, static_labels, static_s, chain_s)
    figures["threads"] = args.threads
    print_table(figures, args.threads)
    results_path = os.path.join(args.out, "demo_results.json")
    with open(results_path, "w") as file:
        json.dump(figures, file, indent=2)
    print(f"\nfigures written to {results_path}")
    command = os.path.join(os.path.dirname(sys.executable), "keras-dynamic")
    print(
        f"Next: `{command} bench "
        f"{stages_dir} --data {os.path.join(args.out, 'test.npz')} --static {static_path} "
        f"--conditional {conditional_path}` compares the chain with the static and the "
        "single IF-op model at 1, 2 and 4 threads."
    )
    return figures


if __name__ == "__main__":
    main()
