"""Losses that steer how often gates open: a target rate and a compute budget."""

import math

import keras
import numpy as np


def _check_fraction(name, value, low_open=False):
    valid = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (0.0 < value if low_open else 0.0 <= value)
        and value <= 1.0
    )
    if not valid:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(
            f"`{name}` must be a number in {interval}. Received: {name}={value!r}"
        )
    return float(value)


def target_rate_loss(gate_values, target: float):
    """ConvNet-AIG's target-rate loss: `(mean_batch(g) - target)^2`.

    For a gate with several groups (`ChannelGate`) each group's rate is
    pulled to the target and the squares are averaged over the groups.
    `BlockGate(target_rate=...)` and `ChannelGate(target_rate=...)` add this
    term in training.

    Args:
        gate_values: `(batch, groups)` gate values of one gate layer (in
            training the straight-through samples, whose gradient reaches the
            gate).
        target: the wanted execution rate, in [0, 1].

    Returns:
        A scalar float32 tensor.

    Example:

    >>> import numpy as np
    >>> from keras_dynamic.losses import target_rate_loss
    >>> g = np.array([[1.0], [1.0], [0.0], [1.0]], "float32")
    >>> float(target_rate_loss(g, 0.5))
    0.0625

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018.
    """
    target = _check_fraction("target", target)
    gate_values = keras.ops.cast(gate_values, "float32")
    if len(gate_values.shape) != 2:
        raise ValueError(
            "`gate_values` must have shape (batch, groups). "
            f"Received: shape={tuple(gate_values.shape)}"
        )
    rates = keras.ops.mean(gate_values, axis=0)
    return keras.ops.mean(keras.ops.square(rates - target))


def executed_fraction(rates, macs, *, fixed_macs: float = 0.0, total_macs=None):
    """The share of the compute a network executes, given branch rates.

    `(fixed_macs + sum_b rates[b] * macs[b]) / total_macs`, where
    `total_macs` defaults to `fixed_macs + sum(macs)` (every branch on). With
    the defaults this is the share of the conditional compute only; pass the
    network's unconditional MACs as `fixed_macs` for the share of the whole
    network, and `total_macs` when not every branch can run at once (the
    experts of a top-1 router: the full cost counts one expert).

    Args:
        rates: `(num_branches,)` execution rate of each conditional branch.
        macs: sequence of `num_branches` non-negative MAC counts.
        fixed_macs: MACs that always run.
        total_macs: the cost that counts as 100%.

    Returns:
        A scalar float32 tensor.

    Example:

    >>> from keras_dynamic.losses import executed_fraction
    >>> float(executed_fraction([1.0, 0.5], [100, 200], fixed_macs=100))
    0.75
    """
    macs = np.asarray(macs, dtype="float64")
    if macs.ndim != 1 or not np.all(np.isfinite(macs)) or np.any(macs < 0):
        raise ValueError(
            "`macs` must be a sequence of non-negative numbers, one per "
            f"branch. Received: macs={macs.tolist()!r}"
        )
    if isinstance(fixed_macs, bool) or not (
        isinstance(fixed_macs, (int, float)) and 0 <= fixed_macs < math.inf
    ):
        raise ValueError(
            "`fixed_macs` must be a non-negative number. "
            f"Received: fixed_macs={fixed_macs!r}"
        )
    if total_macs is None:
        total_macs = fixed_macs + float(macs.sum())
    if isinstance(total_macs, bool) or not (
        isinstance(total_macs, (int, float))
        and fixed_macs <= total_macs < math.inf
        and total_macs > 0
    ):
        raise ValueError(
            "`total_macs` must be a positive number no smaller than "
            f"`fixed_macs`. Received: total_macs={total_macs!r}, "
            f"fixed_macs={fixed_macs!r}"
        )
    rates = keras.ops.cast(rates, "float32")
    if tuple(rates.shape) != macs.shape:
        raise ValueError(
            "`rates` must have one entry per branch, like `macs`. Received: "
            f"rates shape={tuple(rates.shape)}, {len(macs)} MAC counts"
        )
    # Normalised in float64 first: raw MAC counts (1e9) in float32 would
    # cost precision in the sum.
    weights = keras.ops.convert_to_tensor(macs / total_macs, "float32")
    return fixed_macs / total_macs + keras.ops.sum(rates * weights)


def compute_budget_loss(
    rates, macs, budget: float, *, fixed_macs: float = 0.0, total_macs=None
):
    """A MACs-weighted compute budget: `(executed_fraction - budget)^2`.

    Unlike a per-gate target rate, the budget leaves the network free to
    run cheap blocks often and expensive ones rarely, as long as the
    MACs-weighted share of the compute is close to `budget` ("about 50% of
    the compute"). `keras_dynamic.models.ComputeBudget` attaches it to a
    model under plain `fit`, with the MACs counted from the model.

    Args:
        rates: `(num_branches,)` execution rates (batch means of the
            straight-through gate values in training).
        macs: sequence of `num_branches` MAC counts, one per branch.
        budget: the wanted share of the compute, in (0, 1].
        fixed_macs, total_macs: as in `executed_fraction`.

    Returns:
        A scalar float32 tensor.

    Example:

    >>> from keras_dynamic.losses import compute_budget_loss
    >>> round(float(compute_budget_loss([1.0, 0.0], [300, 100], 0.5)), 4)
    0.0625

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018 (the per-gate form this generalises).
    """
    budget = _check_fraction("budget", budget, low_open=True)
    fraction = executed_fraction(
        rates, macs, fixed_macs=fixed_macs, total_macs=total_macs
    )
    return keras.ops.square(fraction - budget)
