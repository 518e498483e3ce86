"""This runtime against the runtime of another git revision, side by side in one process.

The other revision's `keras_dynamic/runtime` is copied out of git under
another package name, so both run in this process on the same export,
alternating with the static model (the final exit as one `.tflite`, run by a
bare set_tensor / invoke / get_tensor loop) round after round: a noisy,
shared machine then slows all three alike, and the ratios stay comparable.
Every early exit is closed (no sample leaves early), so the chains do the
static model's work plus the cost of chaining. Calls of 300 samples
(`predict(x, mode="sample")`, the chaining-overhead benchmark's case) and of
one sample (`predict(x[i:i+1], mode="sample")` in a loop, where per-call
costs show). Times are medians of the per-round means; ratios are medians
of the ratios within each round, with their interquartile range.

    .venv/bin/python benchmarks/runtime_ab.py --base main [--samples 300 --rounds 15]
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from chain_overhead import demo_models
from chain_overhead import static_seconds

BASE_PACKAGE = "kd_runtime_base"


def import_base_runtime(revision, folder):
    """Imports ``revision``'s keras_dynamic/runtime as the package `BASE_PACKAGE`."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", revision, "keras_dynamic/runtime/"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    package = os.path.join(folder, BASE_PACKAGE)
    os.makedirs(package)
    for path in listing:
        if not path.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "show", f"{revision}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        with open(os.path.join(package, os.path.basename(path)), "w") as f:
            f.write(source.replace("keras_dynamic.runtime", BASE_PACKAGE))
    sys.path.insert(0, folder)
    return importlib.import_module(BASE_PACKAGE)


def chain_seconds(chain, x, policy, size):
    start = time.perf_counter()
    for i in range(0, len(x), size):
        chain.predict(x[i : i + size], mode="sample", policy=policy)
    return (time.perf_counter() - start) / len(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args(argv)

    import keras_dynamic as kd
    from keras_dynamic import runtime

    rng = np.random.default_rng(0)
    models = demo_models()
    with tempfile.TemporaryDirectory() as root:
        base = import_base_runtime(args.base, root)
        print(f"base: {args.base}\n")
        print("| model | threads | call size | static us | base chain us | this chain us "
              "| base / static | this / static | this / base (IQR) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for index, (label, model) in enumerate(models.items()):
            folder = os.path.join(root, f"export_{index}")
            static = os.path.join(root, f"static_{index}.tflite")
            kd.converters.export_stages(model, folder)
            kd.converters.export_static(model, static)
            x = rng.random((args.samples, *model.input_shape[1:]), dtype=np.float32)
            for threads in (1, 2):
                chains = {"base": base.load(folder, num_threads=threads),
                          "this": runtime.load(folder, num_threads=threads)}
                closed = {n: {"kind": "max_softmax", "threshold": 2.0}
                          for n in chains["this"].exit_names[:-1]}
                for size in (args.samples, 1):
                    times = {"static": [], "base": [], "this": []}
                    static_seconds(static, x[:20], threads)
                    for chain in chains.values():
                        chain_seconds(chain, x[:20], closed, size)
                    for r in range(args.rounds):
                        # Alternate which chain goes first.
                        order = ("base", "this") if r % 2 else ("this", "base")
                        times["static"].append(static_seconds(static, x, threads))
                        for name in order:
                            times[name].append(chain_seconds(chains[name], x, closed, size))
                    s, b, t = (np.array(times[k]) for k in ("static", "base", "this"))
                    low, mid, high = np.percentile(t / b, [25, 50, 75])
                    print(f"| {label} | {threads} | {size} | {np.median(s) * 1e6:.1f} | "
                          f"{np.median(b) * 1e6:.1f} | {np.median(t) * 1e6:.1f} | "
                          f"{np.median(b / s):.3f}x | {np.median(t / s):.3f}x | "
                          f"{mid:.3f}x ({low:.3f}-{high:.3f}) |", flush=True)


if __name__ == "__main__":
    main()
