"""Frame skipping over a stream: FrameStream's decisions against a NumPy replay
on the real interpreter, calibration of the reuse threshold, refusals."""

import numpy as np
import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime.stream import FrameStream
from keras_dynamic.runtime.stream import calibrate_reuse
from keras_dynamic.runtime.stream import simulate_reuse
from keras_dynamic.runtime.stream import total_variation


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def stream(export):
    """Validation digits, each held for 1-5 frames with a little noise."""
    rng = np.random.default_rng(0)
    holds = rng.integers(1, 6, size=60)
    frames = np.repeat(export.x_val[:60], holds, axis=0)
    frames = frames + rng.normal(0, 0.03, frames.shape).astype(np.float32)
    return frames.astype(np.float32), np.repeat(export.y_val[:60], holds)


def replay(chain, frames, threshold, max_reuse=None):
    values = chain.run_all(frames, batch_size=1)
    values = [values[name] for name in chain.exit_names]
    exit_index, reused, label = simulate_reuse(
        values, chain._rules, chain._exit_gives_probabilities, [threshold], max_reuse
    )
    return exit_index[0], reused[0], label[0]


POLICY = {"exit_1": {"kind": "max_softmax", "threshold": 0.9},
          "exit_2": {"kind": "max_softmax", "threshold": 0.8}}


@pytest.mark.parametrize("threshold, max_reuse", [(0.05, None), (0.2, None), (0.2, 2)])
def test_decisions_match_the_numpy_replay(export, stream, threshold, max_reuse):
    frames, _ = stream
    with runtime.load(export.folder, policy=POLICY) as chain:
        result = FrameStream(chain, threshold, max_reuse=max_reuse).run(frames)
        exit_index, reused, label = replay(chain, frames, threshold, max_reuse)
        num_stages = len(chain.stage_names)
        macs = chain.total_macs
    np.testing.assert_array_equal(result.reused, reused)
    np.testing.assert_array_equal(result.exit_index, exit_index)
    np.testing.assert_array_equal(result.labels, label)
    assert 0 < reused.sum() < len(frames)
    # A reused frame ran the first stage only; the others as far as their exit.
    assert (result.stages_run[reused].sum(axis=1) == 1).all()
    ran = result.stages_run[~reused].sum(axis=1)
    np.testing.assert_array_equal(ran, exit_index[~reused] + 1)
    assert result.macs.max() <= macs and (result.stages_run[:, 0]).all()
    assert result.stages_run.shape == (len(frames), num_stages)
    if max_reuse is not None:
        runs = np.diff(np.flatnonzero(np.concatenate([[True], ~reused, [True]])))
        assert runs.max() - 1 <= max_reuse


def test_state_carries_over_between_calls_until_reset(export, stream):
    frames, _ = stream
    with runtime.load(export.folder, policy=POLICY) as chain:
        whole = FrameStream(chain, 0.2).run(frames)
        split = FrameStream(chain, 0.2)
        first, second = split.run(frames[:40]), split.run(frames[40:])
        np.testing.assert_array_equal(np.concatenate([first.reused, second.reused]),
                                      whole.reused)
        split.reset()
        assert not split.run(frames[40:41]).reused[0]


def test_threshold_zero_reuses_only_identical_frames(export):
    with runtime.load(export.folder) as chain:
        frames = np.repeat(export.x_val[:20], 3, axis=0)
        result = FrameStream(chain, 0.0).run(frames)
    np.testing.assert_array_equal(result.reused, np.tile([False, True, True], 20))


def test_calibrated_threshold_meets_the_accuracy_target(export, stream):
    frames, labels = stream
    with runtime.load(export.folder, policy=POLICY) as chain:
        no_reuse = chain.predict(frames, mode="sample")
        threshold, table = calibrate_reuse(chain, frames, labels, max_accuracy_drop=0.02)
        result = FrameStream(chain, threshold).run(frames)
    baseline = (no_reuse.labels == labels).mean()
    assert (result.labels == labels).mean() >= baseline - 0.02 - 1e-9
    assert threshold in table["threshold"] and result.reused.mean() > 0.3
    assert max(table["reused"]) <= 1.0


def test_total_variation():
    assert total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    np.testing.assert_allclose(total_variation([[0.5, 0.5]], [[0.75, 0.25]]), [0.25])


@pytest.mark.parametrize("threshold, max_reuse, message", [
    (-0.1, None, "in \\[0, 1\\]"), (1.5, None, "in \\[0, 1\\]"), (True, None, "in \\[0, 1\\]"),
    (0.1, 0, "max_reuse"),
])
def test_bad_arguments_are_refused(export, threshold, max_reuse, message):
    with runtime.load(export.folder) as chain:
        with pytest.raises(ValueError, match=message):
            FrameStream(chain, threshold, max_reuse=max_reuse)


def test_a_patience_policy_is_refused(export):
    patience = {"exit_2": {"kind": "patience", "threshold": 1}}
    with runtime.load(export.folder, policy=patience) as chain:
        with pytest.raises(ValueError, match="patience"):
            FrameStream(chain, 0.1)


def test_frames_of_the_wrong_shape_are_refused(export):
    with runtime.load(export.folder) as chain:
        with pytest.raises(runtime.InputError, match="image"):
            FrameStream(chain, 0.1).run(np.zeros((3, 9, 8, 1), np.float32))


def test_a_confidence_bound_chooses_a_threshold_no_larger(export, stream):
    frames, labels = stream
    with runtime.load(export.folder, policy=POLICY) as chain:
        estimate, _ = calibrate_reuse(chain, frames, labels, max_accuracy_drop=0.02)
        bounded, _ = calibrate_reuse(chain, frames, labels, max_accuracy_drop=0.02,
                                     confidence=0.95)
        with pytest.raises(ValueError, match="confidence"):
            calibrate_reuse(chain, frames, labels, max_accuracy_drop=0.02, confidence=1.5)
    assert bounded <= estimate
