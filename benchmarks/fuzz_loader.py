"""Fuzzing the loader: outcomes of many damaged export folders.

The fuzzer of the test suite (tests/runtime_fuzz.py), run longer: the
trained digits export of the runtime tests, in both layouts, damaged one way
per case (manifest structure, manifest bytes, folder, model files), each
case loaded and run in a subprocess under a 1 GiB address-space limit and a
20 s time limit. Prints the outcomes per family; any failure (an
undocumented exception, a hang, a crash, a silent change, a damaged folder
accepted) is listed and makes the command exit with status 1.

    .venv/bin/python benchmarks/fuzz_loader.py --cases 10000 [--seed 1 --workers 2]
"""

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import runtime_fixtures  # noqa: E402
import runtime_fuzz  # noqa: E402


class _Factory:
    """What `digits_export` needs from pytest's tmp_path_factory: a base folder."""

    def __init__(self, folder):
        self._folder = folder

    def getbasetemp(self):
        return self._folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2,
                        help="case streams run side by side (one subprocess each at a time)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as root:
        factory = _Factory(root)
        exports = [runtime_fixtures.digits_export(factory, layout)
                   for layout in ("signatures", "files")]
        bases = [runtime_fuzz.load_base(e.folder) for e in exports]
        other = (runtime_fixtures.untrained_digits_export(factory) / "stages.tflite").read_bytes()
        x = exports[0].x_val[:32]
        share = -(-args.cases // args.workers)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            parts = pool.map(
                lambda first: runtime_fuzz.run_fuzz(
                    bases, x, cases=min(share, args.cases - first), seed=args.seed,
                    first=first, other_model=other),
                range(0, args.cases, share),
            )
            results = {k: v for part in parts for k, v in part.items()}
        seconds = time.perf_counter() - start

    outcomes, families = runtime_fuzz.tally(results)
    columns = [*runtime_fuzz.OK_OUTCOMES, *runtime_fuzz.FAIL_OUTCOMES]
    print(f"{len(results)} cases, seed {args.seed}, {seconds:.0f} s\n")
    print("| family | cases | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for family in [*runtime_fuzz.FAMILIES, "all"]:
        counts = outcomes if family == "all" else {
            o: n for (f, o), n in families.items() if f == family}
        print(f"| {family} | {sum(counts.values())} | "
              + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    failed = runtime_fuzz.failures(results)
    for case, outcome, detail in failed:
        print(f"FAILED case {case.index} ({case.family}: {case.detail}): {outcome}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
