"""Chaining overhead: the stage chain vs the monolithic model when no sample exits.

Every sample runs to the final exit (all thresholds above 1), one sample at a
time, so the chain does exactly the monolithic model's work plus the cost of
splitting it: extra signature calls, tensors handed between stages, and the
runtime's per-stage decisions. Both run in the same process, alternately,
for several rounds; the figures are medians of the per-round mean latency.

    .venv/bin/python benchmarks/chain_overhead.py [--samples 300 --rounds 7]
"""

import argparse
import os
import tempfile
import time

import numpy as np


def static_seconds(path, x, threads):
    from keras_dynamic.runtime.interpreter import interpreter_class

    interpreter_type, _ = interpreter_class()
    interpreter = interpreter_type(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    start = time.perf_counter()
    for row in range(len(x)):
        interpreter.set_tensor(input_index, x[row : row + 1])
        interpreter.invoke()
        interpreter.get_tensor(output_index)
    return (time.perf_counter() - start) / len(x)


def chain_seconds(chain, x, policy):
    start = time.perf_counter()
    chain.predict(x, mode="sample", policy=policy)
    return (time.perf_counter() - start) / len(x)


def measure(model, folder, x, threads, rounds, layout):
    from keras_dynamic import converters
    import keras_dynamic as kd

    stages = os.path.join(folder, f"stages_{layout}")
    static = os.path.join(folder, "static.tflite")
    if not os.path.exists(stages):
        converters.export_stages(model, stages, layout=layout)
    if not os.path.exists(static):
        converters.export_static(model, static)
    chain = kd.runtime.load(stages, num_threads=threads)
    never_exit = {
        name: {"kind": "max_softmax", "threshold": 2.0} for name in chain.exit_names[:-1]
    }
    static_times, chain_times = [], []
    chain_seconds(chain, x[:20], never_exit)  # warm up both
    static_seconds(static, x[:20], threads)
    for _ in range(rounds):
        static_times.append(static_seconds(static, x, threads))
        chain_times.append(chain_seconds(chain, x, never_exit))
    static_s, chain_s = np.median(static_times), np.median(chain_times)
    return static_s, chain_s


def demo_models():
    """The two untrained networks the runtime benchmarks time: ``{label: model}``."""
    import keras_dynamic as kd

    return {
        "multi_exit_cnn 32x32 (3 stages)": kd.models.multi_exit_cnn((32, 32, 1)),
        "multi_exit_cnn 16x16, narrow (3 stages)": kd.models.multi_exit_cnn(
            (16, 16, 1), widths=(16, 32, 64), name="narrow"
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    models = demo_models()
    print("| model | layout | threads | static us | chain us | chain / static |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for index, (label, model) in enumerate(models.items()):
            folder = os.path.join(root, str(index))
            x = rng.random((args.samples, *model.input_shape[1:]), dtype=np.float32)
            for layout in ("signatures", "files"):
                for threads in (1, 2):
                    static_s, chain_s = measure(
                        model, folder, x, threads, args.rounds, layout
                    )
                    print(
                        f"| {label} | {layout} | {threads} | {static_s * 1e6:.1f} | "
                        f"{chain_s * 1e6:.1f} | {chain_s / static_s:.3f}x |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
