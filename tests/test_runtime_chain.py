"""Chained prediction, exit decisions, calibration and policies through the real interpreter."""

import json
import os
import sys

import numpy as np
import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime import InputError
from keras_dynamic.runtime import ManifestError
from keras_dynamic.runtime.policy import entropy
from keras_dynamic.runtime.policy import softmax


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def chain(export):
    return runtime.load(export.folder, num_threads=1)


@pytest.fixture(scope="module")
def logits(chain, export):
    return chain.run_all(export.x_val)


def _open(threshold, kind="max_softmax", exits=("exit_1", "exit_2")):
    return {name: {"kind": kind, "threshold": threshold} for name in exits}


def _mixed_policy(logits):
    """Thresholds at quantiles of the observed confidences: every exit gets samples."""
    return {
        name: {"kind": "max_softmax",
               "threshold": float(np.quantile(softmax(logits[name]).max(1), q))}
        for name, q in (("exit_1", 0.8), ("exit_2", 0.5))
    }


def test_properties(chain):
    assert chain.stage_names == ("stage_1", "stage_2", "stage_3")
    assert chain.exit_names == ("exit_1", "exit_2", "final")
    assert chain.num_classes == 10
    assert chain.input_names == ("image",)
    macs = [s["macs"] for s in chain.manifest["stages"]]
    assert chain.total_macs == sum(macs) > 0
    np.testing.assert_array_equal(chain.exit_macs, np.cumsum(macs))


def test_run_all_matches_keras(export, logits):
    assert set(logits) == set(export.keras_logits)
    for name, expected in export.keras_logits.items():
        # Logits reach ~10 here; float32 XNNPACK vs Keras differ by ~1 ulp of that.
        np.testing.assert_allclose(logits[name], expected, atol=1e-5, rtol=1e-5, err_msg=name)


def test_threshold_zero_exits_everything_at_the_first_exit(chain, export, logits):
    result = chain.predict(export.x_val, policy=_open(0.0))
    assert (result.exit_index == 0).all()
    np.testing.assert_array_equal(result.labels, logits["exit_1"].argmax(1))
    assert (result.macs == chain.exit_macs[0]).all()
    assert (result.stage_seconds[:, 1:] == 0).all() and (result.stage_seconds[:, 0] > 0).all()


def test_threshold_above_one_runs_everything_to_the_end(chain, export, logits):
    result = chain.predict(export.x_val, policy=_open(1.5), mode="sample")
    assert (result.exit_index == 2).all()
    np.testing.assert_array_equal(result.labels, logits["final"].argmax(1))
    np.testing.assert_allclose(result.probabilities, softmax(logits["final"]), atol=1e-6)
    assert (result.macs == chain.total_macs).all()
    assert (result.stage_seconds > 0).all()
    np.testing.assert_allclose(result.latency_seconds, result.stage_seconds.sum(1))


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_entropy_policy(chain, export, logits, mode):
    h = entropy(softmax(logits["exit_1"]))
    t = float(np.median(h))
    result = chain.predict(export.x_val, mode=mode,
                           policy={"exit_1": {"kind": "entropy", "threshold": t},
                                   "exit_2": None})
    np.testing.assert_array_equal(result.exit_index == 0, h <= t)
    assert set(np.unique(result.exit_index)) == {0, 2}


def test_batch_and_sample_modes_agree(chain, export, logits):
    policy = _mixed_policy(logits)
    batch = chain.predict(export.x_val, policy=policy)
    sample = chain.predict(export.x_val, policy=policy, mode="sample")
    assert set(np.unique(batch.exit_index)) == {0, 1, 2}
    np.testing.assert_array_equal(batch.labels, sample.labels)
    np.testing.assert_array_equal(batch.exit_index, sample.exit_index)
    np.testing.assert_allclose(batch.probabilities, sample.probabilities, atol=1e-6)
    np.testing.assert_array_equal(batch.macs, sample.macs)
    chunked = chain.predict(export.x_val, policy=policy, batch_size=50)
    np.testing.assert_array_equal(chunked.exit_index, batch.exit_index)


def test_skip_tensor_survives_mixed_exits_in_batch_mode(chain, export, logits):
    # stage_3 reads conv_1 from stage_1: it must be subset with the rows that
    # stay, or the final exit would see other samples' features.
    assert "conv_1" in [s["name"] for s in chain.manifest["stages"][2]["inputs"]]
    result = chain.predict(export.x_val, policy=_mixed_policy(logits))
    for index, name in enumerate(chain.exit_names):
        rows = result.exit_index == index
        assert rows.any()
        np.testing.assert_allclose(
            result.probabilities[rows], softmax(logits[name][rows]), atol=1e-6, err_msg=name
        )
    ran = result.stage_seconds > 0
    np.testing.assert_array_equal(ran.sum(1), result.exit_index + 1)


def test_policy_object_and_active_policy(chain, export):
    policy = runtime.Policy(_open(0.0))
    assert (chain.predict(export.x_val[:5], policy=policy).exit_index == 0).all()
    # The per-call policy did not change the manifest defaults.
    assert chain.policy.rules["exit_1"].threshold == chain.manifest["exits"][0]["policy"]["threshold"]


def test_bad_policies_are_refused(chain, export):
    with pytest.raises(ManifestError, match=r"unknown exit\(s\) \['exit_9'\]"):
        chain.predict(export.x_val[:2], policy=_open(0.5, exits=("exit_9",)))
    with pytest.raises(ManifestError, match="unknown policy kind 'margin'"):
        chain.predict(export.x_val[:2], policy=_open(0.5, kind="margin"))
    with pytest.raises(ManifestError, match="finite number"):
        chain.predict(export.x_val[:2], policy=_open(float("nan")))
    with pytest.raises(ManifestError, match="A policy must be a Policy"):
        chain.predict(export.x_val[:2], policy=0.9)
    with pytest.raises(ValueError, match="`mode`"):
        chain.predict(export.x_val[:2], mode="stream")


def test_bad_inputs_are_refused_naming_the_tensor(chain, export):
    x = export.x_val[:4]
    with pytest.raises(InputError, match=r"input 'image': expected shape \(batch, 8, 8, 1\)"):
        chain.predict(x[:, :7])
    with pytest.raises(InputError, match="input 'image': expected shape"):
        chain.predict(x[0])
    with pytest.raises(InputError, match="input 'image': expected float32.*int64"):
        chain.predict(x.astype(np.int64))
    with pytest.raises(InputError, match="input 'image': expected float32.*str32"):
        chain.predict(np.full((1, 8, 8, 1), "a"))
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(InputError, match="input 'image': contains NaN or Inf"):
        chain.run_all(bad)
    with pytest.raises(InputError, match="input 'image': contains NaN or Inf"):
        chain.predict(np.full((1, 8, 8, 1), 1e300))  # overflows float32
    with pytest.raises(InputError, match=r"missing \['image'\], unexpected \['img'\]"):
        chain.predict({"img": x})


def test_float64_and_dict_inputs_are_accepted(chain, export):
    x = export.x_val[:8]
    expected = chain.predict(x)
    for variant in (x.astype(np.float64), {"image": x}, x.tolist()):
        np.testing.assert_array_equal(chain.predict(variant).labels, expected.labels)


def test_empty_batch_gives_an_empty_result(chain):
    empty = np.zeros((0, 8, 8, 1), np.float32)
    for mode in ("batch", "sample"):
        result = chain.predict(empty, mode=mode)
        assert result.labels.shape == (0,) and result.probabilities.shape == (0, 10)
        assert result.stage_seconds.shape == (0, 3)
    assert all(v.shape == (0, 10) for v in chain.run_all(empty).values())


@pytest.mark.parametrize("kind", ["max_softmax", "entropy"])
@pytest.mark.parametrize("drop", [0.0, 0.03])
def test_calibrate_accuracy_drop_holds_on_the_calibration_data(export, kind, drop):
    chain = runtime.load(export.folder)
    policy = chain.calibrate(export.x_val, export.y_val, max_accuracy_drop=drop, kind=kind)
    assert policy == chain.policy
    assert {r.kind for r in list(policy.rules.values())[:-1]} == {kind}
    final_accuracy = (export.keras_logits["final"].argmax(1) == export.y_val).mean()
    for mode in ("batch", "sample"):
        result = chain.predict(export.x_val, mode=mode)
        assert (result.labels == export.y_val).mean() >= final_accuracy - drop - 1e-12
    if drop:
        assert result.macs.mean() < 0.8 * chain.total_macs  # it does exit early


def test_calibrate_accuracy_drop_is_greedy_most_permissive(export):
    # Opening exit_1 any further (the next lower observed score) must break
    # the constraint, otherwise greedy would have taken it.
    chain = runtime.load(export.folder)
    drop = 0.03
    chain.calibrate(export.x_val, export.y_val, max_accuracy_drop=drop)
    t = chain.policy.rules["exit_1"].threshold
    scores = np.sort(softmax(chain.run_all(export.x_val)["exit_1"]).max(1))
    below = scores[scores < t]
    if below.size:
        looser = {"exit_1": {"kind": "max_softmax", "threshold": float(below[-1])},
                  "exit_2": {"kind": "max_softmax", "threshold": 2.0}}
        accuracy = (chain.predict(export.x_val, policy=looser).labels == export.y_val).mean()
        final_accuracy = (export.keras_logits["final"].argmax(1) == export.y_val).mean()
        assert accuracy < final_accuracy - drop


@pytest.mark.parametrize("confidence", [0.8, 0.95])
def test_calibrate_with_confidence_bounds_the_drop_and_exits_later(export, confidence):
    from statistics import NormalDist

    chain = runtime.load(export.folder)
    drop = 0.03
    estimate = chain.calibrate(export.x_val, export.y_val, max_accuracy_drop=drop)
    bounded = chain.calibrate(
        export.x_val, export.y_val, max_accuracy_drop=drop, confidence=confidence
    )
    # A bound is stricter than the estimate: exit_1 can only get harder to take.
    assert bounded.rules["exit_1"].threshold >= estimate.rules["exit_1"].threshold
    result = chain.predict(export.x_val)
    final_correct = export.keras_logits["final"].argmax(1) == export.y_val
    d = final_correct.astype(float) - (result.labels == export.y_val)
    upper = d.mean() + NormalDist().inv_cdf(confidence) * d.std() / np.sqrt(len(d))
    assert upper <= drop + 1e-9


@pytest.mark.parametrize("target", [0.3, 0.6])
def test_calibrate_mean_cost_meets_the_budget(export, target):
    chain = runtime.load(export.folder)
    runtime.calibrate(chain, export.x_val, export.y_val, target_mean_cost=target)
    thresholds = {r.threshold for r in list(chain.policy.rules.values())[:-1]}
    assert len(thresholds) == 1  # one shared threshold
    result = chain.predict(export.x_val)
    assert result.macs.mean() <= target * chain.total_macs
    # The best feasible accuracy beats the trivial "everything at exit_1" one.
    first_exit = (export.keras_logits["exit_1"].argmax(1) == export.y_val).mean()
    assert (result.labels == export.y_val).mean() >= first_exit


def test_calibrate_refuses_bad_targets(chain, export):
    x, y = export.x_val, export.y_val
    with pytest.raises(ValueError, match="exactly one"):
        chain.calibrate(x, y)
    with pytest.raises(ValueError, match="exactly one"):
        chain.calibrate(x, y, max_accuracy_drop=0.1, target_mean_cost=0.5)
    with pytest.raises(ValueError, match="below the cheapest possible mean cost"):
        chain.calibrate(x, y, target_mean_cost=0.001)
    with pytest.raises(ValueError, match=r"`target_mean_cost` must be in \(0, 1\]"):
        chain.calibrate(x, y, target_mean_cost=0)
    with pytest.raises(ValueError, match="integer class labels"):
        chain.calibrate(x, y[:-1], max_accuracy_drop=0.1)
    with pytest.raises(ValueError, match=r"`confidence` must be in \[0.5, 1\)"):
        chain.calibrate(x, y, max_accuracy_drop=0.1, confidence=1.0)
    with pytest.raises(ValueError, match="`confidence` applies to `max_accuracy_drop`"):
        chain.calibrate(x, y, target_mean_cost=0.5, confidence=0.9)


def test_save_policy_file_round_trip(export, tmp_path):
    chain = runtime.load(export.folder)
    chain.calibrate(export.x_val, export.y_val, max_accuracy_drop=0.03)
    path = chain.save_policy(tmp_path / "policy.json")
    document = json.loads(path.read_text())
    assert document["format"] == "keras_dynamic.policy" and document["version"] == 1
    reloaded = runtime.load(export.folder, policy=path)
    assert reloaded.policy == chain.policy
    np.testing.assert_array_equal(
        reloaded.predict(export.x_val).exit_index, chain.predict(export.x_val).exit_index
    )


def test_save_policy_into_the_manifest(export, tmp_path):
    folder = export.copy_to(tmp_path)
    chain = runtime.load(folder)
    chain.calibrate(export.x_val, export.y_val, target_mean_cost=0.5)
    chain.save_policy()
    assert sorted(os.listdir(folder)) == ["manifest.json", "stages.tflite"]  # no temp file
    reloaded = runtime.load(folder)
    assert reloaded.policy == chain.policy
    assert reloaded.manifest["exits"][0]["policy"]["threshold"] == chain.policy.rules["exit_1"].threshold


@pytest.mark.parametrize(
    "exits, message",
    [
        ({"exit_7": {"kind": "entropy", "threshold": 0.1}}, r"unknown exit\(s\) \['exit_7'\]"),
        ({"exit_1": {"kind": "top_k", "threshold": 0.1}}, "unknown policy kind 'top_k'"),
        ({"exit_1": {"kind": "entropy", "threshold": "0.1"}}, "finite number"),
        ({"exit_1": {"kind": "entropy"}}, "exactly the keys"),
    ],
)
def test_bad_policy_file_is_refused(export, tmp_path, exits, message):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"format": "keras_dynamic.policy", "version": 1, "exits": exits}))
    with pytest.raises(ManifestError, match=message):
        runtime.load(export.folder, policy=path)


def test_one_file_per_stage_layout(tmp_path_factory, export, logits):
    files = digits_export(tmp_path_factory, layout="files")
    chain = runtime.load(files.folder)
    assert len({s["file"] for s in chain.manifest["stages"]}) == 3
    for name, values in chain.run_all(export.x_val).items():
        np.testing.assert_allclose(values, logits[name], atol=1e-5, rtol=1e-5)


def _dynamic_conv_digits_model():
    """Untrained digits-size model whose middle block is a DynamicConv2D."""
    import keras

    import keras_dynamic as kd

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1), name="image")
    first = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    exit_1 = kd.layers.EarlyExit(10, name="exit_1")(first)
    x = kd.layers.DynamicConv2D(16, 3, padding="same", activation="relu")(first)
    exit_2 = kd.layers.EarlyExit(10, name="exit_2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    final = kd.layers.EarlyExit(10, name="final")(x)
    return keras.Model(inputs, [exit_1, exit_2, final])


def test_static_batch_stages_run_one_sample_per_call(tmp_path, export):
    from keras_dynamic import converters

    # A "mix_kernels" layer fixes every signature's batch to 1.
    model = _dynamic_conv_digits_model()
    logits = dict(zip(model.output_names, model.predict(export.x_val, verbose=0)))
    path = converters.export_stages(model, tmp_path / "static", dynamic_conv_form="mix_kernels")
    chain = runtime.load(os.path.dirname(path), num_threads=1)
    assert chain.manifest["inputs"][0]["shape"][0] == 1
    batches = set()

    def recording(run):
        def call(board):
            batches.update(len(value) for value in board.values())
            return run(board)
        return call

    for runner in chain._runners:
        runner.run = recording(runner.run)
    for name, values in chain.run_all(export.x_val, batch_size=40).items():
        np.testing.assert_allclose(values, logits[name], atol=1e-5, rtol=1e-5)
    policy = _mixed_policy(logits)
    sample = chain.predict(export.x_val, policy=policy, mode="sample")
    assert set(np.unique(sample.exit_index)) == {0, 1, 2}
    for batch_size in (None, 50):
        batch = chain.predict(export.x_val, policy=policy, batch_size=batch_size)
        np.testing.assert_array_equal(batch.exit_index, sample.exit_index)
        np.testing.assert_array_equal(batch.probabilities, sample.probabilities)
    assert batches == {1}


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_non_finite_exit_values_are_refused_naming_the_rows(chain, export, mode):
    # Finite inputs, but 3e38 overflows float32 inside the model: NaN logits.
    x = export.x_val[:6].copy()
    x[[1, 4]] = 3e38
    with pytest.raises(runtime.NonFiniteOutputError) as info:
        chain.predict(x, mode=mode, policy=_open(1.5))
    assert info.value.rows.tolist() == [1, 4]
    assert info.value.exit_names == ("final",)
    assert "exit(s) ['final'] gave NaN or Inf for 2 sample(s) (rows [1, 4])" in str(info.value)
    assert isinstance(info.value, InputError)
    with pytest.raises(runtime.NonFiniteOutputError, match=r"rows \[1, 4\]"):
        chain.run_all(x)
    ok = chain.predict(np.delete(x, [1, 4], axis=0), mode=mode)
    assert np.isfinite(ok.probabilities).all()


def test_close_and_context_manager(export):
    with runtime.load(export.folder) as chain:
        assert not chain.closed
        labels = chain.predict(export.x_val[:3]).labels
    assert chain.closed and "closed" in repr(chain)
    for call in (lambda: chain.predict(export.x_val[:3]), lambda: chain.run_all(export.x_val[:3])):
        with pytest.raises(ValueError, match="is closed"):
            call()
    chain.close()  # closing twice is harmless
    # The policy and description stay available.
    assert chain.policy.rules["final"] is None and "stage_3" in str(chain)
    assert labels.shape == (3,)


def test_summary_lists_stages_macs_files_exits_and_policies(chain):
    lines = []
    chain.summary(print_fn=lines.append)
    (text,) = lines
    assert text == str(chain)
    assert text.startswith("Chain 'digits_skip': 3 stages, 3 exits, 10 classes")
    stages = chain.manifest["stages"]
    for stage, row in zip(stages, text.splitlines()[4:7]):
        assert row.split()[:3] == [stage["name"], "stages.tflite", f"{stage['macs']:,}"]
    size = chain.manifest["files"][0]["bytes"]
    assert f"stages.tflite ({size:,} bytes)" in text
    threshold = chain.policy.rules["exit_1"].threshold
    assert f"exit_1  logits  max_softmax >= {threshold:.6g}" in text
    assert "final   logits  answers every sample left" in text
    assert f"total: {chain.total_macs:,} MACs" in text
    assert repr(chain).startswith("<Chain 'digits_skip' of ")
    assert "exits=['exit_1', 'exit_2', 'final']" in repr(chain)


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_progress_bar_only_when_asked_or_long(chain, export, logits, capsys, mode):
    policy = _mixed_policy(logits)
    batch_size = 100 if mode == "batch" else None
    plain = chain.predict(export.x_val, mode=mode, policy=policy, batch_size=batch_size)
    assert capsys.readouterr().err == ""  # 597 samples: no bar by default
    shown = chain.predict(export.x_val, mode=mode, policy=policy, batch_size=batch_size,
                          progress=True)
    err = capsys.readouterr().err
    assert "predict" in err and "597/597" in err
    np.testing.assert_array_equal(shown.exit_index, plain.exit_index)
    np.testing.assert_array_equal(shown.probabilities, plain.probabilities)
    chain.predict(np.repeat(export.x_val, 2, axis=0), mode=mode, progress=False)
    chain.run_all(export.x_val, batch_size=300, progress=True)
    assert "run_all" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`progress` must be True, False or None"):
        chain.predict(export.x_val[:2], progress="yes")


def test_progress_without_tqdm(chain, export, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    big = np.repeat(export.x_val, 2, axis=0)  # long enough for an automatic bar
    assert chain.predict(big).labels.shape == (len(big),)
    with pytest.raises(ImportError, match="progress=True needs tqdm"):
        chain.predict(big[:2], progress=True)
