"""The `keras-dynamic` command: inspect, bench and calibrate on a real export."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from runtime_fixtures import digits_conditional
from runtime_fixtures import digits_export
from runtime_fixtures import digits_static

from keras_dynamic import runtime
from keras_dynamic.cli import main
from keras_dynamic.runtime.calibration import tradeoff_curve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture
def folder(export, tmp_path):
    return export.copy_to(tmp_path)


@pytest.fixture
def data(export, tmp_path):
    val, test = tmp_path / "val.npz", tmp_path / "test.npz"
    np.savez(val, x=export.x_val[:300], y=export.y_val[:300])
    np.savez(test, x=export.x_val[300:], y=export.y_val[300:])
    return val, test


def test_inspect(folder, capsys):
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Chain 'digits_skip': 3 stages, 3 exits, 10 classes" in out
    assert "verified: stages.tflite" in out
    assert main(["inspect", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exits"] == ["exit_1", "exit_2", "final"]
    assert report["files"][0]["stages"] == ["stage_1", "stage_2", "stage_3"]


def test_inspect_refuses_a_tampered_file(folder, capsys):
    data = bytearray((folder / "stages.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "stages.tflite").write_bytes(bytes(data))
    assert main(["inspect", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-dynamic inspect: error:")
    assert "stages.tflite" in err and "sha256" in err


def test_calibrate_saves_the_policy_and_prints_the_curve(folder, data, tmp_path, capsys):
    val, _ = data
    report = tmp_path / "calibration.json"
    assert main(["calibrate", str(folder), "--data", str(val), "--max-accuracy-drop", "0.01",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "policy saved to" in out and "Pareto front" in out
    written = json.loads(report.read_text())
    # The thresholds went into the manifest: a fresh load runs under them.
    chain = runtime.load(folder)
    assert chain.policy.to_dict() == written["policy"]
    export = np.load(val)
    expected = runtime.load(folder)
    expected.calibrate(export["x"], export["y"], max_accuracy_drop=0.01)
    assert expected.policy == chain.policy
    assert written["chosen"]["accuracy"] >= written["final_accuracy"] - 0.01
    assert written["chosen"]["mean_cost"] < 1.0


def test_calibrate_to_a_policy_file_and_plot(folder, data, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    val, _ = data
    before = (folder / "manifest.json").read_bytes()
    policy, plot = tmp_path / "policy.json", tmp_path / "curve.png"
    assert main(["calibrate", str(folder), "--data", str(val), "--target-mean-cost", "0.5",
                 "--policy-out", str(policy), "--plot", str(plot)]) == 0
    assert (folder / "manifest.json").read_bytes() == before
    assert runtime.load(folder, policy=policy).policy != runtime.load(folder).policy
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_a_patience(folder, data, tmp_path, capsys):
    val, _ = data
    policy = tmp_path / "policy.json"
    assert main(["calibrate", str(folder), "--data", str(val), "--max-accuracy-drop", "0.02",
                 "--kind", "patience", "--policy-out", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "exit_2: patience threshold" in out
    rules = runtime.load(folder, policy=policy).policy.rules
    assert rules["exit_1"].kind == rules["exit_2"].kind == "patience"


def test_calibrate_refuses_bad_data(folder, tmp_path, capsys):
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.zeros((4, 8, 8, 1), np.float32))
    assert main(["calibrate", str(folder), "--data", str(unlabelled),
                 "--max-accuracy-drop", "0.01"]) == 1
    assert "has no labels: store them as 'y'" in capsys.readouterr().err
    wrong_key = tmp_path / "w.npz"
    np.savez(wrong_key, images=np.zeros((4, 8, 8, 1), np.float32))
    assert main(["calibrate", str(folder), "--data", str(wrong_key),
                 "--max-accuracy-drop", "0.01"]) == 1
    assert "holds ['images']" in capsys.readouterr().err
    wrong_shape = tmp_path / "s.npz"
    np.savez(wrong_shape, x=np.zeros((4, 9, 9, 1), np.float32), y=np.zeros(4, np.int64))
    assert main(["calibrate", str(folder), "--data", str(wrong_shape),
                 "--max-accuracy-drop", "0.01"]) == 1
    assert "input 'image': expected shape (batch, 8, 8, 1)" in capsys.readouterr().err
    assert main(["calibrate", str(folder), "--data", str(tmp_path / "none.npz"),
                 "--max-accuracy-drop", "0.01"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", str(folder), "--data", str(wrong_shape)])  # no target
    assert exit_info.value.code == 2


def test_bench_against_both_baselines(export, data, tmp_path_factory, tmp_path, capsys):
    _, test = data
    out = tmp_path / "bench.json"
    static = digits_static(tmp_path_factory)
    conditional = digits_conditional(tmp_path_factory)
    assert main(["bench", str(export.folder), "--data", str(test), "--samples", "60",
                 "--threads", "1", "2", "--batch-sizes", "1", "8", "--rounds", "1",
                 "--static", str(static), "--conditional", str(conditional),
                 "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "no_exit_over_conditional" in printed and "peak memory" in printed
    report = json.loads(out.read_text())
    assert set(report["latency"]) == {"1", "2"}
    for row in report["latency"].values():
        assert {"chain", "chain_no_exit", "static", "conditional", "conditional_no_exit"} <= set(row)
        assert all(row[m]["mean_us"] > 0 for m in ("chain", "static", "conditional"))
    # The IF-op model takes the chain's decisions; it takes batch 1 only.
    assert report["agreement"]["1"]["conditional"] == {"labels": 1.0, "exits": 1.0}
    assert report["throughput"]["samples_per_second"]["8"]["conditional"] is None
    assert report["throughput"]["samples_per_second"]["8"]["static"] > 0
    assert set(report["memory"]) == {"chain", "static", "conditional"}
    assert set(report["xnnpack"]) == {"stage_1", "stage_2", "stage_3"}
    assert all(c["taken"] == c["total"] and not c["left"] for c in report["xnnpack"].values())
    assert "ops outside XNNPACK" not in printed
    assert all(m["peak_rss_mib"] > 0 for m in report["memory"].values())
    # The accuracies are the labels' own.
    chain = runtime.load(export.folder)
    labels = chain.predict(export.x_val[300:360]).labels
    assert report["accuracy"]["chain"] == pytest.approx((labels == export.y_val[300:360]).mean())


def test_bench_without_data_says_so(export, capsys):
    assert main(["bench", str(export.folder), "--samples", "10", "--threads", "1",
                 "--batch-sizes", "4", "--rounds", "1", "--no-memory", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "random inputs" in captured.err
    assert "latency per sample" in captured.out
    assert main(["bench", str(export.folder), "--threads", "0"]) == 1
    assert "--threads must be positive" in capsys.readouterr().err


def test_tradeoff_curve_is_a_pareto_front_ending_without_exits(export):
    chain = runtime.load(export.folder)
    curve = tradeoff_curve(chain, export.x_val, export.y_val)
    costs, accuracy = np.array(curve["mean_cost"]), np.array(curve["accuracy"])
    assert costs[-1] == 1.0
    final = (chain.run_all(export.x_val)["final"].argmax(1) == export.y_val).mean()
    assert accuracy[-1] == pytest.approx(final)
    assert (np.diff(costs[:-1]) >= 0).all() and (np.diff(accuracy[:-1]) > 0).all()
    # Each point is what the chain does under that shared threshold.
    for k in (0, len(costs) // 2):
        rules = {name: runtime.ExitRule("max_softmax", curve["threshold"][k])
                 for name in chain.exit_names[:-1]}
        result = chain.predict(export.x_val, policy=rules)
        assert (result.labels == export.y_val).mean() == pytest.approx(accuracy[k])
        assert result.macs.mean() / chain.total_macs == pytest.approx(costs[k])


def test_console_script_is_installed(export):
    script = shutil.which("keras-dynamic", path=str(__import__("pathlib").Path(sys.executable).parent))
    if script is None:
        pytest.skip("the package is not installed with its console script here")
    done = subprocess.run([script, "inspect", str(export.folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "3 stages, 3 exits" in done.stdout


def test_inspect_reports_the_placement_asked_for(export, capsys):
    assert main(["inspect", str(export.folder), "--accelerator", "gpu", "--json"]) == 0
    placement = json.loads(capsys.readouterr().out)["placement"]
    assert set(placement) == {"stage_1", "stage_2", "stage_3"}
    for entry in placement.values():
        assert entry["requested"] == "gpu"
        # Where no GPU starts (CI), the stage fell back and says why.
        assert entry["device"] == "gpu" or entry["reason"]
