"""Does the export compute what the Keras model computes, sample by sample?

Two checks. Before conversion, every Keras stage must be a per-sample
function: its output for a sample may not depend on the other samples of
the batch, since the runtime runs samples alone, in batches of any size,
and drops samples that exit. After conversion, the chained TFLite stages
(the real interpreter, through `keras_dynamic.runtime`) must reproduce every
exit in batch mode and in sample mode:

* values: the largest |TFLite - Keras| difference, relative to the exit's
  scale (its largest |value| over the parity samples), at most `TOLERANCE`
  for the export's quantization. The scale is the exit's own, so an exit of
  1e-9 logits is checked at 1e-13, not at 1e-4 as it was against max(1, .);
* labels: the arg max agrees on every sample, except near ties: a sample
  whose Keras values for the two classes differ by at most twice the larger
  of the tolerance times that sample's own scale (its largest |value|) and
  `FLOAT32_FLOOR` times the exit's scale, which float32 arithmetic cannot
  resolve. A small-scale sample thus cannot flip its label under
  cover of a large-scale sample's tolerance. int8 errors are absolute (one
  quantization step of the whole tensor), so int8 ties use the exit's scale.

In a chain with gates and routes, the walk follows the TFLite decisions. A
decision may differ from Keras's only near its own tie, by the same rule as a
label, on the soft value behind the decision (`decision_margins`): a gate's
on - off logits within twice the tolerance of 0, a route's chosen expert's
router probability within twice the tolerance of the top one's, both relative
to that value's scale over the samples. The branch after such a flip
legitimately computes something else, so that sample's exits are left out of
the value comparison (and counted in the export's log). A flip away from a tie
is a `ParityError` naming the decision.
"""

import numpy as np

from keras_dynamic.converters.partition import PartitionError

# Largest |TFLite - Keras| difference accepted, relative to the exit's scale.
# float32 kernels differ only in summation order (XNNPACK vs oneDNN);
# reduced precision gets the slack it needs (measured in BENCHMARKS.md).
TOLERANCE = {None: 1e-4, "float16": 2e-2, "int8": 1.5e-1}
# Eight float32 epsilons: what float32 can resolve on values of a given scale.
FLOAT32_FLOOR = 8 * float(np.finfo(np.float32).eps)
# Samples each Keras stage is run on alone for the per-sample check (a layer
# that mixes samples, a batch mean or max, changes the outputs of all or all
# but one of them; an eager call costs tens of milliseconds), and the largest batch-vs-alone difference accepted
# (relative to the output's scale): float32 kernels may sum in another order
# at another batch size.
PER_SAMPLE_CHECKS = 4
PER_SAMPLE_TOLERANCE = 1e-4
# Scales are floored here, so that an all-zero exit is compared, not divided by 0.
_TINY = float(np.finfo(np.float32).tiny)


class ParityError(AssertionError):
    """The exported chain disagrees with the Keras model; nothing was written."""


def _outputs(plan, board):
    values = plan.model(
        [board[name] for name in plan.input_names], training=False
    )
    values = values if isinstance(values, (list, tuple)) else [values]
    return [np.asarray(v) for v in values]


def run_stages(plans: list, inputs: dict) -> dict:
    """Runs the Keras stages in order on `inputs`; returns every stage tensor by name."""
    board = dict(inputs)
    for plan in plans:
        board.update(zip(plan.output_names, _outputs(plan, board)))
    return board


def check_per_sample(plans: list, board: dict) -> None:
    """Runs every Keras stage on samples alone and compares with the batch run.

    `board` is `run_stages` on a batch. Raises `PartitionError` naming the
    first stage whose output for a sample changes with the rest of the batch.
    """
    count = min(PER_SAMPLE_CHECKS, len(board[plans[0].input_names[0]]))
    if count < 2:
        return
    for plan in plans:
        for row in range(count):
            alone = _outputs(
                plan, {n: board[n][row : row + 1] for n in plan.input_names}
            )
            for name, single in zip(plan.output_names, alone):
                together = board[name]
                scale = max(float(np.abs(together).max()), _TINY)
                error = float(np.abs(together[row : row + 1] - single).max()) / scale
                if not error <= PER_SAMPLE_TOLERANCE:
                    raise PartitionError(
                        f"Stage '{plan.name}' (layers: "
                        f"{', '.join(plan.layer_names)}) is not a per-sample "
                        f"function: its output '{name}' for sample {row} "
                        f"differs by {error:.3g} (relative to its scale) "
                        "between a run on the whole batch and a run on the "
                        "sample alone. A layer in it mixes the samples of a "
                        "batch (a mean over axis 0, say); the runtime runs "
                        "samples alone and in batches of any size, so it would "
                        "answer differently. Nothing was written."
                    )


def decision_margins(model, plans: list, ordered_inputs) -> dict:
    """Keras's soft value behind every gate and route of ``plans``.

    ``{decision name: (N, width)}``: a gate's ``on - off`` logits (it is on
    where this is > 0), a route's router probabilities (the top one is
    chosen), on ``ordered_inputs`` (the model's inputs in its own order). A
    decision made by another kind of layer has no entry: any flip of it is
    an error.
    """
    import keras

    from keras_dynamic.layers._gate import GateBase
    from keras_dynamic.layers.router import Router

    found = {}
    for plan in plans:
        condition = plan.condition
        if condition is None or condition.tensor is None or condition.decision in found:
            continue
        layer, node_index, _ = condition.tensor._keras_history
        if isinstance(layer, (GateBase, Router)):
            node = layer._inbound_nodes[node_index]
            found[condition.decision] = (layer, node.input_tensors[0])
    if not found:
        return {}
    probe = keras.Model(model.inputs, [tensor for _, tensor in found.values()])
    features = probe(ordered_inputs, training=False)
    features = features if isinstance(features, (list, tuple)) else [features]
    margins = {}
    for (name, (layer, _)), value in zip(found.items(), features):
        if isinstance(layer, Router):
            margins[name] = np.asarray(layer.router_probabilities(value))
        else:
            off, on = layer.gate_logits(value, training=False)
            margins[name] = np.asarray(on) - np.asarray(off)
    return margins


def decision_flips(decisions: list, board: dict, margins: dict, walked: dict,
                   mode: str, quantize: "str | None") -> np.ndarray:
    """Rows (bool) on which the TFLite walk took another gate or route near a tie.

    Args:
        decisions: ``(kind, name, reached)`` in run order: ``"gate"`` or
            ``"route"``, the decision tensor's name and the rows (bool) on
            which TFLite ran the stage that computes it.
        board: Keras values of every stage tensor (`run_stages`), the
            decision tensors among them, read as the runtime reads them.
        margins: `decision_margins`, Keras's soft value of each decision.
        walked: ``{"gate": {name: (N, groups) bool}, "route": {name: (N,)
            int}}``, the decisions the TFLite walk took.
        mode: ``"batch"`` or ``"sample"``, for the message.
        quantize: the export's quantization (picks the tolerance).

    Raises:
        ParityError: a decision differs from Keras's away from a near tie.
    """
    tolerance = TOLERANCE[quantize]
    flipped = np.zeros(len(next(iter(board.values()))), bool)
    for kind, name, reached in decisions:
        keras_values = np.asarray(board[name])
        soft = margins.get(name)
        if soft is not None:
            soft = np.asarray(soft, np.float64)
            scale = max(float(np.abs(soft).max()), _TINY)
            allowance = 2 * max(tolerance * scale, FLOAT32_FLOOR * scale)
        if kind == "gate":
            columns = (keras_values > 0.5) != walked["gate"][name]
            differs = columns.any(axis=1)
            near = (
                np.zeros(len(differs), bool) if soft is None
                else (~columns | (np.abs(soft) <= allowance)).all(axis=1)
            )
        else:
            route = walked["route"][name]
            differs = (route >= 0) & (route != keras_values.argmax(axis=1))
            near = (
                np.zeros(len(differs), bool) if soft is None
                else soft.max(axis=1) - soft[np.arange(len(soft)), np.maximum(route, 0)]
                <= allowance
            )
        # Past an earlier flip, the walk is on another path: not comparable.
        differs &= reached & ~flipped
        wrong = differs & ~near
        if wrong.any():
            first = int(np.flatnonzero(wrong)[0])
            raise ParityError(
                f"The {kind} '{name}' in {mode} mode decides differently on TFLite "
                f"than in Keras for {int(wrong.sum())} sample(s) (first: sample "
                f"{first}) that are not near its tie (tolerance {tolerance:g} for "
                f"quantize={quantize!r}). Nothing was written."
            )
        flipped |= differs
    return flipped


def compare(reference: np.ndarray, got: np.ndarray, quantize: "str | None") -> tuple:
    """`(relative error, rows whose label differs beyond a near tie)` of one exit."""
    reference = reference.astype(np.float64)
    got = got.astype(np.float64)
    scale = max(float(np.abs(reference).max()), _TINY)
    error = float(np.abs(got - reference).max()) / scale
    tolerance = TOLERANCE[quantize]
    rows = np.arange(len(reference))
    top, picked = reference.argmax(axis=1), got.argmax(axis=1)
    margin = reference[rows, top] - reference[rows, picked]
    own = scale if quantize == "int8" else np.abs(reference).max(axis=1)
    allowance = 2 * np.maximum(tolerance * own, FLOAT32_FLOOR * scale)
    return error, np.flatnonzero(margin > allowance)


def check_exits(plans: list, reference: dict, runs: dict, quantize: "str | None",
                skip: "dict | None" = None) -> dict:
    """Compares each exit of every TFLite run with the Keras `reference`.

    Args:
        plans: the stages, each with its `exit_name` and `exit_values`.
        reference: `{exit name: Keras values}`.
        runs: `{mode: {exit name: TFLite values}}`, e.g. batch and sample.
        quantize: the export's quantization (picks the tolerance).
        skip: optional `{mode: rows (bool)}` left out of that run's
            comparison (`decision_flips`).

    Returns:
        `{exit name: largest relative error over the runs}`.
    """
    tolerance = TOLERANCE[quantize]
    worst = {}
    for plan in plans:
        if plan.exit_name is None:
            continue
        values = plan.exit_values
        for mode, lite in runs.items():
            keep = np.ones(len(lite[plan.exit_name]), bool) if skip is None else ~skip[mode]
            if not keep.any():
                continue
            error, flipped = compare(
                reference[plan.exit_name][keep], lite[plan.exit_name][keep], quantize
            )
            where = (
                f"Exit '{plan.exit_name}' ({plan.name}, {values}) in {mode} mode"
            )
            if not error <= tolerance:
                raise ParityError(
                    f"{where}: TFLite differs from Keras by {error:.3g} of the "
                    f"exit's scale (its largest |value|), above the tolerance "
                    f"{tolerance:g} for quantize={quantize!r}. Nothing was written."
                )
            if len(flipped):
                raise ParityError(
                    f"{where}: TFLite picks a different class than Keras for "
                    f"{len(flipped)} sample(s) (first: sample "
                    f"{np.flatnonzero(keep)[flipped[0]]}) "
                    "whose top two classes are not a near tie. Nothing was "
                    "written."
                )
            worst[plan.exit_name] = max(worst.get(plan.exit_name, 0.0), error)
    return worst


__all__ = [
    "ParityError",
    "TOLERANCE",
    "run_stages",
    "check_per_sample",
    "check_exits",
    "compare",
    "decision_flips",
    "decision_margins",
]
