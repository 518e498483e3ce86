"""The Android demo's JVM chain core against the Python runtime, on real exports.

The core (android_demo/core) is built without Gradle by android_demo/scripts/build_core.sh,
which also runs its JUnit tests. Golden traces of three real exports (the demo network, a
network whose residual crosses an exit, and a network with a block gate, a channel gate and
a router over three experts, manifest version 2) are recorded by `keras_dynamic.runtime.trace`
under several policies, thresholds at near-ties included, and replayed through the core,
which reads each export's own manifest.json and verifies its files: every decision must
agree (exit, label, scores and, with gates and routes, every gate column, every route and
the stages run).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from android_gated import gated_export
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime import trace
from keras_dynamic.runtime.policy import entropy
from keras_dynamic.runtime.policy import softmax

REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
JAVA_LIBS = pathlib.Path(os.environ.get("JAVA_LIBS", "/usr/share/java"))
JARS = ("jackson-core.jar", "junit4.jar", "hamcrest-core.jar")
# A near-tie threshold sits this far (relative) from a traced score: inside the Python
# sample loop's 1e-9 margin, where it settles max_softmax with NumPy, and far outside the
# few ulps (~1e-16) by which the two runtimes' scores can differ.
NEAR = 1e-11


def _missing_java():
    missing = [tool for tool in ("javac", "jar", "java") if shutil.which(tool) is None]
    missing += [str(JAVA_LIBS / jar) for jar in JARS if not (JAVA_LIBS / jar).is_file()]
    return missing


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """Builds the core and runs its JUnit tests; returns (classpath, JUnit output)."""
    missing = _missing_java()
    if missing:
        message = (
            f"the JVM toolchain is missing {missing}: `./run tests` installs it "
            "(apt-get install default-jdk-headless junit4 libjackson2-core-java)"
        )
        # CI must run the cross-language check, never pass without it.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("core")
    done = subprocess.run(
        [str(DEMO / "scripts" / "build_core.sh"), str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return (out / "classpath.txt").read_text().strip(), done.stdout


def replay(core, folder, trace_path):
    classpath, _ = core
    done = subprocess.run(
        ["java", "-cp", classpath, "org.kerasdynamic.core.TraceReplay", str(folder), str(trace_path)],
        capture_output=True, text=True, timeout=300,
    )
    return done


def replay_report(core, folder, trace_path):
    done = replay(core, folder, trace_path)
    assert done.returncode == 0, done.stderr[-4000:]
    return {run["name"]: run for run in json.loads(done.stdout)["runs"]}


def test_junit_suite_passes(core):
    _, output = core
    assert "OK (" in output, output[-3000:]
    assert int(output.rsplit("OK (", 1)[1].split()[0]) >= 70


# ---------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo network (multi_exit_cnn) on digits at 16x16, trained briefly, exported."""
    import keras

    import keras_dynamic as kd
    from keras_dynamic import converters

    data = kd.data.load_digits_splits(image_size=16)
    keras.utils.set_random_seed(0)
    model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=10)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3,
    )
    model.fit(data.x_train, [data.y_train] * 3, epochs=3, batch_size=32, verbose=0)
    base = tmp_path_factory.mktemp("demo")
    manifest = converters.export_stages(
        model, base / "stages", representative_data=data.x_val[:64]
    )
    converters.export_static(model, str(base / "static.tflite"))
    return pathlib.Path(manifest).parent, base / "static.tflite", data


@pytest.fixture(scope="module")
def skip(tmp_path_factory):
    return digits_export(tmp_path_factory)


def _scores(logits, kind):
    p = softmax(logits)
    return p.max(axis=1) if kind == "max_softmax" else entropy(p)


def _rule(kind, threshold):
    return {"kind": kind, "threshold": float(threshold)}


def policies(folder, x, x_cal, y_cal):
    """Named policies over the two early exits, built from the traced samples' own scores.

    ``j1`` is the sample with the median exit-1 score, ``j2`` one that reaches exit 2 under
    a near-tie exit-1 threshold. The near-tie pairs put each threshold just above and just
    below these samples' scores, so the two runs of a pair must decide them differently.
    """
    chain = runtime.load(folder, num_threads=1)
    logits = chain.run_all(x, batch_size=1)
    first, second = chain.exit_names[:2]
    named = {"manifest": None}
    for kind, sign in (("max_softmax", 1), ("entropy", -1)):
        s1, s2 = _scores(logits[first], kind), _scores(logits[second], kind)
        j1 = int(np.argsort(s1)[len(s1) // 2])
        # The samples on j1's "stay" side of exit 1 (j1 itself excluded) reach exit 2.
        stay = sign * s1 < sign * s1[j1]
        j2 = int(np.flatnonzero(stay)[np.argsort(s2[stay])[stay.sum() // 2]])
        offset = (lambda s, d: s * (1 + d * NEAR)) if kind == "max_softmax" else (
            lambda s, d: s + d * NEAR)
        named[f"{kind}_quantiles"] = {
            first: _rule(kind, np.quantile(s1, 0.6 if sign > 0 else 0.4)),
            second: _rule(kind, np.quantile(s2, 0.5)),
        }
        # Exit-1 threshold just on j1's "stay" side, exit-2 just on j2's "leave" side; then
        # the other way round.
        named[f"{kind}_near_ties"] = {
            first: _rule(kind, offset(s1[j1], sign)),
            second: _rule(kind, offset(s2[j2], -sign)),
        }
        named[f"{kind}_near_ties_flipped"] = {
            first: _rule(kind, offset(s1[j1], -sign)),
            second: _rule(kind, offset(s2[j2], sign)),
        }
        named[f"{kind}_exact_ties"] = {first: _rule(kind, s1[j1]), second: _rule(kind, s2[j2])}
    named["mixed"] = {
        first: _rule("entropy", np.quantile(_scores(logits[first], "entropy"), 0.3)),
        second: _rule("max_softmax", np.quantile(_scores(logits[second], "max_softmax"), 0.5)),
    }
    named["no_first_exit"] = {
        first: None,
        second: _rule("max_softmax", np.quantile(_scores(logits[second], "max_softmax"), 0.5)),
    }
    calibrating = runtime.load(folder, num_threads=1)
    named["calibrated"] = calibrating.calibrate(x_cal, y_cal, max_accuracy_drop=0.02)
    return named


def check_agreement(report, document):
    """Every decision of every run agrees; near ties were really hit."""
    runs = {run["name"]: run for run in document["runs"]}
    assert set(report) == set(runs)
    for name, result in report.items():
        assert result["mismatches"] == [], (name, result["mismatches"])
        if "exact_ties" not in name:
            assert result["tie_mismatches"] == [], (name, result)
        assert result["agree"] + len(result["tie_mismatches"]) == document["samples"], name
        # The two runtimes' scores differ by a few ulps at most (exp/log rounding).
        assert result["max_score_ulps"] <= 8, (name, result)
        assert result["max_entropy_difference"] <= 1e-14, (name, result)
        assert result["scores_compared"] >= document["samples"], name
    for kind in ("max_softmax", "entropy"):
        near, flipped = runs[f"{kind}_near_ties"], runs[f"{kind}_near_ties_flipped"]
        # The pair moved a sample across each threshold: the runs decide differently.
        assert near["exit"] != flipped["exit"], kind
        assert report[f"{kind}_exact_ties"]["ties"] >= 2, kind
    assert report["max_softmax_near_ties"]["python_margin_evaluations"] >= 2
    assert report["max_softmax_near_ties_flipped"]["python_margin_evaluations"] >= 2
    # Between them the runs send samples out at every exit.
    taken = set()
    for run in document["runs"]:
        taken.update(run["exit"])
    assert taken == set(range(len(document["exits"])))


@pytest.mark.slow
def test_demo_network_decisions_agree(core, demo, tmp_path):
    folder, _, data = demo
    x = data.x_test[:160]
    document = trace.record_trace(folder, x, policies=policies(folder, x, data.x_val, data.y_val))
    path = trace.write_trace(tmp_path / "demo.trace.json", document)
    check_agreement(replay_report(core, folder, path), document)


@pytest.mark.slow
def test_residual_across_an_exit_decisions_agree(core, skip, tmp_path):
    # Stage 3 reads stage 1's output, which stage 2 does not pass on: the replay checks that
    # the walk hands stage 3 the tensor stage 1 produced for the same sample.
    stages = {s["name"]: s for s in runtime.load(skip.folder).manifest["stages"]}
    stage_1_outputs = {s["name"] for s in stages["stage_1"]["outputs"]}
    stage_3_inputs = {s["name"] for s in stages["stage_3"]["inputs"]}
    assert stage_1_outputs & stage_3_inputs
    x_cal, y_cal, x = skip.x_val[:300], skip.y_val[:300], skip.x_val[300:460]
    document = trace.record_trace(skip.folder, x, policies=policies(skip.folder, x, x_cal, y_cal))
    path = trace.write_trace(tmp_path / "skip.trace.json", document)
    check_agreement(replay_report(core, skip.folder, path), document)


def test_replay_reads_the_exports_own_manifest_and_files(core, skip, tmp_path):
    folder = skip.copy_to(tmp_path)
    path = trace.write_trace(tmp_path / "t.json", trace.record_trace(folder, skip.x_val[:8]))
    assert replay(core, folder, path).returncode == 0
    # A trace names the manifest bytes it was made with: a changed policy is noticed.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["exits"][0]["policy"] = {"kind": "max_softmax", "threshold": 0.5}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    done = replay(core, folder, path)
    assert done.returncode != 0 and "recorded with manifest sha256" in done.stderr
    # The JVM core checks the stage file's sha256 like the Python runtime.
    stage_file = folder / manifest["files"][0]["path"]
    data = bytearray(stage_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stage_file.write_bytes(bytes(data))
    done = replay(core, folder, path)
    assert done.returncode != 0 and "sha256 does not match the manifest" in done.stderr
    with pytest.raises(runtime.FileIntegrityError, match="sha256"):
        runtime.load(folder)


def test_copy_export_bundles_a_checked_export_and_its_samples(core, demo, tmp_path):
    folder, static, data = demo
    assets = tmp_path / "assets" / "export"
    done = subprocess.run(
        [sys.executable, str(DEMO / "scripts" / "copy_export.py"), str(folder),
         "--static", str(static), "--samples", "12", "--assets", str(assets)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "12 samples" in done.stdout
    document = trace.read_trace(assets / "samples.trace.json")
    image = trace.decode_array(document["inputs"]["image"])
    np.testing.assert_array_equal(image, data.x_test[:12])
    assert document["targets"] == data.y_test[:12].tolist()
    assert (assets / "static.tflite").read_bytes() == static.read_bytes()
    assert sorted(p.name for p in assets.iterdir()) == [
        "manifest.json", "samples.trace.json", "stages.tflite", "static.tflite"]
    # The app reads this folder: the JVM core loads it and takes the same decisions.
    report = replay_report(core, assets, assets / "samples.trace.json")
    assert report["manifest"]["agree"] == 12
    # A folder that is not a previous copy is never replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    done = subprocess.run(
        [sys.executable, str(DEMO / "scripts" / "copy_export.py"), str(folder),
         "--assets", str(other)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0 and "is not a copied export" in done.stderr
    assert (other / "keep.txt").read_text() == "mine"


def test_trace_format(skip, tmp_path):
    chain = runtime.load(skip.folder, num_threads=1)
    x = skip.x_val[:20]
    document = trace.record_trace(
        chain, x, policies={"all_first": {"exit_1": {"kind": "max_softmax", "threshold": 0.0}}},
        targets=skip.y_val[:20], include_inputs=True,
    )
    run = document["runs"][0]
    assert run["exit"] == [0] * 20
    assert run["policy"]["exit_1"] == {"kind": "max_softmax", "threshold": 0.0}
    assert run["scores"]["exit_2"] == [None] * 20 and None not in run["scores"]["exit_1"]
    logits = trace.decode_array(document["tensors"]["exit_1"])
    np.testing.assert_array_equal(logits, chain.run_all(x, batch_size=1)["exit_1"])
    np.testing.assert_array_equal(run["label"], logits.argmax(1))
    np.testing.assert_array_equal(trace.decode_array(document["inputs"]["image"]), x)
    path = trace.write_trace(tmp_path / "t.json", document)
    assert trace.read_trace(path) == json.loads(json.dumps(document))
    # A linear chain's trace stays version 1, which older readers read.
    assert document["version"] == trace.LINEAR_VERSION == 1
    assert "stages" not in document and "gates" not in run
    (tmp_path / "bad.json").write_text(json.dumps({**document, "version": 3}))
    with pytest.raises(trace.TraceError, match="unsupported trace version 3"):
        trace.read_trace(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({**document, "version": 2}))
    with pytest.raises(trace.TraceError, match="needs 'stages' and 'recorded_stages'"):
        trace.read_trace(tmp_path / "bad.json")
    with pytest.raises(trace.TraceError, match="unknown exit"):
        trace.record_trace(chain, x, policies={"bad": {"exit_9": None}})
    with pytest.raises(trace.TraceError, match="`targets` must be 20 integer labels"):
        trace.record_trace(chain, x, targets=np.zeros(3, np.int64))
    with pytest.raises(trace.TraceError, match="non-empty dict"):
        trace.record_trace(chain, x, policies={})


# ------------------------------------------------------------ gates and routes


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A real version-2 export: block gate, exit, channel gate, router over three experts."""
    return gated_export(tmp_path_factory.mktemp("gated"))


def gated_policies(folder, x):
    """Policies over the gated chain's early exit: none, quantiles, an exact tie."""
    chain = runtime.load(folder, num_threads=1)
    first = chain.exit_names[0]
    logits = chain.run_all(x, batch_size=1)[first]
    top, spread = _scores(logits, "max_softmax"), _scores(logits, "entropy")
    return {
        "manifest": None,
        "no_early_exit": {first: None},
        "max_softmax_median": {first: _rule("max_softmax", np.median(top))},
        "entropy_quantile": {first: _rule("entropy", np.quantile(spread, 0.3))},
        "max_softmax_exact_tie": {first: _rule("max_softmax", np.sort(top)[len(top) // 3])},
    }


@pytest.fixture(scope="module")
def gated_trace(gated, tmp_path_factory):
    policies = gated_policies(gated.folder, gated.x)
    document = trace.record_trace(gated.folder, gated.x, policies=policies)
    path = trace.write_trace(tmp_path_factory.mktemp("gated_trace") / "gated.trace.json", document)
    return document, path


def test_gated_trace_records_decisions_as_the_chain_takes_them(gated, gated_trace):
    document, path = gated_trace
    assert document["version"] == trace.VERSION == 2
    assert trace.read_trace(path) == json.loads(json.dumps(document))
    chain = runtime.load(gated.folder, num_threads=1)
    manifest = chain.manifest
    assert document["stages"] == list(chain.stage_names)
    decisions = {e["tensor"]: e for e in manifest["gates"] + manifest["routes"]}
    assert set(decisions) == {"block1_gate", "cg_gate", "moe_router"}
    assert set(decisions) < set(document["tensors"])
    # The recording walk is sample mode without an exit; its decision tensors are the
    # stage outputs, zeros where the stage did not run.
    walked = chain.predict(gated.x, mode="sample", policy={"exit_1": None})
    recorded = np.array(document["recorded_stages"])
    np.testing.assert_array_equal(recorded, walked.stages_run)
    position = {name: i for i, name in enumerate(chain.stage_names)}
    for tensor, entry in decisions.items():
        values = trace.decode_array(document["tensors"][tensor])
        width = entry.get("groups", entry.get("experts"))
        assert values.shape == (len(gated.x), width) and values.dtype == np.float32
        assert not values[~recorded[:, position[entry["stage"]]]].any()
    for run in document["runs"]:
        policy = {n: r for n, r in run["policy"].items()}
        result = chain.predict(gated.x, mode="sample", policy=policy)
        np.testing.assert_array_equal(run["stages_run"], result.stages_run)
        for name, value in result.gates.items():
            np.testing.assert_array_equal(run["gates"][name], value)
        np.testing.assert_array_equal(run["routes"]["moe_router"], result.routes["moe_router"])
        left = np.array(run["exit"]) == 0
        # A sample that left at exit 1 never reached the channel gate or the router.
        assert (np.array(run["routes"]["moe_router"])[left] == -1).all()
        assert not np.array(run["gates"]["cg_gate"])[left].any()


def test_gated_decisions_agree(core, gated, gated_trace):
    document, path = gated_trace
    report = replay_report(core, gated.folder, path)
    runs = {run["name"]: run for run in document["runs"]}
    assert set(report) == set(runs)
    samples = document["samples"]
    num_stages = len(document["stages"])
    for name, result in report.items():
        assert result["mismatches"] == [], (name, result["mismatches"])
        if "exact_tie" not in name:
            assert result["tie_mismatches"] == [], (name, result)
        assert result["agree"] + len(result["tie_mismatches"]) == samples, name
        assert result["max_score_ulps"] <= 8, (name, result)
        assert result["max_entropy_difference"] <= 1e-14, (name, result)
        # Every gate column (1 + 2), every route and every stage flag was compared.
        assert result["gate_columns_compared"] == 3 * samples, name
        assert result["routes_compared"] == samples, name
        assert result["stage_rows_compared"] == samples, name
        reached = sum(r >= 0 for r in runs[name]["routes"]["moe_router"])
        assert result["routes_reached"] == reached, name
        skipped = samples * num_stages - int(np.sum(runs[name]["stages_run"]))
        assert result["stages_skipped"] == skipped, name
    assert report["max_softmax_exact_tie"]["ties"] >= 1
    # Every path was taken: each conditional stage ran for some samples and not others,
    # each gate column was on and off, each expert chosen; some samples left early.
    never = runs["no_early_exit"]
    stages_run = np.array(never["stages_run"])
    ran = stages_run.mean(axis=0)
    assert ((ran > 0) & (ran < 1)).sum() == 6, ran
    for name, columns in never["gates"].items():
        share = np.array(columns).mean(axis=0)
        assert ((share > 0) & (share < 1)).all(), name
    assert set(never["routes"]["moe_router"]) == {0, 1, 2}
    median = runs["max_softmax_median"]
    assert 0 < median["exit"].count(0) < samples
    assert -1 in median["routes"]["moe_router"]


def _tampered(document, change):
    copy = json.loads(json.dumps(document))
    change(copy)
    return copy


def test_the_gated_replay_notices_every_kind_of_disagreement(core, gated, gated_trace, tmp_path):
    document, _ = gated_trace
    never = [r["name"] for r in document["runs"]].index("no_early_exit")
    position = {name: i for i, name in enumerate(document["stages"])}
    run = document["runs"][never]
    j = run["routes"]["moe_router"].index(1)
    k = next(i for i, row in enumerate(run["gates"]["cg_gate"]) if row[1] and i != j)
    expert = position[next(
        s["name"] for s in runtime.load(gated.folder).manifest["stages"]
        if s["inputs"][0]["name"] == "cg" and s["outputs"][0]["name"] == "expert1"
    )]

    def change(copy):
        tampered = copy["runs"][never]
        tampered["routes"]["moe_router"][j] = 2
        tampered["gates"]["cg_gate"][k][1] = False
        # The recording says the chosen expert did not run for sample j: the JVM walk,
        # which runs it, finds no recorded outputs for it.
        copy["recorded_stages"][j][expert] = False

    path = trace.write_trace(tmp_path / "tampered.json", _tampered(document, change))
    report = replay_report(core, gated.folder, path)
    mismatches = report["no_early_exit"]["mismatches"]
    assert any(m.startswith(f"sample {k}:") and "gate cg_gate python [true, false]" in m
               for m in mismatches), mismatches
    assert any(m.startswith(f"sample {j}: the walk failed") and "did not run when the trace "
               "was recorded" in m for m in mismatches), mismatches
    # Without the recording change, the route itself is compared.
    path = trace.write_trace(tmp_path / "route.json", _tampered(
        document, lambda c: c["runs"][never]["routes"]["moe_router"].__setitem__(j, 2)))
    mismatches = replay_report(core, gated.folder, path)["no_early_exit"]["mismatches"]
    assert mismatches == [mismatches[0]] and "route moe_router python 2 jvm 1" in mismatches[0]
    # A trace of another manifest version is refused.
    path = trace.write_trace(tmp_path / "v1.json", _tampered(
        document, lambda c: c.update(version=1)))
    done = replay(core, gated.folder, path)
    assert done.returncode != 0 and "version-1 trace cannot replay a version-2" in done.stderr
