"""Patience-based early exit (PABEE) in the runtime: decisions against a NumPy
reference on the real interpreter, calibration of the patience, refusals."""

import numpy as np
import pytest
from runtime_fixtures import digits_export
from runtime_fixtures import digits_fused_export

from keras_dynamic import runtime
from keras_dynamic.runtime.calibration import tradeoff_curve
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.policy import Policy

EARLY = ("exit_1", "exit_2")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def values(export):
    """Every exit's logits on the validation images, from the chain itself."""
    with runtime.load(export.folder) as chain:
        return chain.run_all(export.x_val)


def reference_exits(values, names, rules):
    """The exit each sample takes, one sample and one exit at a time.

    ``rules``: exit name -> ("patience", t) or ("max_softmax", s) or None.
    """
    exits = []
    for j in range(len(values[names[0]])):
        previous, streak = None, 0
        for slot, name in enumerate(names):
            row = values[name][j].astype(np.float64)
            label = int(row.argmax())
            streak = streak + 1 if label == previous else 0
            previous = label
            rule = rules.get(name)
            if slot == len(names) - 1:
                exits.append(slot)
            elif rule is None:
                continue
            elif rule[0] == "patience" and streak >= rule[1]:
                exits.append(slot)
                break
            elif rule[0] == "max_softmax":
                p = np.exp(row - row.max())
                if 1.0 / p.sum() >= rule[1]:
                    exits.append(slot)
                    break
    return np.array(exits)


def policy_of(rules):
    return {
        name: None if rule is None else {"kind": rule[0], "threshold": rule[1]}
        for name, rule in rules.items()
    }


CASES = {
    "patience 1": {"exit_1": ("patience", 1), "exit_2": ("patience", 1)},
    # exit_2 is the second exit: a streak of 2 needs a third before it.
    "patience 2 never fires": {"exit_1": ("patience", 2), "exit_2": ("patience", 2)},
    "confidence, then patience": {"exit_1": ("max_softmax", 0.95), "exit_2": ("patience", 1)},
    # exit_1 never exits, but its prediction still starts exit_2's streak.
    "silent first exit": {"exit_1": None, "exit_2": ("patience", 1)},
}


@pytest.mark.parametrize("mode", ["batch", "sample"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_decisions_match_the_numpy_reference(export, values, case, mode):
    rules = CASES[case]
    with runtime.load(export.folder) as chain:
        result = chain.predict(export.x_val, mode=mode, policy=policy_of(rules))
        expected = reference_exits(values, chain.exit_names, rules)
    np.testing.assert_array_equal(result.exit_index, expected)
    taken = np.stack([values[chain.exit_names[e]][j] for j, e in enumerate(expected)])
    np.testing.assert_array_equal(result.labels, taken.argmax(axis=1))
    # The skipped stages really did not run.
    assert (result.stages_run.sum(axis=1) == expected + 1).all()
    if case == "patience 1":
        assert 0 < (expected == 1).sum() < len(expected)  # the policy takes effect
        assert not (expected == 0).any()  # the first exit has no exit before it
    if case == "patience 2 never fires":
        assert (expected == 2).all()


def test_batch_and_sample_modes_agree_on_chunks(export):
    policy = policy_of(CASES["patience 1"])
    with runtime.load(export.folder) as chain:
        whole = chain.predict(export.x_val, policy=policy)
        chunked = chain.predict(export.x_val, policy=policy, batch_size=7)
        samples = chain.predict(export.x_val, policy=policy, mode="sample")
    np.testing.assert_array_equal(whole.exit_index, chunked.exit_index)
    np.testing.assert_array_equal(whole.exit_index, samples.exit_index)
    np.testing.assert_array_equal(whole.labels, samples.labels)


def test_calibrated_patience_meets_the_accuracy_target(export):
    with runtime.load(export.folder) as chain:
        final = (chain.run_all(export.x_val)["final"].argmax(1) == export.y_val).mean()
        policy = chain.calibrate(
            export.x_val, export.y_val, max_accuracy_drop=0.02, kind="patience"
        )
        assert [policy.rules[name].kind for name in EARLY] == ["patience"] * 2
        patience = {policy.rules[name].threshold for name in EARLY}
        assert len(patience) == 1 and patience <= {1, 2}
        result = chain.predict(export.x_val)
        assert (result.labels == export.y_val).mean() >= final - 0.02
        # A drop of 100 points allows the most permissive patience.
        chain.calibrate(export.x_val, export.y_val, max_accuracy_drop=1.0, kind="patience")
        assert chain.policy.rules["exit_2"].threshold == 1


def test_calibrate_patience_for_a_cost_target(export):
    with runtime.load(export.folder) as chain:
        curve = tradeoff_curve(chain, export.x_val, export.y_val, kind="patience")
        assert curve["mean_cost"][-1] == 1.0
        cheapest = min(curve["mean_cost"])
        policy = chain.calibrate(
            export.x_val, export.y_val, target_mean_cost=cheapest, kind="patience"
        )
        assert policy.rules["exit_1"] == ("patience", 1)
        result = chain.predict(export.x_val)
        assert result.macs.mean() / chain.total_macs == pytest.approx(cheapest)
        with pytest.raises(ValueError, match="below the cheapest"):
            chain.calibrate(
                export.x_val, export.y_val, target_mean_cost=cheapest / 2, kind="patience"
            )


def test_patience_policies_round_trip_through_files(export, tmp_path):
    policy = Policy(policy_of(CASES["confidence, then patience"]))
    path = tmp_path / "policy.json"
    policy.save(path)
    assert Policy.load(path) == policy
    with runtime.load(export.folder, policy=path) as chain:
        assert chain.policy.rules["exit_2"] == ("patience", 1)
        assert "patience" in chain.summary_text()


@pytest.mark.parametrize("threshold", [0, -1, 1.5, 0.5])
def test_a_patience_must_be_a_whole_number_of_exits(threshold):
    with pytest.raises(ManifestError, match="whole number >= 1"):
        Policy({"exit_1": {"kind": "patience", "threshold": threshold}})


def test_the_fused_model_leaves_patience_to_the_stages(tmp_path_factory):
    export = digits_fused_export(tmp_path_factory)
    policy = policy_of(CASES["patience 1"])
    with runtime.load(export.folder) as chain:
        assert chain.engine_for("sample", policy=policy) == "stages"
    with runtime.load(export.folder, fused=True) as chain:
        with pytest.raises(ValueError, match="patience"):
            chain.predict(export.x_val[:4], mode="sample", policy=policy)


def test_gated_chains_refuse_patience(tmp_path):
    from android_gated import gated_export

    folder = gated_export(tmp_path / "gated").folder
    with runtime.load(folder) as chain:
        rule = {"kind": "patience", "threshold": 1}
        with pytest.raises(ManifestError, match="linear chains"):
            chain.set_policy({"exit_1": rule})
