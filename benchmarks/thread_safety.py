"""Sharing a chain between threads: a lock, or interpreters per thread?

One thread, `predict(mode="sample")` on the demo network (untrained
`multi_exit_cnn` 32x32, every early exit closed so every sample runs every
stage), latency per sample for calls of 1 and of 300 samples:

* *lock*: the runtime as it is (one lock held for each call);
* *none*: the lock replaced by a no-op (not thread-safe; the reference);
* *per-thread*: no lock, the stage runners looked up in a `threading.local`
  on each access, which is what per-thread interpreters cost a single thread.

The three alternate for many rounds; times are medians of the per-round
means, ratios medians of the ratios within each round (with their
interquartile range). Then eight threads: samples per second through one shared
chain (lock) and through one chain per thread (what per-thread interpreters
amount to), and the resident memory each extra chain costs.

    .venv/bin/python benchmarks/thread_safety.py [--rounds 9 --samples 300]
"""

import argparse
import contextlib
import os
import tempfile
import threading
import time

import numpy as np
from soak import rss_mib


def _per_thread_class():
    from keras_dynamic.runtime import Chain

    class PerThreadLookup(Chain):
        """Runners behind a thread-local, no lock: the per-thread design's lookups."""

        @property
        def _runners(self):
            return self._local.runners

        @_runners.setter
        def _runners(self, runners):
            if "_local" not in self.__dict__:
                self._local = threading.local()
            self._local.runners = runners

    return PerThreadLookup


def variants(folder):
    from keras_dynamic import runtime

    locked = runtime.load(folder, num_threads=1)
    unlocked = runtime.load(folder, num_threads=1)
    unlocked._lock = contextlib.nullcontext()
    base = runtime.load(folder, num_threads=1)
    per_thread = _per_thread_class()(
        base.folder, base.manifest, dict(zip(base.stage_names, base._runners))
    )
    per_thread._lock = contextlib.nullcontext()
    return {"lock": locked, "none": unlocked, "per-thread": per_thread}


def per_sample_seconds(chain, x, size, policy):
    start = time.perf_counter()
    for i in range(0, len(x) - size + 1, size):
        chain.predict(x[i : i + size], mode="sample", policy=policy)
    return (time.perf_counter() - start) / (len(x) // size * size)


def throughput(chains, x, calls):
    """Samples per second of len(chains) threads, thread k using chains[k]."""
    barrier = threading.Barrier(len(chains) + 1)

    def work(chain):
        barrier.wait()
        for i in range(calls):
            j = i % len(x)
            chain.predict(x[j : j + 1], mode="sample")

    threads = [threading.Thread(target=work, args=(c,)) for c in chains]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return len(chains) * calls / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=300, help="calls per thread")
    args = parser.parse_args(argv)

    import keras_dynamic as kd
    from keras_dynamic import runtime

    model = kd.models.multi_exit_cnn((32, 32, 1))
    x = np.random.default_rng(0).random((args.samples, 32, 32, 1), dtype=np.float32)
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.dirname(kd.converters.export_stages(model, os.path.join(root, "e")))
        chains = variants(folder)
        closed = {n: {"kind": "max_softmax", "threshold": 2.0}
                  for n in chains["lock"].exit_names[:-1]}
        times = {(name, size): [] for name in chains for size in (1, args.samples)}
        for chain in chains.values():
            per_sample_seconds(chain, x[:20], 1, closed)  # warm up
        names = list(chains)
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]  # each variant goes first in turn
            for size in (1, args.samples):
                for name in order:
                    times[name, size].append(per_sample_seconds(chains[name], x, size, closed))
        print("One thread, per-sample latency (median of round means):\n")
        print("| call size | none (unsafe) | lock | lock / none (IQR) | per-thread lookup "
              "| per-thread / none (IQR) |")
        print("|---|---|---|---|---|---|")

        def ratio(a, b):
            low, mid, high = np.percentile(np.array(a) / np.array(b), [25, 50, 75])
            return f"{mid:.3f}x ({low:.3f}-{high:.3f})"

        for size in (1, args.samples):
            none, lock, per = (times[n, size] for n in ("none", "lock", "per-thread"))
            print(f"| {size} | {np.median(none) * 1e6:.1f} us | {np.median(lock) * 1e6:.1f} us "
                  f"| {ratio(lock, none)} | {np.median(per) * 1e6:.1f} us "
                  f"| {ratio(per, none)} |", flush=True)

        shared = chains["lock"]
        before = rss_mib()
        own = [runtime.load(folder, num_threads=1) for _ in range(args.threads)]
        for chain in own:
            chain.predict(x[:1], mode="sample")
        per_chain = (rss_mib() - before) / args.threads
        rates = {"shared": [], "own": []}
        for _ in range(3):
            rates["shared"].append(throughput([shared] * args.threads, x, args.calls))
            rates["own"].append(throughput(own, x, args.calls))
        print(f"\n{args.threads} threads, {args.calls} one-sample calls each "
              "(median of 3 runs):\n")
        print("| design | samples/s | extra memory per thread |")
        print("|---|---|---|")
        print(f"| one shared chain (lock) | {np.median(rates['shared']):.0f} | 0 |")
        print(f"| one chain per thread | {np.median(rates['own']):.0f} | "
              f"{per_chain:.1f} MiB |")


if __name__ == "__main__":
    main()
