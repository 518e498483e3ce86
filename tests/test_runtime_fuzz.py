"""The loader under a few hundred fuzzed export folders (tests/runtime_fuzz.py).

Every outcome must be a correct result, a documented error or a refusal:
no other exception type, no hang, no crash, no silent change. The longer
run is `benchmarks/fuzz_loader.py`.
"""

import runtime_fuzz
from runtime_fixtures import digits_export
from runtime_fixtures import untrained_digits_export

CASES = 300
SEED = 20261126


def test_fuzzed_export_folders(tmp_path_factory):
    exports = [digits_export(tmp_path_factory, layout) for layout in ("signatures", "files")]
    bases = [runtime_fuzz.load_base(e.folder) for e in exports]
    other = (untrained_digits_export(tmp_path_factory) / "stages.tflite").read_bytes()
    results = runtime_fuzz.run_fuzz(
        bases, exports[0].x_val[:32], cases=CASES, seed=SEED, other_model=other
    )
    assert len(results) == CASES
    outcomes, families = runtime_fuzz.tally(results)
    report = "\n".join(
        f"case {case.index} ({case.family}: {case.detail[:100]}): {outcome}: {detail[:300]}"
        for case, outcome, detail in runtime_fuzz.failures(results)
    )
    assert not report, f"outcomes {outcomes}\n{report}"
    # The stream reaches every family and both sides of the loader.
    assert {family for family, _ in families} == set(runtime_fuzz.FAMILIES)
    assert outcomes.get("loaded", 0) and outcomes.get("loaded_rehashed", 0)
    assert outcomes.get("refused_manifest", 0) and outcomes.get("refused_file", 0)
