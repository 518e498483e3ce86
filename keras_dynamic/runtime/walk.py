"""Walks a stage graph with gates and routes (manifest version 2), per sample.

A stage runs for a sample when an edge into it fires from a stage that ran
for that sample: an "always" edge fires whenever its source ran, a gate edge
when column ``index`` of the gate's tensor is above 0.5, a route edge when
the route tensor's arg max is ``index``. The decisions are the model's own
numbers (a gate's hard 0/1, a router's top-1 mask), read after the stage that
computes them, so Keras and the chain decide the same way.

A stage that does not run for a sample is never invoked for it; later
stages read zeros for its outputs (the real value 0, the zero point of a
quantized tensor). That is exact because the merge that reads them
multiplies them by the decision that switched them off (0 * zeros = 0).

Batch mode runs each stage once, on exactly the rows that need it, and
scatters its outputs into zeros for the other rows; sample mode walks each
sample alone at batch 1. Samples still leave the chain at a confident exit;
exits sit on unconditional stages, which every sample still in the chain runs.
"""

import dataclasses
import time

import numpy as np

from keras_dynamic.runtime.policy import decider
from keras_dynamic.runtime.policy import fires
from keras_dynamic.runtime.quantized import HIGHEST
from keras_dynamic.runtime.quantized import LOWEST
from keras_dynamic.runtime.quantized import code_table
from keras_dynamic.runtime.quantized import dequantize

GATE = "gate"
ROUTE = "route"


@dataclasses.dataclass(frozen=True)
class Decision:
    """A gate or route tensor that a stage computes."""

    kind: str
    name: str
    tensor: str
    quantization: object
    width: int

    def read(self, values):
        """Gates: ``(rows, width)`` bool; routes: ``(rows,)`` int64 arg max.

        int8/uint8 codes are read as they are, with the decisions their
        dequantized values give: the real value grows with the code (the
        scale is positive, and distinct codes stay distinct in float32), so
        a route's arg max is the codes' and a gate is on from the first code
        whose real value exceeds 0.5.
        """
        if self.quantization is not None and values.dtype.itemsize == 1:
            if self.kind == GATE:
                return values >= self._first_code_on
            return values.argmax(axis=1).astype(np.int64)
        real = dequantize(values, self.quantization)
        if self.kind == GATE:
            return real > 0.5
        return real.argmax(axis=1).astype(np.int64)

    def __post_init__(self):
        # An int16 scalar: compared with int8 or uint8 codes without
        # overflow (HIGHEST + 1 turns a gate that is never on off).
        first = None if self.quantization is None else np.int16(_first_code_on(self.quantization))
        object.__setattr__(self, "_first_code_on", first)


def _first_code_on(quant):
    """The lowest int8/uint8 code whose `dequantize`d value is above 0.5."""
    table = code_table(quant)
    return next((LOWEST + i for i, real in enumerate(table) if real > 0.5), HIGHEST + 1)


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage of the walk, with what decides whether it runs."""

    position: int
    runner: object
    # (source position, kind or None for "always", decision name, index)
    incoming: tuple
    exit_slot: int
    decisions: tuple
    # (tensor name, shape after the batch dimension, dtype, fill value)
    zeros: tuple
    zeros_one: dict


class StageGraph:
    """The steps of a version-2 manifest, in run order."""

    def __init__(self, manifest, order, runners, stage_exit):
        stages = {s["name"]: s for s in manifest["stages"]}
        position = {name: i for i, name in enumerate(order)}
        incoming = {name: [] for name in order}
        for name in order:
            for edge in stages[name]["next"]:
                when = edge["when"]
                if when == "always":
                    incoming[edge["stage"]].append((position[name], None, None, None))
                else:
                    kind = GATE if GATE in when else ROUTE
                    incoming[edge["stage"]].append(
                        (position[name], kind, when[kind], when["index"])
                    )
        specs = {
            spec["name"]: spec for s in manifest["stages"] for spec in s["outputs"]
        }
        owned = {name: [] for name in order}
        for kind, table, width_key in ((GATE, "gates", "groups"), (ROUTE, "routes", "experts")):
            for entry in manifest.get(table, []):
                owned[entry["stage"]].append(Decision(
                    kind, entry["name"], entry["tensor"],
                    specs[entry["tensor"]].get("quantization"), entry[width_key],
                ))
        self.gates = tuple(
            (e["name"], e["groups"]) for e in manifest.get("gates", [])
        )
        self.routes = tuple(e["name"] for e in manifest.get("routes", []))
        steps = []
        for i, name in enumerate(order):
            zeros = tuple(
                (spec["name"], tuple(spec["shape"][1:]), np.dtype(spec["dtype"]),
                 (spec.get("quantization") or {}).get("zero_point", 0))
                for spec in stages[name]["outputs"]
            )
            steps.append(Step(
                position=i,
                runner=runners[i],
                incoming=tuple(incoming[name]),
                exit_slot=stage_exit[i],
                decisions=tuple(owned[name]),
                zeros=zeros,
                zeros_one={n: _zeros(1, shape, dtype, fill) for n, shape, dtype, fill in zeros},
            ))
        self.steps = tuple(steps)


def _zeros(rows, shape, dtype, fill):
    array = np.zeros((rows, *shape), dtype)
    if fill:
        array.fill(fill)
    return array


class Record:
    """Per-sample decisions of a walk: which stages ran, gates, routes."""

    def __init__(self, n, graph):
        self.stages_run = np.zeros((n, len(graph.steps)), bool)
        self.gates = {name: np.zeros((n, width), bool) for name, width in graph.gates}
        self.routes = {name: np.full(n, -1, np.int64) for name in graph.routes}


def _mask(step, ran, decided, rows):
    """Rows (bool) for which an edge into ``step`` fires."""
    if step.position == 0:
        return np.ones(rows, bool)
    mask = np.zeros(rows, bool)
    for source, kind, name, index in step.incoming:
        fired = ran[source]
        if kind == GATE:
            fired = fired & decided[(kind, name)][:, index]
        elif kind == ROUTE:
            fired = fired & (decided[(kind, name)] == index)
        mask |= fired
    return mask


def walk_batch(graph, board, active, rules, out, record, *, exit_logits,
               gives_probabilities, collect=None, live_after):
    """Runs the graph on rows ``active`` whose inputs are in ``board``.

    Writes the exit taken per row into ``out`` (values, exit_index,
    stage_seconds) and the decisions into ``record``. With ``collect`` (a
    dict exit name -> (N, C) array, and rules that never fire), every exit's
    values are written instead and no row leaves early.
    """
    last = len(graph.steps) - 1
    ran, decided = {}, {}
    for step in graph.steps:
        rows = len(active)
        mask = _mask(step, ran, decided, rows)
        count = int(mask.sum())
        runner = step.runner
        if count == rows:
            start = time.perf_counter()
            produced = runner(board)
            elapsed = time.perf_counter() - start
        elif count:
            subset = {name: board[name][mask] for name in runner.inputs}
            start = time.perf_counter()
            partial = runner(subset)
            elapsed = time.perf_counter() - start
            produced = {}
            for name, shape, dtype, fill in step.zeros:
                full = _zeros(rows, shape, dtype, fill)
                full[mask] = partial[name]
                produced[name] = full
        else:
            elapsed = 0.0
            produced = {
                name: _zeros(rows, shape, dtype, fill)
                for name, shape, dtype, fill in step.zeros
            }
        board.update(produced)
        ran[step.position] = mask
        record.stages_run[active, step.position] = mask
        if count:
            out.stage_seconds[active[mask], step.position] = elapsed / count
        for decision in step.decisions:
            value = decision.read(produced[decision.tensor])
            if decision.kind == GATE:
                value &= mask[:, None]
                record.gates[decision.name][active] = value
            else:
                value = np.where(mask, value, -1)
                record.routes[decision.name][active] = value
            decided[(decision.kind, decision.name)] = value
        slot = step.exit_slot
        if slot < 0:
            continue
        logits = exit_logits(produced, slot)
        if collect is not None:
            collect[slot][active] = logits
            if step.position == last:
                out.exit_index[active] = slot
            continue
        if step.position == last:
            leave = None
        elif rules[slot] is None:
            continue
        else:
            leave = fires(rules[slot], logits, gives_probabilities[slot])
            if not leave.any():
                continue
            if leave.all():
                leave = None
        taken = active if leave is None else active[leave]
        out.values[taken] = logits if leave is None else logits[leave]
        out.exit_index[taken] = slot
        if leave is None:
            return
        stay = ~leave
        board = {name: board[name][stay] for name in live_after[step.position]}
        ran = {key: value[stay] for key, value in ran.items()}
        decided = {key: value[stay] for key, value in decided.items()}
        active = active[stay]


def sample_plan(graph, rules, gives_probabilities, exit_tensors, exit_quant):
    """Per step: what sample mode needs, with each exit's decision function."""
    last = len(graph.steps) - 1
    plan = []
    for step in graph.steps:
        slot = step.exit_slot
        if slot < 0:
            leaves = None
        elif step.position == last:
            leaves = _always
        else:
            leaves = decider(rules[slot], gives_probabilities[slot])
        plan.append((
            step.position, step.runner.run, step.incoming, step.zeros_one,
            step.decisions, slot,
            exit_tensors[slot] if slot >= 0 else None,
            exit_quant[slot] if slot >= 0 else None,
            leaves,
        ))
    return tuple(plan)


def _always(logits):
    return True


def walk_samples(plan, inputs, out, record, start, stop):
    """Sample mode on rows ``start:stop``: each sample alone at batch 1."""
    clock = time.perf_counter
    items = tuple(inputs.items())
    num_steps = len(plan)
    for j in range(start, stop):
        board = {name: a[j : j + 1] for name, a in items}
        ran = [False] * num_steps
        decided = {}
        seconds = out.stage_seconds[j]
        for position, run, incoming, zeros, decisions, slot, tensor, quant, leaves in plan:
            if position:
                go = False
                for source, kind, name, index in incoming:
                    if not ran[source]:
                        continue
                    if kind is None or (
                        decided[(kind, name)][index] if kind == GATE
                        else decided[(kind, name)] == index
                    ):
                        go = True
                        break
                if not go:
                    board.update(zeros)
                    continue
            begin = clock()
            produced = run(board)
            seconds[position] = clock() - begin
            ran[position] = True
            board.update(produced)
            for decision in decisions:
                decided[(decision.kind, decision.name)] = decision.read(
                    produced[decision.tensor]
                )[0]
            if leaves is not None:
                logits = dequantize(produced[tensor], quant)
                if leaves(logits):
                    break
        out.values[j] = logits
        out.exit_index[j] = slot
        record.stages_run[j] = ran
        for (kind, name), value in decided.items():
            if kind == GATE:
                record.gates[name][j] = value
            else:
                record.routes[name][j] = value


__all__ = ["StageGraph", "Record", "walk_batch", "walk_samples", "sample_plan", "dequantize"]
