"""The fused CPU model an export may carry (``fused_model=True``), run by the real interpreter."""

import copy
import json

import numpy as np
import pytest
from runtime_fixtures import digits_export
from runtime_fixtures import digits_fused_export

from keras_dynamic import runtime
from keras_dynamic.runtime import FileIntegrityError
from keras_dynamic.runtime import ManifestError
from keras_dynamic.runtime import validate_manifest
from keras_dynamic.runtime.policy import softmax

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_fused_export(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(export):
    return json.loads((export.folder / "manifest.json").read_text())


def _splitting_policy(chain, x):
    """Per early exit, a threshold in the widest gap between the middle half of its scores.

    Every exit is taken, and no score lies within float32 rounding of a
    threshold (scores crowd just below 1, where the IF op's float32 softmax
    and the chain's float64 one may decide a score within ~1e-7 of the
    threshold differently, as documented).
    """
    values = chain.run_all(x)
    rules = {}
    for name in chain.exit_names[:-1]:
        scores = np.unique(softmax(values[name]).max(1))
        middle = scores[len(scores) // 4 : 3 * len(scores) // 4]
        widest = int(np.argmax(np.diff(middle)))
        assert middle[widest + 1] - middle[widest] > 1e-5
        rules[name] = runtime.ExitRule("max_softmax", float(middle[widest : widest + 2].mean()))
    return rules


def test_manifest_lists_the_fused_model(export, manifest):
    assert manifest["fused"] == {
        "file": "fused.tflite", "signature": "serving_default",
        "exits": ["exit_1", "exit_2"], "decision": "max_softmax",
    }
    assert "fused.tflite" in [f["path"] for f in manifest["files"]]
    assert all(s["file"] != "fused.tflite" for s in manifest["stages"])


def test_fused_sample_mode_decides_as_the_stages(export):
    fused = runtime.load(export.folder, num_threads=1, fused=True)
    stages = runtime.load(export.folder, num_threads=1, fused=False)
    x = export.x_val
    policy = _splitting_policy(stages, x)
    got = fused.predict(x, mode="sample", policy=policy)
    want = stages.predict(x, mode="sample", policy=policy)
    assert (got.engine, want.engine) == ("fused", "stages")
    np.testing.assert_array_equal(got.exit_index, want.exit_index)
    assert len(set(got.exit_index.tolist())) == 3  # every exit path is exercised
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-5)
    np.testing.assert_array_equal(got.macs, want.macs)
    np.testing.assert_array_equal(got.stages_run, want.stages_run)
    # One time per sample, at the stage of the exit it took.
    positions = np.array([0, 1, 2])[got.exit_index]
    assert (got.stage_seconds[np.arange(len(x)), positions] > 0).all()
    assert (np.count_nonzero(got.stage_seconds, axis=1) == 1).all()
    assert got.placement == fused.placement


def test_batch_mode_and_other_policies_run_the_stages(export):
    chain = runtime.load(export.folder, fused=True)
    x = export.x_val[:40]
    assert chain.predict(x).engine == "stages"
    assert chain.engine_for("batch") == "stages"
    # A batch of one is a sample.
    assert chain.predict(x, batch_size=1).engine == "fused"
    assert chain.engine_for("batch", batch_size=1) == "fused"
    entropy = {"exit_1": {"kind": "entropy", "threshold": 0.5}}
    with pytest.raises(ValueError, match="max_softmax thresholds only"):
        chain.predict(x, mode="sample", policy=entropy)
    auto = runtime.load(export.folder, fused=None)
    assert auto.engine_for("sample", entropy) == "stages"
    assert auto.predict(x, mode="sample", policy=entropy).engine == "stages"


def test_auto_drops_the_fused_model_where_the_stages_are_faster(export):
    chain = runtime.load(export.folder, num_threads=1)
    seconds = chain._engine_seconds
    assert set(seconds) == {"fused", "stages"} and min(seconds.values()) > 0
    kept = seconds["stages"] >= 0.95 * seconds["fused"]
    assert (chain.fused_file == "fused.tflite") is kept
    assert chain.engine_for("sample") == ("fused" if kept else "stages")
    assert "fused: fused.tflite" in chain.summary_text()


def test_load_refusals(export, tmp_path_factory):
    plain = digits_export(tmp_path_factory)
    with pytest.raises(ManifestError, match="carries no fused model"):
        runtime.load(plain.folder, fused=True)
    assert runtime.load(plain.folder).fused_file is None
    with pytest.raises(ValueError, match="refuse its IF ops"):
        runtime.load(export.folder, fused=True, accelerator="gpu")
    with pytest.raises(TypeError, match="`fused`"):
        runtime.load(export.folder, fused="yes")
    assert runtime.load(export.folder, fused=False).fused_file is None


def test_a_changed_fused_file_is_refused(export, tmp_path):
    folder = export.copy_to(tmp_path)
    data = bytearray((folder / "fused.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "fused.tflite").write_bytes(bytes(data))
    with pytest.raises(FileIntegrityError, match="fused.tflite.*sha256"):
        runtime.load(folder)


def test_a_stage_file_posing_as_the_fused_model_is_refused(export, tmp_path):
    from runtime_fixtures import rehash

    folder = export.copy_to(tmp_path)
    (folder / "fused.tflite").write_bytes((folder / "stages.tflite").read_bytes())
    rehash(folder, "fused.tflite")
    with pytest.raises(ManifestError, match="fused model.*signature"):
        runtime.load(folder, fused=True)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["fused"].update(exits=["exit_2", "exit_1"]), "early exits in run order"),
        (lambda m: m["fused"].update(decision="entropy"), "'decision' must be one of"),
        (lambda m: m["fused"].update(file="other.tflite"), "not listed in 'files'"),
        (lambda m: m["fused"].update(file="stages.tflite"), "also holds stages"),
        (lambda m: m["fused"].pop("signature"), "missing required key 'signature'"),
        (lambda m: m["files"].pop(), "listed in 'files' but no stage uses them|not listed"),
    ],
)
def test_manifest_validation(manifest, change, message):
    broken = copy.deepcopy(manifest)
    change(broken)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(broken)


def test_export_refusals(tmp_path):
    import keras

    import keras_dynamic as kd
    from keras_dynamic import converters

    model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    with pytest.raises(ValueError, match="quantize='int8' is not supported"):
        converters.export_stages(model, tmp_path / "a", quantize="int8",
                                 representative_data=np.zeros((4, 16, 16, 1), "float32"),
                                 fused_model=True, verbose=0)
    with pytest.raises(TypeError, match="`fused_model`"):
        converters.export_stages(model, tmp_path / "b", fused_model="yes", verbose=0)
    gated = kd.models.gated_resnet(
        (16, 16, 3), widths=(8, 16), blocks_per_stage=(1, 1), gating="block", name="gated"
    )
    with pytest.raises(ValueError, match=r"fused_model=True\) takes models whose only"):
        converters.export_stages(gated, tmp_path / "c", fused_model=True, verbose=0)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    del keras


def test_bench_times_the_fused_engine_beside_the_stages(export, tmp_path, capsys):
    from keras_dynamic.cli import main

    data = tmp_path / "test.npz"
    np.savez(data, x=export.x_val[:60], y=export.y_val[:60])
    out = tmp_path / "bench.json"
    argv = ["bench", str(export.folder), "--data", str(data), "--threads", "1",
            "--batch-sizes", "8", "--rounds", "1", "--no-memory", "--no-progress",
            "--engine", "fused", "--json", str(out)]
    assert main(argv) == 0
    assert "(fused)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["engine"] == {"1": "fused"}
    row = report["latency"]["1"]
    assert {"chain", "chain_no_exit", "chain_stages", "chain_stages_no_exit"} <= set(row)
    assert report["agreement"]["1"]["chain_stages"]["exits"] >= 0.95
    assert main(argv[:-3] + ["stages", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["engine"] == {"1": "stages"} and "chain_stages" not in report["latency"]["1"]
