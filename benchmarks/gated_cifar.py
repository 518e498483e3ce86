"""Gates and routers on CIFAR-10: accuracy, executed MACs and latency of the chain.

Trains, on the CIFAR-10 subset in ../shared/data (shuffled; a held-out part
of it is the test set):

* `block`: a block-gated ResNet (ConvNet-AIG style, `gated_resnet`) with
  `ComputeBudget` at each budget, compared with the same trained network with
  every gate forced on;
* `channel`: a channel-gated ResNet (4 groups per gated convolution) at one
  budget, against its gates forced on;
* `moe`: a top-1 mixture of 4 experts after the last stage against the same
  network with one dense block there (the same per-sample MACs).

Each network is exported with `export_stages` and run by the runtime: accuracy
and mean executed MACs in batch mode over the test images, and mean latency
per image at batch 1 (sample mode, 1 interpreter thread) over the first
`--latency-images`, the two chains of a pair timed in alternating rounds so
that a busy machine slows both alike.

With ``--int8``, each trained gated network is also exported to int8
(weights and activations, int8 stage interfaces, calibrated through the
chain on 200 training images) and evaluated and timed beside the float32
chain: the gates decide on integer tensors.

    PYTHONPATH=. .venv/bin/python benchmarks/gated_cifar.py --which block channel moe
    PYTHONPATH=. .venv/bin/python benchmarks/gated_cifar.py --which block channel \
        --budgets 0.5 --int8
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_train.npz"


def load_data(num_train, num_test, seed):
    data = np.load(DATA)
    x = data["x"].astype("float32") / 255.0
    y = data["y"].astype("int64")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    mean, std = x[:num_train].mean((0, 1, 2)), x[:num_train].std((0, 1, 2))
    x = (x - mean) / std
    return (x[:num_train], y[:num_train]), (x[num_train : num_train + num_test], y[num_train : num_train + num_test])


def train(model, x, y, epochs, batch_size, seed):
    import keras

    steps = epochs * int(np.ceil(len(x) / batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    flip = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        # Horizontal flips, the cheapest CIFAR augmentation.
        mirrored = flip.random(len(x)) < 0.5
        xe = np.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
        model.fit(xe, y, epochs=1, batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def export(model, folder, x_parity, **options):
    from keras_dynamic import converters

    converters.export_stages(model, folder, parity_samples=x_parity[:32], verbose=0, **options)
    from keras_dynamic import runtime

    return runtime.load(folder, num_threads=1)


def evaluate(chain, x, y):
    result = chain.predict(x, batch_size=256)
    return {
        "accuracy": float((result.labels == y).mean()),
        "mean_macs": float(result.macs.mean()),
        "stage_share": result.stages_run.mean(axis=0).round(3).tolist(),
        "gate_rates": {k: v.mean(axis=0).round(3).tolist() for k, v in result.gates.items()},
        "route_counts": {k: np.bincount(v[v >= 0], minlength=4).tolist() for k, v in result.routes.items()},
    }


def same_decisions(a, b, x):
    """Share of images on which two chains take every gate and route alike."""
    ra, rb = a.predict(x, batch_size=256), b.predict(x, batch_size=256)
    same = np.ones(len(x), bool)
    for kind in ("gates", "routes"):
        for name, taken in getattr(ra, kind).items():
            other = getattr(rb, kind)[name]
            same &= (taken == other).reshape(len(x), -1).all(axis=1)
    return float(same.mean())


def latency(chains, x, rounds):
    """Mean seconds per image at batch 1 for each chain, timed in alternation."""
    times = {name: [] for name in chains}
    for name, chain in chains.items():
        chain.predict(x[:8], mode="sample")  # warm-up
    for _ in range(rounds):
        for name, chain in chains.items():
            result = chain.predict(x, mode="sample")
            times[name].append(float(result.latency_seconds.mean()))
    return {name: float(np.median(t)) for name, t in times.items()}


def keras_accuracy(model, x, y):
    logits = model.predict(x, batch_size=256, verbose=0)
    return float((np.asarray(logits).argmax(1) == y).mean())


def run_gated(args, data, gating, budget, folder):
    import keras

    import keras_dynamic as kd

    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(args.seed)
    base = kd.models.gated_resnet(
        (32, 32, 3), widths=tuple(args.widths), blocks_per_stage=tuple(args.blocks),
        gating=gating, channel_groups=4, name=f"{gating}_gated_{int(budget * 100)}",
    )
    model = kd.models.ComputeBudget(base, budget=budget, weight=args.budget_weight)
    seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.seed)
    base = model.strip()
    row = {"gating": gating, "budget": budget, "train_seconds": seconds,
           "keras_accuracy": keras_accuracy(base, x_test, y_test)}
    gated = export(base, folder / "gated", x_test)
    with kd.layers.force_gates(base, "on"):
        row["keras_accuracy_all_on"] = keras_accuracy(base, x_test, y_test)
        all_on = export(base, folder / "all_on", x_test)
    row["gated"] = evaluate(gated, x_test, y_test)
    row["all_on"] = evaluate(all_on, x_test, y_test)
    chains = {"gated": gated, "all_on": all_on}
    if args.int8:
        chains["gated_int8"] = export(
            base, folder / "gated_int8", x_test, quantize="int8",
            representative_data=x_train[:200],
        )
        row["gated_int8"] = evaluate(chains["gated_int8"], x_test, y_test)
        row["gated_int8"]["same_decisions_as_float32"] = same_decisions(
            gated, chains["gated_int8"], x_test
        )
    timed = latency(chains, x_test[: args.latency_images], args.rounds)
    row["latency_us"] = {k: v * 1e6 for k, v in timed.items()}
    row["macs_ratio"] = row["gated"]["mean_macs"] / row["all_on"]["mean_macs"]
    row["latency_ratio"] = timed["gated"] / timed["all_on"]
    return row


def run_moe(args, data, folder):
    import keras

    import keras_dynamic as kd

    (x_train, y_train), (x_test, y_test) = data
    rows = {}
    chains = {}
    blocks = list(args.blocks)
    for name, options in (
        ("moe4", {"moe_experts": 4, "blocks_per_stage": tuple(blocks)}),
        ("dense", {"blocks_per_stage": tuple(blocks[:-1] + [blocks[-1] + 1])}),
    ):
        keras.utils.set_random_seed(args.seed)
        model = kd.models.gated_resnet(
            (32, 32, 3), widths=tuple(args.widths), gating=None, name=name, **options
        )
        seconds = train(model, x_train, y_train, args.epochs, args.batch_size, args.seed)
        chains[name] = export(model, folder / name, x_test)
        rows[name] = {"train_seconds": seconds,
                      "keras_accuracy": keras_accuracy(model, x_test, y_test),
                      **evaluate(chains[name], x_test, y_test)}
    timed = latency(chains, x_test[: args.latency_images], args.rounds)
    for name in rows:
        rows[name]["latency_us"] = timed[name] * 1e6
    rows["latency_ratio"] = timed["moe4"] / timed["dense"]
    rows["macs_ratio"] = rows["moe4"]["mean_macs"] / rows["dense"]["mean_macs"]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", nargs="+", default=["block", "channel", "moe"],
                        choices=["block", "channel", "moe"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    parser.add_argument("--channel-budget", type=float, default=0.5)
    parser.add_argument("--budget-weight", type=float, default=10.0)
    parser.add_argument("--widths", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--blocks", nargs="+", type=int, default=[3, 3, 3])
    parser.add_argument("--train", type=int, default=16000)
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latency-images", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--int8", action="store_true",
                        help="also export and run each gated network as int8")
    parser.add_argument("--out", default="gated_cifar_results.json")
    args = parser.parse_args()
    data = load_data(args.train, args.test, args.seed)
    results = {"args": vars(args), "cpu_count": os.cpu_count(), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        if "block" in args.which:
            for budget in args.budgets:
                row = run_gated(args, data, "block", budget, tmp / f"block{budget}")
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
        if "channel" in args.which:
            row = run_gated(args, data, "channel", args.channel_budget, tmp / "channel")
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
        if "moe" in args.which:
            row = run_moe(args, data, tmp / "moe")
            results["moe"] = row
            print(json.dumps(row), flush=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
