"""Early-exit heads compared on full MNIST with the README's Usage network.

For each head: the README network (three conv + max-pool blocks of 32, 64 and
128 filters, an `EarlyExit` after each) built with that head's `EarlyExit`
arguments, trained as the README trains it (Adam, linear exit loss weights,
batch 128, 10 epochs) on 55,000 training images, exported with
`export_stages`, loaded with `kd.runtime.load`, calibrated with
`calibrate(max_accuracy_drop=0.005)` on the 5,000 held-out training images,
and evaluated on the 10,000 test images. Reported per head: the test accuracy
of each exit in Keras, the chain's test accuracy against the final exit's
(both from the exported stages), the share of samples per exit, and the MACs
saved: 1 - mean MACs per sample of the chain / MACs of the static
final-exit model (the network without its early heads).

    PYTHONPATH=. .venv/bin/python benchmarks/exit_heads.py [--heads grid plain ...]

Reads ../shared/data/mnist.npz; without it, scikit-learn's 8x8 digits
upsampled to 28x28 (far fewer images, so figures are not comparable).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist.npz")

# EarlyExit arguments of each candidate head.
HEADS = {
    "plain": {"pooling": "avg"},
    "grid": {"pooling": "grid", "grid_size": 4},
    "conv_grid": {"pooling": "grid", "grid_size": 4, "conv_filters": 32, "conv_strides": 2},
    "conv_avg": {"pooling": "avg", "conv_filters": 32, "conv_strides": 2},
}


def load_data(path=MNIST, seed=0):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test), source name."""
    if os.path.exists(path):
        data = np.load(path)
        x_train, y_train = data["x_train"], data["y_train"]
        x_test, y_test = data["x_test"], data["y_test"]
        source = "MNIST"
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        rows = (np.arange(28) * 8) // 28
        images = (digits.images[:, rows][:, :, rows] * (255 / 16)).astype("uint8")
        x_train, x_test, y_train, y_test = train_test_split(
            images, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
        )
        source = "scikit-learn digits (MNIST not found)"
    x_train = x_train[..., None].astype("float32") / 255.0
    x_test = x_test[..., None].astype("float32") / 255.0
    order = np.random.default_rng(seed).permutation(len(x_train))
    n_val = max(len(x_train) // 12, 1)
    val, train = order[:n_val], order[n_val:]
    return (
        (x_train[train], y_train[train].astype("int64")),
        (x_train[val], y_train[val].astype("int64")),
        (x_test, y_test.astype("int64")),
        source,
    )


def readme_model(head):
    """The README's Usage network with `head` as every EarlyExit's arguments."""
    import keras

    import keras_dynamic as kd

    def block(x, filters):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        return keras.layers.MaxPooling2D()(x)

    inputs = keras.Input((28, 28, 1))
    x = block(inputs, 32)
    e1 = kd.layers.EarlyExit(10, name="exit_1", **head)(x)
    x = block(x, 64)
    e2 = kd.layers.EarlyExit(10, name="exit_2", **head)(x)
    x = block(x, 128)
    y = kd.layers.EarlyExit(10, name="final", **head)(x)
    return keras.Model(inputs, [e1, e2, y])


def evaluate_head(name, data, epochs, seed, out):
    import keras

    import keras_dynamic as kd
    from keras_dynamic import converters
    from keras_dynamic.converters.macs import count_macs

    (x_train, y_train), (x_val, y_val), (x_test, y_test), _ = data
    keras.utils.set_random_seed(seed)
    model = readme_model(HEADS[name])
    model.compile(
        "adam",
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3,
        loss_weights=kd.losses.exit_loss_weights(3, schedule="linear"),
    )
    start = time.perf_counter()
    model.fit(x_train, [y_train] * 3, batch_size=128, epochs=epochs, verbose=2)
    train_seconds = time.perf_counter() - start
    keras_accuracy = [
        float((logits.argmax(-1) == y_test).mean())
        for logits in model.predict(x_test, batch_size=512, verbose=0)
    ]
    static_macs = count_macs(keras.Model(model.inputs, model.outputs[-1]))

    chain = kd.runtime.load(converters.export_stages(model, os.path.join(out, name)))
    chain.calibrate(x_val, y_val, max_accuracy_drop=0.005)
    result = chain.predict(x_test)
    final_logits = chain.run_all(x_test)[chain.exit_names[-1]]
    return {
        "head": name,
        "early_exit_args": HEADS[name],
        "train_seconds": train_seconds,
        "keras_test_accuracy": dict(zip(model.output_names, keras_accuracy)),
        "final_exit_accuracy": float((final_logits.argmax(-1) == y_test).mean()),
        "chain_accuracy": float((result.labels == y_test).mean()),
        "exit_shares": [float((result.exit_index == i).mean()) for i in range(3)],
        "thresholds": chain.policy.to_dict(),
        "static_macs": int(static_macs),
        "chain_total_macs": int(chain.total_macs),
        "chain_mean_macs": float(np.mean(result.macs)),
        "macs_saved": float(1.0 - np.mean(result.macs) / static_macs),
    }


def table(rows):
    lines = [
        "| head | exit_1 / exit_2 / final acc (Keras) | final exit acc | chain acc "
        "| acc given up | exit shares | MACs saved | static MACs | train time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        accuracy = " / ".join(f"{a:.4f}" for a in row["keras_test_accuracy"].values())
        shares = " / ".join(f"{s:.2f}" for s in row["exit_shares"])
        given_up = 100 * (row["final_exit_accuracy"] - row["chain_accuracy"])
        lines.append(
            f"| {row['head']} | {accuracy} | {row['final_exit_accuracy']:.4f} | "
            f"{row['chain_accuracy']:.4f} | {given_up:+.2f} points | {shares} | "
            f"{100 * row['macs_saved']:.1f}% | {row['static_macs'] / 1e6:.2f} M | "
            f"{row['train_seconds'] / 60:.0f} min |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", nargs="+", choices=sorted(HEADS), default=list(HEADS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=MNIST, help="path of mnist.npz")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)

    data = load_data(args.mnist, args.seed)
    print(f"data: {data[3]}, train {len(data[0][1])}, val {len(data[1][1])}, "
          f"test {len(data[2][1])}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for name in args.heads:
            rows.append(evaluate_head(name, data, args.epochs, args.seed, out))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    sys.exit(main())
