"""Early exits over the depth of a sequence encoder: sequential MNIST, patience vs confidence.

Sequential MNIST (each 28x28 digit read as 28 time steps of 28 pixels, from
../shared/data/mnist.npz) classified by
`kd.models.multi_exit_sequence_classifier` (an exit after each encoder
block, DeeBERT's layout), trained with plain `fit`, exported with
`export_stages` and `export_static`, then run on the test digits at batch 1
under several policies: fixed patience values (PABEE: leave when the exits
before agree), the patience and the max-softmax thresholds calibrated on a
validation split for at most ``--max-accuracy-drop``, and no early exit. For
each: accuracy, exit shares, mean executed MACs, and latency per sample of
the chain against the static final-exit model, alternated in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/sequence_exits.py [--encoder transformer]
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import numpy as np  # noqa: E402
from early_exit_demo import measure  # noqa: E402

import keras  # noqa: E402
import keras_dynamic as kd  # noqa: E402

DATA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist.npz"
)


def load(num_train, num_val, num_test, seed=0):
    data = np.load(DATA)
    order = np.random.default_rng(seed).permutation(len(data["y_train"]))
    x = data["x_train"][order].astype("float32") / 255.0
    y = data["y_train"][order].astype("int64")
    x_test = data["x_test"][:num_test].astype("float32") / 255.0
    y_test = data["y_test"][:num_test].astype("int64")
    train = x[:num_train], y[:num_train]
    val = x[num_train : num_train + num_val], y[num_train : num_train + num_val]
    return train, val, (x_test, y_test)


def train(model, x, y, epochs, batch):
    num_exits = len(model.outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            1e-3, decay_steps=epochs * (len(x) // batch)
        )),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * num_exits,
        loss_weights=kd.losses.exit_loss_weights(num_exits, schedule="uniform"),
    )
    model.fit(x, [y] * num_exits, batch_size=batch, epochs=epochs, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="transformer",
                        choices=kd.models.multi_exit_sequence.ENCODERS)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-val", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not os.path.exists(DATA):
        print(f"skipped: {os.path.normpath(DATA)} not found (see DESIGN.md).")
        return 0

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load(
        args.num_train, args.num_val, args.num_test, args.seed
    )
    keras.utils.set_random_seed(args.seed)
    model = kd.models.multi_exit_sequence_classifier(
        (28, 28), 10, encoder=args.encoder, width=args.width, num_blocks=args.blocks
    )
    train(model, x_train, y_train, args.epochs, args.batch)
    keras_final = model.predict(x_test, batch_size=256, verbose=0)[-1]
    print(
        f"sequential MNIST, {args.encoder} encoder, width {args.width}, "
        f"{args.blocks} blocks, {args.epochs} epochs on {len(y_train)} digits; "
        f"final exit (Keras) test accuracy {(keras_final.argmax(1) == y_test).mean():.4f}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as out:
        folder = os.path.join(out, "stages")
        kd.converters.export_stages(model, folder, verbose=0)
        static_path = os.path.join(out, "static.tflite")
        kd.converters.export_static(model, static_path, verbose=0)
        chain = kd.runtime.load(folder, num_threads=1)
        early = chain.exit_names[:-1]

        def patience(t):
            return {name: {"kind": "patience", "threshold": t} for name in early}

        policies = {f"patience {t}": patience(t) for t in range(1, len(early))}
        drop = args.max_accuracy_drop
        policies[f"patience, calibrated (drop <= {drop})"] = chain.calibrate(
            x_val, y_val, max_accuracy_drop=drop, kind="patience"
        )
        policies[f"max_softmax, calibrated (drop <= {drop})"] = chain.calibrate(
            x_val, y_val, max_accuracy_drop=drop
        )
        policies["no early exit"] = {name: None for name in early}

        rows = []
        for name, policy in policies.items():
            chain.set_policy(policy)
            rules = ", ".join(
                "-" if r is None else f"{r.threshold:.4g}"
                for r in (chain.policy.rules[e] for e in early)
            )
            static_s, chain_s, static_labels, result = measure(
                chain, static_path, x_test, 1, args.rounds
            )
            shares = [float((result.exit_index == i).mean()) for i in range(len(chain.exit_names))]
            rows.append(
                f"| {name} | {rules} | {float((result.labels == y_test).mean()):.4f} | "
                f"{float((static_labels == y_test).mean()):.4f} | "
                f"{' / '.join(f'{s:.2f}' for s in shares)} | "
                f"{np.mean(result.macs) / 1e6:.3f} M of {chain.total_macs / 1e6:.3f} M | "
                f"{chain_s * 1e6:.0f} us | {static_s * 1e6:.0f} us | {static_s / chain_s:.2f}x |"
            )
            print(rows[-1], flush=True)
    print(
        "\n| policy | early-exit thresholds | chain accuracy | static accuracy "
        "| exit shares | mean MACs | chain, per sample | static, per sample | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
