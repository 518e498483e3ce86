"""Early-exit speed-up on the demo data, over several training seeds.

For each seed: the demo (train on scikit-learn digits, export, calibrate for
at most 0.5 points of accuracy drop on the validation split, bounded at 95%
confidence), then the test split timed at 1 and 2 interpreter threads, the
static final-exit model and the chain alternately in one run (medians over
rounds). For comparison, the last column is the test accuracy the chain gives
up when calibrated on the point estimate of the drop (`confidence=None`).

    .venv/bin/python benchmarks/early_exit_speedup.py [--seeds 0 1 2]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import early_exit_demo  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    import keras_dynamic as kd

    rows = [
        "| seed | threads | exit shares | chain acc | static acc | chain us | static us "
        "| speed-up | acc given up, point estimate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            early_exit_demo.main(
                ["--out", out, "--seed", str(seed), "--rounds", "1"]
            )
            data = kd.data.load_digits_splits(seed=seed)
            static_path = os.path.join(out, "static.tflite")
            point = kd.runtime.load(os.path.join(out, "stages"))
            point.calibrate(data.x_val, data.y_val, max_accuracy_drop=0.005)
            point_accuracy = (point.predict(data.x_test).labels == data.y_test).mean()
            for threads in (1, 2):
                chain = kd.runtime.load(os.path.join(out, "stages"), num_threads=threads)
                static_s, chain_s, static_labels, result = early_exit_demo.measure(
                    chain, static_path, data.x_test, threads, args.rounds
                )
                figures = early_exit_demo.report(
                    data, chain, result, static_labels, static_s, chain_s
                )
                shares = " / ".join(f"{row['share']:.2f}" for row in figures["exits"])
                rows.append(
                    f"| {seed} | {threads} | {shares} | {figures['chain_accuracy']:.4f} | "
                    f"{figures['static_accuracy']:.4f} | {figures['chain_latency_us']:.1f} | "
                    f"{figures['static_latency_us']:.1f} | {figures['speedup']:.2f}x | "
                    f"{100 * (figures['static_accuracy'] - point_accuracy):+.2f} points |"
                )
    # The demo prints its own tables while training; the summary comes last.
    print("\n".join(rows))


if __name__ == "__main__":
    main()
