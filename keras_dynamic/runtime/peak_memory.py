"""Peak resident memory of one model, run in this fresh process (used by `benchmark`).

    python -m keras_dynamic.runtime.peak_memory chain|single PATH INPUTS.npz THREADS

Loads the export folder (``chain``) or the single .tflite (``single``), runs
every input of the .npz at batch 1 and then as one batch (the IF-op model
takes batch 1 only), and
prints one JSON line: the peak RSS of the process and its growth over the
resident size once the interpreter backend and the inputs are loaded, in MiB.
"""

import json
import resource
import sys

import numpy as np


def _status_mib(field):
    """A memory field of /proc/self/status in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mib():
    # VmHWM belongs to this process image; ru_maxrss survives fork and exec
    # on Linux, so a child started by a large parent would report the parent's.
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20


def _current_mib():
    current = _status_mib("VmRSS")
    return _peak_mib() if current is None else current


def main(argv):
    kind, path, data, threads = argv
    from keras_dynamic.runtime.chain import load
    from keras_dynamic.runtime.interpreter import interpreter_class
    from keras_dynamic.runtime.single_model import SingleModel

    interpreter_class()  # the backend's import is not the model's memory
    with np.load(data) as archive:
        inputs = {name: archive[name] for name in archive.files}
    before = _current_mib()
    if kind == "chain":
        with load(path, num_threads=int(threads)) as chain:
            chain.predict(inputs, mode="sample")
            chain.predict(inputs)
    else:
        model = SingleModel(path, num_threads=int(threads))
        call = model.fast_call()
        n = len(next(iter(inputs.values())))
        for i in range(n):
            call({k: v[i : i + 1] for k, v in inputs.items()})
        if not model.batch_fixed:  # the same batch the chain runs
            call(inputs)
    after = _peak_mib()
    print(json.dumps({"peak_rss_mib": round(after, 1), "growth_mib": round(after - before, 1)}))


if __name__ == "__main__":
    main(sys.argv[1:])
