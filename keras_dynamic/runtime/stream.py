"""Frame skipping over a stream: reuse the last answer while the first stage sees no change.

Consecutive frames of a video or a sensor stream are often nearly the same.
`FrameStream` runs a loaded chain frame by frame and keeps state between
frames: every frame runs the chain's first stage (the cheap one, which must
end in an exit); when that exit's class probabilities are within
``reuse_threshold`` (total variation distance, in [0, 1]) of those it gave on
the last frame that was answered by the chain, the frame reuses that
frame's answer and nothing else runs. Otherwise the chain goes on as
`Chain.predict` would (the first exit may still answer, under the chain's
policy), and the frame becomes the new reference. ``max_reuse`` bounds how
many frames in a row may reuse one answer.

A threshold of 0 reuses only on identical first-stage probabilities; 1
reuses always (after the first frame). `calibrate_reuse` picks the largest
threshold that keeps the accuracy on a labelled stream within a target.
"""

import dataclasses
import time
from typing import Optional

import numpy as np

from keras_dynamic.runtime.calibration import drop_bound
from keras_dynamic.runtime.calibration import z_score
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.policy import fires
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.policy import uses_patience


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What `FrameStream.run` returns, one row per frame.

    Attributes:
        labels: ``(N,)`` int64 class of each frame's answer.
        probabilities: ``(N, C)`` float32 class probabilities of the answer.
        reused: ``(N,)`` bool, whether the frame reused an earlier answer.
        exit_index: ``(N,)`` int64 exit that gave the answer (for a reused
            frame, the exit of the answer it reused).
        stages_run: ``(N, num_stages)`` bool, the stages run for the frame.
        macs: ``(N,)`` int64 MACs run for the frame.
        seconds: ``(N,)`` wall time per frame, decisions included.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    reused: np.ndarray
    exit_index: np.ndarray
    stages_run: np.ndarray
    macs: np.ndarray
    seconds: np.ndarray


def _check_threshold(reuse_threshold, max_reuse):
    if (
        isinstance(reuse_threshold, bool)
        or not isinstance(reuse_threshold, (int, float, np.floating))
        or not 0.0 <= reuse_threshold <= 1.0
    ):
        raise ValueError(
            "`reuse_threshold` is a total variation distance in [0, 1]. "
            f"Received: reuse_threshold={describe(reuse_threshold)}"
        )
    if max_reuse is not None and (
        isinstance(max_reuse, bool) or not isinstance(max_reuse, int) or max_reuse < 1
    ):
        raise ValueError(
            f"`max_reuse` must be None or an int >= 1. Received: max_reuse={describe(max_reuse)}"
        )


def _check_chain(chain):
    """The chain must be linear and start with a deciding-capable exit on stage 1."""
    if chain._conditional:
        raise ValueError(
            f"FrameStream runs linear chains (exits only); {chain.folder} has gates or "
            "routes."
        )
    if chain._stage_exit[0] != 0:
        raise ValueError(
            f"FrameStream compares the first stage's exit between frames, but the first "
            f"stage of {chain.folder} ({chain.stage_names[0]!r}) has no exit."
        )
    if uses_patience(chain._rules):
        raise ValueError(
            "FrameStream decides frames with max_softmax or entropy exits; the chain's "
            "policy uses patience."
        )


def total_variation(p, q):
    """Row-wise total variation distance ``0.5 * sum |p - q|`` (in [0, 1])."""
    return 0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum(axis=-1)


class FrameStream:
    """A chain run over a stream of frames that reuses answers across similar frames.

    Args:
        chain: a loaded `Chain` (linear: exits only) whose first stage has an
            exit; its active policy decides the frames that are not reused.
        reuse_threshold: total variation distance in [0, 1] between the first
            exit's probabilities on this frame and on the reference frame,
            at or below which the frame reuses the reference's answer.
        max_reuse: optional bound on consecutive reuses of one answer.

    Example (``export_dir`` written by `converters.export_stages`; ``x_val``:
    digit images, here each shown for two frames):

    >>> from keras_dynamic import runtime
    >>> from keras_dynamic.runtime.stream import FrameStream
    >>> chain = runtime.load(export_dir, num_threads=1)
    >>> frames = np.repeat(x_val[:50], 2, axis=0)
    >>> result = FrameStream(chain, reuse_threshold=0.0).run(frames)
    >>> bool(result.reused[1::2].all()), bool(result.reused[0::2].any())
    (True, False)
    """

    def __init__(self, chain, reuse_threshold: float, *, max_reuse: Optional[int] = None):
        _check_threshold(reuse_threshold, max_reuse)
        _check_chain(chain)
        self._chain = chain
        self.reuse_threshold = float(reuse_threshold)
        self.max_reuse = max_reuse
        self.reset()

    def reset(self) -> None:
        """Forgets the reference frame: the next frame runs the chain."""
        self._reference = None  # (first-exit probabilities, values, exit index)
        self._reuses = 0

    def run(self, frames) -> StreamResult:
        """Runs ``frames`` (an array ``(N, ...)`` or dict of them) in order, keeping state.

        The state carries over between calls; `reset` starts afresh.
        """
        chain = self._chain
        inputs, n = chain._prepare_inputs(frames)
        num_stages = len(chain.stage_names)
        values = np.zeros((n, chain.num_classes), np.float32)
        reused = np.zeros(n, bool)
        exit_index = np.zeros(n, np.int64)
        stages_run = np.zeros((n, num_stages), bool)
        seconds = np.zeros(n)
        with chain._lock:
            chain._check_open()
            steps = chain._sample_steps(chain._rules)
            for j in range(n):
                begin = time.perf_counter()
                board = {name: a[j : j + 1] for name, a in inputs.items()}
                ran, slot, logits, frame_reused = self._frame(steps, board)
                seconds[j] = time.perf_counter() - begin
                values[j], exit_index[j], reused[j] = logits, slot, frame_reused
                stages_run[j, :ran] = True
        probabilities = softmax(values)
        own = chain._exit_gives_probabilities[exit_index]
        probabilities[own] = values[own]
        return StreamResult(
            labels=probabilities.argmax(axis=1).astype(np.int64),
            probabilities=probabilities.astype(np.float32),
            reused=reused,
            exit_index=exit_index,
            stages_run=stages_run,
            macs=stages_run.astype(np.int64) @ chain._stage_macs,
            seconds=seconds,
        )

    def _frame(self, steps, board):
        """One frame: ``(stages run, exit slot, answer values, reused)``."""
        chain = self._chain
        first = steps[0]
        produced = first[1](board)
        exit_values = chain._exit_logits(produced, 0)
        probabilities = (
            exit_values.astype(np.float64) if chain._exit_gives_probabilities[0]
            else softmax(exit_values)
        )
        reference = self._reference
        if (
            reference is not None
            and (self.max_reuse is None or self._reuses < self.max_reuse)
            and total_variation(probabilities, reference[0])[0] <= self.reuse_threshold
        ):
            self._reuses += 1
            return 1, reference[2], reference[1], True
        board.update(produced)
        ran, slot, logits = 1, 0, exit_values
        last = len(steps) - 1
        if last and not (first[8] is not None and first[8](exit_values)):
            for i, run, _, _, _, step_slot, tensor, quant, leaves in steps[1:]:
                produced = run(board)
                board.update(produced)
                ran = i + 1
                if step_slot >= 0:
                    logits = chain._exit_logits(produced, step_slot)
                    slot = step_slot
                    if leaves is not None and leaves(logits):
                        break
        self._reference = (probabilities, logits[0], slot)
        self._reuses = 0
        return ran, slot, logits[0], False


def simulate_reuse(values, rules, gives_probabilities, thresholds, max_reuse=None):
    """The answers a `FrameStream` gives for each of several thresholds, in NumPy.

    Args:
        values: ``[(N, C)]`` every exit's values on the stream's frames, in
            order (as `Chain.run_all` gives them).
        rules: the chain's exit rules per exit slot.
        gives_probabilities: per exit, whether its values are probabilities.
        thresholds: ``(K,)`` reuse thresholds.
        max_reuse: as in `FrameStream`.

    Returns:
        ``(exit_index, reused, label)``, each ``(K, N)``: the exit of each
        frame's answer, whether it was reused, and the answer's class.
    """
    n = len(values[0])
    num_exits = len(values)
    first = values[0].astype(np.float64)
    first_p = first if gives_probabilities[0] else softmax(first)
    # The exit each frame takes when the chain runs it (no reuse).
    fire = np.ones((num_exits, n), bool)
    for slot in range(num_exits - 1):
        fire[slot] = fires(rules[slot], values[slot], gives_probabilities[slot])
    taken = fire.argmax(axis=0)
    labels = np.stack([v.argmax(axis=1) for v in values])[taken, np.arange(n)]
    thresholds = np.asarray(thresholds, np.float64)
    k = len(thresholds)
    exit_index = np.zeros((k, n), np.int64)
    reused = np.zeros((k, n), bool)
    label = np.zeros((k, n), np.int64)
    reference = np.full(k, -1)  # frame index of each threshold's reference
    reuses = np.zeros(k, np.int64)
    for j in range(n):
        has = reference >= 0
        distance = np.full(k, np.inf)
        distance[has] = total_variation(first_p[j], first_p[reference[has]])
        reuse = has & (distance <= thresholds)
        if max_reuse is not None:
            reuse &= reuses < max_reuse
        source = np.where(reuse, reference, j)
        exit_index[:, j] = taken[source]
        label[:, j] = labels[source]
        reused[:, j] = reuse
        reuses = np.where(reuse, reuses + 1, 0)
        reference = source
    return exit_index, reused, label


def calibrate_reuse(chain, frames, labels, *, max_accuracy_drop, confidence=None,
                    max_reuse=None, candidates=None):
    """The largest reuse threshold whose accuracy on a labelled stream stays within a target.

    Runs the chain once over ``frames`` (every exit, in order), then replays
    the stream in NumPy (`simulate_reuse`) for each candidate threshold
    (default: 0 and the 2.5%, 5%, ... quantiles of the distances between
    consecutive frames' first-exit probabilities) under the chain's active
    policy. The accuracy without reuse is the reference; the chosen
    threshold loses at most ``max_accuracy_drop`` against it, or, with
    ``confidence`` (e.g. 0.95), the one-sided upper confidence bound of the
    loss does, as in `Chain.calibrate` (frames of one stream are correlated,
    so even the bound is optimistic: prefer a long validation stream).

    Returns:
        ``(threshold, table)``: the threshold, and ``{"threshold",
        "accuracy", "reused"}`` lists over the candidates.
    """
    if (
        isinstance(max_accuracy_drop, bool)
        or not isinstance(max_accuracy_drop, (int, float, np.floating))
        or not 0.0 <= max_accuracy_drop <= 1.0
    ):
        raise ValueError(
            f"`max_accuracy_drop` must be in [0, 1]. Received: {describe(max_accuracy_drop)}"
        )
    _check_chain(chain)
    z = z_score(confidence, max_accuracy_drop)
    values = chain.run_all(frames, batch_size=1)
    values = [values[name] for name in chain.exit_names]
    y = np.asarray(labels)
    if y.shape != (len(values[0]),):
        raise ValueError(
            f"`labels` must have one label per frame, shape ({len(values[0])},). "
            f"Received: shape {y.shape}"
        )
    first = values[0].astype(np.float64)
    first_p = first if chain._exit_gives_probabilities[0] else softmax(first)
    if candidates is None:
        steps = total_variation(first_p[1:], first_p[:-1])
        quantiles = np.quantile(steps, np.linspace(0.025, 1.0, 40)) if len(steps) else []
        candidates = np.unique(np.concatenate([[0.0], quantiles]))
    candidates = np.asarray(candidates, np.float64)
    _, reused, answer = simulate_reuse(
        values, chain._rules, chain._exit_gives_probabilities, candidates, max_reuse
    )
    correct = answer == y
    accuracy = correct.mean(axis=1)
    _, _, baseline = simulate_reuse(
        values, chain._rules, chain._exit_gives_probabilities, [-1.0], max_reuse
    )
    baseline_correct = baseline[0] == y
    upper = drop_bound(
        correct.sum(axis=1), (correct != baseline_correct).sum(axis=1),
        baseline_correct.sum(), len(y), z,
    )
    floor = baseline_correct.mean() - max_accuracy_drop
    feasible = np.flatnonzero(upper <= max_accuracy_drop + 1e-9)
    table = {
        "threshold": candidates.tolist(),
        "accuracy": accuracy.tolist(),
        "reused": reused.mean(axis=1).tolist(),
    }
    if not len(feasible):
        raise ValueError(
            f"No candidate reuse threshold keeps the stream's accuracy within "
            f"{max_accuracy_drop} of {floor + max_accuracy_drop:.4f} (without reuse); "
            f"the smallest, {candidates.min():.3g}, gives {accuracy[0]:.4f}."
        )
    return float(candidates[feasible.max()]), table


__all__ = ["FrameStream", "StreamResult", "calibrate_reuse", "simulate_reuse", "total_variation"]
