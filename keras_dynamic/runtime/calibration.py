"""Choosing exit thresholds on validation data.

Both searches run the chain once (`Chain.run_all`), then evaluate candidate
policies with numpy alone: for K candidate threshold vectors the exit of every
sample is the first exit whose score clears its threshold (the terminal exit
always answers), which gives K accuracies and mean costs at once.

Scores are "larger is more confident" (top probability, or negated entropy),
so each rule is ``score >= s``. The candidates for an exit are the midpoints
between consecutive distinct observed scores, plus one above the highest
("nobody exits") and one below the lowest ("everybody exits"). Midpoints keep
every validation sample a clear distance from the threshold, so the decision
replays identically in `Chain.predict` despite float rounding.

* ``max_accuracy_drop=d``: the chain's accuracy must stay ``>= acc_final - d``,
  where ``acc_final`` is the accuracy of the final exit alone. All early exits
  start closed. Greedily from the first exit, each exit takes the most
  permissive candidate (the one letting the most samples out) under which the
  constraint holds with the earlier exits at their chosen thresholds and the
  later ones still closed. Closing an exit always satisfies the constraint, so
  a choice always exists. Greedy favours early exits, which are the cheapest.
  With ``confidence=p`` the constraint is on a one-sided upper confidence
  bound of the drop instead of its point estimate: per validation sample the
  paired difference ``d = final correct - chain correct`` is -1, 0 or 1, and
  ``mean(d) + z_p * std(d) / sqrt(N) <= drop`` (normal approximation). A small
  validation set then buys fewer early exits instead of a chain that meets
  the target on validation data only.
* ``target_mean_cost=c`` (a fraction of the full chain's MACs): one threshold
  shared by all early exits is scanned over the union of their candidates;
  among those whose mean cost is ``<= c``, the one with the best accuracy wins
  (ties: lower cost). A shared threshold is a one-dimensional search that does
  not overfit the validation set the way independent per-exit thresholds would.

``kind="patience"`` fits the same frame with the streak as the score: an
early exit's score is how many exits in a row before it predict its class,
and one patience ``t`` shared by all early exits (as in PABEE) is chosen from
``E - 1`` (no early exit can fire) down to 1, for either target (for
``max_accuracy_drop`` the most permissive ``t`` that holds).
"""

import math
import statistics

import numpy as np

from keras_dynamic.runtime.policy import KINDS
from keras_dynamic.runtime.policy import PATIENCE
from keras_dynamic.runtime.policy import ExitRule
from keras_dynamic.runtime.policy import confidence as confidence_scores
from keras_dynamic.runtime.policy import score_to_threshold
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.policy import update_streak

# Bound on the boolean tensor (candidates x exits x samples) built per chunk.
_CHUNK_ELEMENTS = 1 << 22


def _score_bounds(kind, num_classes):
    """Scores beyond every possible value: (above the maximum, below the minimum)."""
    if kind == "max_softmax":
        return 2.0, 0.0  # the top probability lies in [1/C, 1]
    return 1.0, -(math.log(num_classes) + 1.0)  # entropy lies in [0, log C]


def _candidates(scores, kind, num_classes):
    """Score thresholds from closed (index 0) to fully open (last index).

    For patience the scores are streaks and the candidates the patience
    values from ``E - 1`` (``scores`` is ``(E - 1, N)``; the streak at early
    exit ``e`` is at most ``e < E - 1``: closed) down to 1.
    """
    if kind == PATIENCE:
        return np.arange(scores.shape[0], 0, -1, dtype=np.float64)
    high, low = _score_bounds(kind, num_classes)
    levels = np.concatenate([[high], np.unique(scores)[::-1], [low]])
    return (levels[:-1] + levels[1:]) / 2.0


def _evaluate(thresholds, scores, correct, cost):
    """Correct counts, mean costs and flips of K policies.

    Args:
        thresholds: ``(K, E - 1)`` score thresholds of the early exits.
        scores: ``(E - 1, N)`` early-exit confidence scores.
        correct: ``(E, N)`` whether each exit's label is right.
        cost: ``(E, N)`` cost of each sample leaving at each exit.

    Returns:
        ``(counts, mean_costs, flips)``, each ``(K,)``; ``flips`` counts the
        samples the chain gets right where the final exit is wrong or the
        other way round.
    """
    num_exits, n = correct.shape
    rows = np.arange(n)
    step = max(1, _CHUNK_ELEMENTS // (num_exits * n))
    counts, costs, flips = [], [], []
    for k in range(0, len(thresholds), step):
        t = thresholds[k : k + step]
        fire = np.ones((len(t), num_exits, n), dtype=bool)
        fire[:, :-1] = scores[None] >= t[:, :, None]
        taken = fire.argmax(axis=1)  # the first exit that fires
        chain_correct = correct[taken, rows]
        counts.append(chain_correct.sum(axis=1))
        costs.append(cost[taken, rows].mean(axis=1))
        flips.append((chain_correct != correct[-1]).sum(axis=1))
    return np.concatenate(counts), np.concatenate(costs), np.concatenate(flips)


def _check_targets(max_accuracy_drop, target_mean_cost, kind):
    if (max_accuracy_drop is None) == (target_mean_cost is None):
        raise ValueError(
            "Pass exactly one of `max_accuracy_drop` and `target_mean_cost`. "
            f"Received: max_accuracy_drop={max_accuracy_drop!r}, "
            f"target_mean_cost={target_mean_cost!r}"
        )
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    for name, value, low_ok in (
        ("max_accuracy_drop", max_accuracy_drop, True),
        ("target_mean_cost", target_mean_cost, False),
    ):
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not (0.0 <= value <= 1.0)
            or (value == 0.0 and not low_ok)
        ):
            interval = "[0, 1]" if low_ok else "(0, 1]"
            raise ValueError(f"`{name}` must be in {interval}. Received: {value!r}")


def _check_labels(y_val, n, num_classes):
    y = np.asarray(y_val)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(
            f"`y_val` must be {n} integer class labels of shape ({n},). "
            f"Received: shape {y.shape}, dtype {y.dtype.name}"
        )
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"`y_val` labels must lie in [0, {num_classes}).")
    return y


def _validation_table(chain, x_val, y_val, kind, batch_size, progress, caller):
    """``(scores (E-1, N), correct (E, N), cost (E, N))`` of every exit on validation data.

    Cost is the fraction of the full chain's MACs a sample has run on reaching
    each exit (per sample: gated and routed chains run different stages).
    """
    values, stages_run, _ = chain._run_all(x_val, batch_size, progress)
    names = chain.exit_names
    n = len(values[names[0]])
    if n == 0:
        raise ValueError(f"{caller} needs at least one validation sample.")
    y = _check_labels(y_val, n, chain.num_classes)
    # Exits that give probabilities are used as they are, not softmaxed again.
    probabilities = [
        np.asarray(values[name], np.float64) if kind_ == "probabilities"
        else softmax(values[name])
        for name, kind_ in zip(names, chain.exit_values)
    ]
    labels = np.stack([p.argmax(axis=1) for p in probabilities])
    correct = labels == y
    if kind == PATIENCE:
        scores = _streaks(labels[:-1]).astype(np.float64)
    else:
        scores = np.stack([confidence_scores(p, kind) for p in probabilities[:-1]])
    cost = chain.exit_costs(stages_run) / max(chain.total_macs, 1)
    return scores, correct, cost


def _streaks(labels):
    """``(E - 1, N)`` top-class agreement streaks of the early exits' ``labels``."""
    streak, previous = np.zeros(labels.shape[1], np.int64), np.full(labels.shape[1], -1)
    rows = []
    for row in labels:
        streak, previous = update_streak(streak, previous, row)
        rows.append(streak)
    return np.stack(rows) if rows else np.zeros((0, labels.shape[1]), np.int64)


def tradeoff_curve(chain, x_val, y_val, *, kind="max_softmax", batch_size=None,
                   progress=None) -> dict:
    """The accuracy-vs-mean-cost curve of one threshold shared by the early exits.

    The scan `calibrate(target_mean_cost=...)` chooses on, reduced to its
    Pareto front: each point is a threshold, the validation accuracy of the
    chain under it and its mean cost (a fraction of the full chain's MACs);
    no point is both dearer and less accurate than another, except the last,
    which is always the chain with no early exit (the final exit alone).

    Returns:
        ``{"threshold": [...], "accuracy": [...], "mean_cost": [...]}``, lists
        in order of increasing cost.

    Example (``export_dir`` written by `converters.export_stages`, ``x_val``
    and ``y_val`` labelled digit images):

    >>> from keras_dynamic import runtime
    >>> from keras_dynamic.runtime.calibration import tradeoff_curve
    >>> curve = tradeoff_curve(runtime.load(export_dir), x_val, y_val)
    >>> curve["mean_cost"][-1]  # every sample runs the whole chain
    1.0
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
    scores, correct, cost = _validation_table(
        chain, x_val, y_val, kind, batch_size, progress, "tradeoff_curve"
    )
    if len(scores) == 0:
        return {"threshold": [None], "accuracy": [float(correct[-1].mean())],
                "mean_cost": [float(cost[-1].mean())]}
    candidates = _shared_candidates(scores, kind, chain.num_classes)
    trial = np.repeat(candidates[:, None], len(scores), axis=1)
    counts, mean_cost, _ = _evaluate(trial, scores, correct, cost)
    accuracy = counts / correct.shape[1]
    order = np.lexsort((-accuracy, mean_cost))
    front, best = [], -1.0
    for k in order:
        if accuracy[k] > best:
            front.append(k)
            best = accuracy[k]
    # Candidate 0 closes every early exit: the reference point, kept last.
    front = [k for k in front if k != 0] + [0]
    return {
        "threshold": [score_to_threshold(candidates[k], kind) for k in front],
        "accuracy": [float(accuracy[k]) for k in front],
        "mean_cost": [float(mean_cost[k]) for k in front],
    }


def calibrate(chain, x_val, y_val, *, max_accuracy_drop=None,
              target_mean_cost=None, kind="max_softmax", confidence=None,
              batch_size=None, progress=None):
    """Chooses per-exit thresholds for one target, activates them, returns the Policy.

    Args:
        chain: a loaded `Chain`.
        x_val: validation inputs (as for `Chain.predict`).
        y_val: ``(N,)`` integer labels.
        max_accuracy_drop: allowed drop of validation accuracy below the final
            exit's accuracy, in [0, 1] (0.01 = one point).
        target_mean_cost: allowed mean MACs per sample as a fraction of the
            full chain's, in (0, 1].
        kind: ``"max_softmax"``, ``"entropy"`` or ``"patience"``, used for
            every early exit (patience: one value shared by all of them).
        confidence: with ``max_accuracy_drop``, an optional level in (0.5, 1)
            (e.g. 0.95): bound the drop with that one-sided confidence instead
            of its validation estimate. None: the estimate.
        batch_size: passed to `Chain.run_all`.
        progress: progress bar over the validation samples: True, False, or
            None (automatic), as in `Chain.predict`.

    Exactly one of ``max_accuracy_drop`` and ``target_mean_cost`` is given.
    The algorithms are described in this module's docstring.

    Returns:
        The chain's new active `Policy` (save it with `Chain.save_policy`).

    Example (``export_dir`` written by `converters.export_stages`, ``x_val``
    and ``y_val`` labelled digit images):

    >>> from keras_dynamic import runtime
    >>> chain = runtime.load(export_dir)
    >>> policy = runtime.calibrate(chain, x_val, y_val, max_accuracy_drop=0.01)
    >>> policy.rules["final"] is None  # the last exit answers whatever is left
    True
    >>> result = chain.predict(x_val)
    >>> final_accuracy = (chain.run_all(x_val)["final"].argmax(1) == y_val).mean()
    >>> bool((result.labels == y_val).mean() >= final_accuracy - 0.01)
    True
    >>> bool(result.macs.mean() < chain.total_macs)  # some samples left early
    True

    ``chain.save_policy()`` then writes the thresholds into manifest.json
    (``chain.save_policy(path)``: into a policy file).
    """
    _check_targets(max_accuracy_drop, target_mean_cost, kind)
    z = z_score(confidence, max_accuracy_drop)
    if kind == PATIENCE:
        chain._check_rules((ExitRule(PATIENCE, 1),))  # before the validation run
    if len(chain.exit_names) == 1:
        _validation_table(chain, x_val, y_val, kind, batch_size, progress, "calibrate")
        return chain.policy  # only the terminal exit: nothing to choose
    scores, correct, cost = _validation_table(
        chain, x_val, y_val, kind, batch_size, progress, "calibrate"
    )
    names = chain.exit_names
    if target_mean_cost is not None and chain.total_macs == 0:
        raise ValueError(
            "target_mean_cost needs stage MACs, but the manifest gives every "
            "stage macs=0."
        )

    if max_accuracy_drop is not None and kind == PATIENCE:
        chosen = _shared_threshold_for_drop(scores, correct, cost, kind,
                                            chain.num_classes, max_accuracy_drop, z)
    elif max_accuracy_drop is not None:
        chosen = _greedy_accuracy_drop(scores, correct, cost, kind, chain.num_classes,
                                       max_accuracy_drop, z)
    else:
        chosen = _shared_threshold_for_cost(scores, correct, cost, kind,
                                            chain.num_classes, target_mean_cost)
    chain.set_policy(
        {name: ExitRule(kind, score_to_threshold(s, kind))
         for name, s in zip(names[:-1], chosen)}
    )
    return chain.policy


def z_score(confidence, max_accuracy_drop):
    """The one-sided normal quantile of ``confidence`` (0 without one), checked."""
    if confidence is None:
        return 0.0
    if max_accuracy_drop is None:
        raise ValueError("`confidence` applies to `max_accuracy_drop` only.")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float, np.floating))
        or not 0.5 <= confidence < 1.0
    ):
        raise ValueError(
            f"`confidence` must be in [0.5, 1). Received: confidence={confidence!r}"
        )
    return statistics.NormalDist().inv_cdf(confidence)


def drop_bound(counts, flips, final_count, n, z):
    """Upper bound (z = 0: the estimate) of the accuracy drop of each policy.

    ``counts``: correct answers per policy; ``flips``: samples on which the
    policy and the reference (``final_count`` correct of ``n``) differ in
    correctness; ``z``: `z_score`. Also used for frame reuse (stream.py).
    """
    mean_drop = (final_count - counts) / n
    # d is -1/0/1 per sample, so mean(d^2) is the share of flips.
    variance = np.maximum(flips / n - mean_drop**2, 0.0)
    return mean_drop + z * np.sqrt(variance / n)


def _greedy_accuracy_drop(scores, correct, cost, kind, num_classes, drop, z):
    n = correct.shape[1]
    final_count = correct[-1].sum()
    options = [_candidates(s, kind, num_classes) for s in scores]
    chosen = np.array([o[0] for o in options])  # every early exit closed
    for e, candidates in enumerate(options):
        trial = np.repeat(chosen[None], len(candidates), axis=0)
        trial[:, e] = candidates
        counts, _, flips = _evaluate(trial, scores, correct, cost)
        upper = drop_bound(counts, flips, final_count, n, z)
        # Option 0 (closed) reproduces the previous, feasible state: its drop
        # is 0, or already accepted when an earlier exit was chosen.
        feasible = np.flatnonzero(upper <= drop + 1e-9)
        chosen[e] = candidates[feasible.max() if len(feasible) else 0]
    return chosen


def _shared_candidates(scores, kind, num_classes):
    """Candidates of one threshold shared by every early exit, closed first."""
    return _candidates(scores if kind == PATIENCE else scores.ravel(), kind, num_classes)


def _shared_threshold_for_drop(scores, correct, cost, kind, num_classes, drop, z):
    """The most permissive shared threshold whose drop (bound) is ``<= drop``."""
    candidates = _shared_candidates(scores, kind, num_classes)
    trial = np.repeat(candidates[:, None], len(scores), axis=1)
    counts, _, flips = _evaluate(trial, scores, correct, cost)
    upper = drop_bound(counts, flips, correct[-1].sum(), correct.shape[1], z)
    feasible = np.flatnonzero(upper <= drop + 1e-9)  # candidate 0 (closed) always is
    return np.full(len(scores), candidates[feasible.max() if len(feasible) else 0])


def _shared_threshold_for_cost(scores, correct, cost, kind, num_classes, target):
    candidates = _shared_candidates(scores, kind, num_classes)
    trial = np.repeat(candidates[:, None], len(scores), axis=1)
    counts, mean_cost, _ = _evaluate(trial, scores, correct, cost)
    feasible = np.flatnonzero(mean_cost <= target + 1e-12)
    if not len(feasible):
        raise ValueError(
            f"target_mean_cost={target} is below the cheapest possible mean cost "
            f"{mean_cost.min():.4f} (every sample leaving at the first exit)."
        )
    # Best accuracy first, then the lower cost.
    best = feasible[np.lexsort((mean_cost[feasible], -counts[feasible]))[0]]
    return np.full(len(scores), candidates[best])


__all__ = ["calibrate", "tradeoff_curve"]
