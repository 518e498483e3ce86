"""Load time: `keras_dynamic.runtime.load` of an export, against one prediction.

Untrained `kd.models.multi_exit_cnn` networks (the time does not depend on
the weights), both layouts. `load` reads and checks the manifest, reads and
hashes every file, opens the interpreters, checks every signature and runs
every stage once on zeros; the figure is the median over many loads, beside
the median time of the first `predict` on one sample (sample mode) on the
freshly loaded chain: a runtime that does not run the stages at load pays
for allocating them there instead. Run it against another version of the
runtime by putting that version first on PYTHONPATH.

    .venv/bin/python benchmarks/load_time.py [--loads 30]
"""

import argparse
import os
import tempfile
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=30)
    args = parser.parse_args(argv)

    import keras_dynamic as kd
    from keras_dynamic import runtime

    models = {
        "multi_exit_cnn 32x32x1": kd.models.multi_exit_cnn((32, 32, 1)),
        "multi_exit_cnn 96x96x3": kd.models.multi_exit_cnn((96, 96, 3), name="wide"),
    }
    print(f"runtime: {os.path.dirname(runtime.__file__)}\n")
    print("| model | layout | file bytes | load ms | first predict ms | together ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for index, (label, model) in enumerate(models.items()):
            x = np.zeros((1, *model.input_shape[1:]), np.float32)
            for layout in ("signatures", "files"):
                folder = os.path.join(root, f"{index}_{layout}")
                kd.converters.export_stages(model, folder, layout=layout)
                loads, predicts = [], []
                for _ in range(args.loads):
                    start = time.perf_counter()
                    chain = runtime.load(folder, num_threads=1)
                    loads.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    chain.predict(x, mode="sample")
                    predicts.append(time.perf_counter() - start)
                size = sum(os.path.getsize(os.path.join(folder, name))
                           for name in os.listdir(folder) if name.endswith(".tflite"))
                load_s, predict_s = np.median(loads), np.median(predicts)
                print(f"| {label} | {layout} | {size:,} | {load_s * 1e3:.2f} | "
                      f"{predict_s * 1e3:.2f} | {(load_s + predict_s) * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    main()
