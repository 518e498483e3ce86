"""Soak: resident memory and open file descriptors over many predictions and loads.

The trained digits export of the runtime tests (tests/runtime_fixtures.py).
Phase 1: 100,000 `Chain.predict` calls on one chain, alternating sample mode
on one sample and batch mode on 1-64 samples under a policy that sends
samples out at every exit (so batch mode subsets rows). Phase 2: 200
load / predict / close cycles, every other one a load that is refused (a
tampered stage file, a symbolic-link manifest, a FIFO stage file, a corrupt
but rehashed model), to check the error paths too. RSS (VmRSS) and the
number of open descriptors are sampled along the way. The export is made in
a child process, so this one imports the runtime only (no TensorFlow).

    .venv/bin/python benchmarks/soak.py [--calls 100000 --cycles 200]
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
sys.path.insert(0, TESTS)

import runtime_fixtures  # noqa: E402


def rss_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def _export(root):
    """Makes the digits export under ``root`` in a child process; returns its folder."""
    script = (
        "import runtime_fixtures as f; "
        "print(f.digits_export(type('F', (), {'getbasetemp': lambda self: %r})()).folder)"
        % str(root)
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])),
    )
    return pathlib.Path(done.stdout.split()[-1])


def _copy(folder, dest):
    shutil.copytree(folder, dest)
    return dest


def _refused_folders(folder, root):
    """Copies of the export that `load` must refuse, each a different error path."""
    folders = []
    tampered = _copy(folder, root / "tampered")
    path = tampered / "stages.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    folders.append(tampered)
    linked = _copy(folder, root / "linked")
    os.replace(linked / "manifest.json", root / "manifest_elsewhere.json")
    os.symlink(root / "manifest_elsewhere.json", linked / "manifest.json")
    folders.append(linked)
    fifo = _copy(folder, root / "fifo")
    os.remove(fifo / "stages.tflite")
    os.mkfifo(fifo / "stages.tflite")
    folders.append(fifo)
    corrupt = _copy(folder, root / "corrupt")
    path = corrupt / "stages.tflite"
    path.write_bytes(runtime_fixtures.without_largest_constant(path.read_bytes()))
    runtime_fixtures.rehash(corrupt)
    folders.append(corrupt)
    return folders


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--every", type=int, default=10_000, help="sample every N calls")
    args = parser.parse_args(argv)

    from keras_dynamic import runtime
    from keras_dynamic.runtime.policy import softmax

    root = pathlib.Path(tempfile.mkdtemp())
    try:
        folder = _export(root)
        x = runtime_fixtures.digits()[0][runtime_fixtures.NUM_TRAIN :]
        rng = np.random.default_rng(0)
        chain = runtime.load(folder, num_threads=1)
        values = chain.run_all(x)
        policy = {
            name: {"kind": "max_softmax",
                   "threshold": float(np.quantile(softmax(values[name]).max(1), q))}
            for name, q in (("exit_1", 0.7), ("exit_2", 0.4))
        }
        chain.set_policy(policy)
        print(f"Phase 1: {args.calls:,} predict calls on one chain\n")
        print("| calls | samples | RSS MiB | open fds |")
        print("|---|---|---|---|")
        samples, start = 0, time.perf_counter()
        print(f"| 0 | 0 | {rss_mib():.1f} | {open_fds()} |", flush=True)
        for call in range(1, args.calls + 1):
            if call % 2:
                j = int(rng.integers(len(x)))
                chain.predict(x[j : j + 1], mode="sample")
                samples += 1
            else:
                size = int(rng.integers(1, 65))
                j = int(rng.integers(len(x) - size))
                chain.predict(x[j : j + size])
                samples += size
            if call % args.every == 0:
                print(f"| {call:,} | {samples:,} | {rss_mib():.1f} | {open_fds()} |", flush=True)
        chain.close()
        print(f"\n({time.perf_counter() - start:.0f} s)\n")
        (root / "refused").mkdir()

        refused = _refused_folders(folder, root / "refused")
        print(f"Phase 2: {args.cycles} load / predict / close cycles, every other "
              "one refused\n")
        print("| cycles | refused | RSS MiB | open fds |")
        print("|---|---|---|---|")
        print(f"| 0 | 0 | {rss_mib():.1f} | {open_fds()} |", flush=True)
        refusals = 0
        for cycle in range(1, args.cycles + 1):
            if cycle % 2:
                with runtime.load(folder, num_threads=1) as chain:
                    chain.predict(x[:8])
            else:
                try:
                    runtime.load(refused[(cycle // 2) % len(refused)])
                except runtime.ManifestError:
                    refusals += 1
            if cycle % max(1, args.cycles // 10) == 0:
                print(f"| {cycle} | {refusals} | {rss_mib():.1f} | {open_fds()} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
