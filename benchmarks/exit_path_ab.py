"""This runtime against another revision's, with early exits open, next to the IF-op model.

`runtime_ab.py` closes every exit (the chaining overhead); this one runs the
export under its own (calibrated) policy, where most samples leave at the
first exit, so the per-exit path of the sample loop is what differs. The other
revision's runtime is imported under another package name; the two chains and
the single IF-op model (`export_conditional`, fed the same thresholds) are
timed in alternating rounds at batch 1; ratios are medians of the ratios
within each round.

    ./run demo && PYTHONPATH=. .venv/bin/python benchmarks/exit_path_ab.py --base HEAD~1
"""

import argparse
import tempfile
import time

import numpy as np

from runtime_ab import import_base_runtime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--export", default="demo_out/stages")
    parser.add_argument("--conditional", default="demo_out/conditional.tflite")
    parser.add_argument("--data", default="demo_out/test.npz")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)

    from keras_dynamic import runtime
    from keras_dynamic.runtime.single_model import SingleModel

    base = import_base_runtime(args.base, tempfile.mkdtemp())
    x = np.load(args.data)["x"]
    boards = [{"image": x[i : i + 1]} for i in range(len(x))]
    for threads in args.threads:
        new = runtime.load(args.export, num_threads=threads)
        old = base.load(args.export, num_threads=threads)
        conditional = SingleModel(args.conditional, num_threads=threads)
        conditional.set_thresholds(new.policy, new.exit_names)
        call = conditional.fast_call()
        times = {"this": [], "base": [], "conditional": []}
        for _ in range(args.rounds):
            for name, chain in (("this", new), ("base", old)):
                start = time.perf_counter()
                chain.predict(x, mode="sample")
                times[name].append((time.perf_counter() - start) / len(x))
            start = time.perf_counter()
            for board in boards:
                call(board)
            times["conditional"].append((time.perf_counter() - start) / len(x))
        t = {k: np.array(v) for k, v in times.items()}
        print(
            f"{threads} thread(s): this {np.median(t['this']) * 1e6:.1f} us, "
            f"base {np.median(t['base']) * 1e6:.1f} us, IF-op model "
            f"{np.median(t['conditional']) * 1e6:.1f} us per sample; this/base "
            f"{np.median(t['this'] / t['base']):.3f}, this/IF-op "
            f"{np.median(t['this'] / t['conditional']):.3f}, base/IF-op "
            f"{np.median(t['base'] / t['conditional']):.3f}"
        )


if __name__ == "__main__":
    main()
