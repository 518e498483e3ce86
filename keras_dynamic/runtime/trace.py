"""Golden traces: the stage outputs and decisions of the Python runtime, for another runtime to replay.

A trace records, for a set of inputs run through an export in sample mode (batch 1,
the edge case), the stage outputs that decisions are made of (every exit's logits for
every sample, so one trace serves several policies; with gates and routes, also their
decision tensors) and, per policy, what the Python runtime decided: the exit taken, the
label, the score of every exit whose rule was evaluated and, with gates and routes, every
gate's columns, every route's expert and the stages run. The JVM core of the Android demo
(``android_demo/core``) replays the recorded outputs through its own graph walk and exit
policies and must take the same decisions; the demo app also reads a trace that carries
its inputs, to run them on the phone.

Format (JSON, written compactly). Version 1, written for linear chains (manifest
version 1):

.. code-block:: text

    {"format": "keras_dynamic.trace", "version": 1,
     "manifest_sha256": "<sha256 of the export's manifest.json bytes>",
     "producer": {"keras_dynamic": ..., "numpy": ..., "interpreter": ...},
     "mode": "sample", "samples": N,
     "exits": ["exit_1", "exit_2", "final"],          # the chain's exits in run order
     "tensors": {"exit_1": {"stage": "stage_1", "dtype": "float32",
                            "shape": [N, 10], "data": "<base64, little-endian>"}, ...},
     "inputs": {"image": {"dtype": ..., "shape": [N, ...], "data": ...}},   # optional
     "targets": [7, 3, ...],                            # optional true labels
     "runs": [{"name": "manifest",
               "policy": {"exit_1": {"kind": "max_softmax", "threshold": 0.9}, ..., "final": null},
               "exit": [0, 2, ...],                     # index into "exits"
               "label": [7, 3, ...],
               "scores": {"exit_1": [0.97, 0.41, ...], "exit_2": [null, 0.88, ...], ...}}]}

``policy`` is the complete rule set of the run (every exit; null never exits early).
A score is the rule's own quantity (top probability for ``max_softmax``, entropy in
nats for ``entropy``), null where the exit was not evaluated for that sample (not
reached, or no rule). Exit tensors hold real values (traces of quantized exits are
refused).

Version 2, written for chains with gates and routes (manifest version 2), adds:

.. code-block:: text

     "stages": ["stage_1", ..., "stage_11"],          # run order: what rows below index
     "recorded_stages": [[true, false, true, ...], ...],   # (N, stages): see below
     "tensors": {..., "block1_gate": {"stage": "stage_1", "dtype": "float32",
                                      "shape": [N, 1], "data": ...},
                 "moe_router": {"stage": "stage_7", "shape": [N, 3], ...}},
     "runs": [{...,
               "gates": {"block1_gate": [[true], [false], ...], "cg_gate": [[true, false], ...]},
               "routes": {"moe_router": [2, -1, 0, ...]},
               "stages_run": [[true, true, false, ...], ...]}]

Every gate and route tensor is recorded as its stage outputs it, in the manifest's dtype
(raw quantized values for a quantized tensor, which the replaying runtime dequantizes
itself), by a recording walk of each sample at batch 1 with no early exit.
``recorded_stages`` says which stages that walk ran per sample; where a stage did not run
(a gate or route upstream switched it off) its decision tensors' rows hold zeros (the
zero point where quantized), which no correct walk reads. A walk that honours an exit
runs a prefix of the recorded walk (exits sit on stages every sample runs, and decisions
do not depend on exits), so the recording covers every policy.
Per run, as `Chain.predict` reports them in sample mode: ``gates`` (N, groups) bool per
gate, all false where the gate's stage did not run for the sample (it left earlier, or a
gate or route skipped that stage); ``routes`` (N,) int per route, the expert chosen, -1
where not reached; ``stages_run`` (N, stages) bool. A decision read by a stage that ran
counts even where the sample leaves at that stage's exit.
"""

import base64
import hashlib
import json
import os
import pathlib

import numpy as np

from keras_dynamic import __version__
from keras_dynamic.runtime.chain import Chain
from keras_dynamic.runtime.chain import load
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.files import atomic_write_text
from keras_dynamic.runtime.interpreter import interpreter_class
from keras_dynamic.runtime.manifest import MANIFEST_NAME
from keras_dynamic.runtime.policy import Policy
from keras_dynamic.runtime.policy import entropy
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.walk import GATE

FORMAT = "keras_dynamic.trace"
# Version 2 records gates and routes; version 1 (linear chains) is still written for
# version-1 exports, so that older readers keep reading them.
VERSION = 2
LINEAR_VERSION = 1
VERSIONS = (LINEAR_VERSION, VERSION)


class TraceError(ValueError):
    """A trace cannot be recorded or read (bad arguments, a malformed file)."""


def _encode(array):
    array = np.ascontiguousarray(array)
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "data": base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode(),
    }


def decode_array(entry: dict) -> np.ndarray:
    """The numpy array of a trace's ``tensors`` or ``inputs`` entry."""
    data = base64.b64decode(entry["data"], validate=True)
    return np.frombuffer(data, dtype=np.dtype(entry["dtype"]).newbyteorder("<")).reshape(
        entry["shape"]
    )


def _named_inputs(chain, x):
    """``x`` as ``{input name: array}`` in each input's manifest dtype (for the optional copy)."""
    if not isinstance(x, dict):
        x = {chain.input_names[0]: x}
    arrays = {}
    for spec in chain.manifest["inputs"]:
        array = np.asarray(x[spec["name"]])
        dtype = np.dtype(spec["dtype"])
        if array.dtype != dtype and (array.dtype.kind == dtype.kind == "f"):
            array = array.astype(dtype)
        if array.dtype != dtype:
            raise TraceError(
                f"input {spec['name']!r}: a trace stores inputs in the manifest's dtype "
                f"{dtype.name}. Received dtype {array.dtype.name}."
            )
        arrays[spec["name"]] = array
    return arrays


def _score(rule, row):
    if rule.kind == "patience":
        raise TraceError(
            "patience rules are not traced: the Android chain core decides by "
            "max_softmax and entropy thresholds."
        )
    probabilities = softmax(row)
    if rule.kind == "max_softmax":
        return float(probabilities.max())
    return float(entropy(probabilities)[0])


def _decision_steps(chain):
    """``(stage position, Decision)`` of every gate and route, in run order."""
    return [(step.position, d) for step in chain._graph.steps for d in step.decisions]


def _fires(step, ran, decided):
    """Whether an edge into ``step`` fires for a sample (walk.py's sample-mode rule)."""
    for source, kind, name, index in step.incoming:
        if not ran[source]:
            continue
        if kind is None:
            return True
        value = decided[(kind, name)]
        if value[index] if kind == GATE else value == index:
            return True
    return False


def _recording_walk(chain, x):
    """Version 2: every gate and route tensor of every sample, from a walk with no exit.

    Each sample runs alone at batch 1 through the stages its gates and routes choose,
    as in sample mode (walk.py), but no exit takes it. Returns ``({tensor name: (N,
    width) array in its manifest dtype}, (N, stages) bool stages run)``; rows of a stage
    that did not run hold its zeros.
    """
    graph = chain._graph
    specs = {spec["name"]: spec for s in chain.manifest["stages"] for spec in s["outputs"]}
    inputs, n = chain._prepare_inputs(x)
    tensors = {}
    for _, decision in _decision_steps(chain):
        spec = specs[decision.tensor]
        fill = (spec.get("quantization") or {}).get("zero_point", 0)
        tensors[decision.tensor] = np.full((n, decision.width), fill, np.dtype(spec["dtype"]))
    ran = np.zeros((n, len(graph.steps)), bool)
    with chain._lock:
        chain._check_open()
        for j in range(n):
            board = {name: a[j : j + 1] for name, a in inputs.items()}
            decided = {}
            for step in graph.steps:
                if step.position and not _fires(step, ran[j], decided):
                    board.update(step.zeros_one)
                    continue
                produced = step.runner(board)
                board.update(produced)
                ran[j, step.position] = True
                for decision in step.decisions:
                    value = produced[decision.tensor]
                    tensors[decision.tensor][j] = value[0]
                    decided[(decision.kind, decision.name)] = decision.read(value)[0]
    return tensors, ran


def _check_decisions(chain, name, result, decision_tensors, recorded):
    """The run's gates, routes and stages follow from the recorded tensors and walk."""
    position = {stage: i for i, stage in enumerate(chain.stage_names)}
    exit_stage = {e["name"]: e["stage"] for e in chain.manifest["exits"]}
    reached = np.array(
        [position[exit_stage[chain.exit_names[slot]]] for slot in result.exit_index]
    )
    prefix = np.arange(len(position))[None, :] <= reached[:, None]
    consistent = np.array_equal(result.stages_run, recorded & prefix)
    for stage_position, decision in _decision_steps(chain):
        ran = result.stages_run[:, stage_position]
        value = decision.read(decision_tensors[decision.tensor])
        if decision.kind == GATE:
            consistent &= np.array_equal(result.gates[decision.name], value & ran[:, None])
        else:
            consistent &= np.array_equal(result.routes[decision.name], np.where(ran, value, -1))
    if not consistent:
        raise TraceError(
            f"run {name!r}: the gates, routes or stages of the chain's own run do not follow "
            "from the decision tensors recorded at batch 1; the interpreter is not "
            "deterministic here (use num_threads=1)."
        )


def _run(chain, x, logits, name, policy, decision_tensors=None, recorded=None):
    """One policy's decisions, checked against the recorded exit logits (and decisions)."""
    rules = dict(chain.policy.rules)
    if policy is not None:
        rules.update(Policy.coerce(policy).rules)
    result = chain.predict(x, mode="sample", policy=policy)
    exits = chain.exit_names
    taken = [logits[exits[slot]][j] for j, slot in enumerate(result.exit_index)]
    expected = softmax(np.array(taken)).astype(np.float32)
    if not np.array_equal(expected, result.probabilities):
        raise TraceError(
            f"run {name!r}: the exit logits recorded at batch 1 do not reproduce the "
            "probabilities of the chain's own run; the interpreter is not deterministic "
            "here (use num_threads=1)."
        )
    scores = {}
    for slot, exit_name in enumerate(exits):
        rule = rules[exit_name]
        # Exits sit on stages every sample still in the chain runs (version 2 as well):
        # a sample reaches every exit up to the one it took.
        scores[exit_name] = [
            None if rule is None or slot > int(taken_slot)
            else _score(rule, logits[exit_name][j : j + 1])
            for j, taken_slot in enumerate(result.exit_index)
        ]
    for exit_name, values in scores.items():
        if any(v is not None and not np.isfinite(v) for v in values):
            raise TraceError(
                f"run {name!r}: exit {exit_name!r} has non-finite scores (NaN or Inf "
                "logits); such samples cannot be traced."
            )
    run = {
        "name": name,
        "policy": {n: None if r is None else r._asdict() for n, r in rules.items()},
        "exit": result.exit_index.tolist(),
        "label": result.labels.tolist(),
        "scores": scores,
    }
    if decision_tensors is not None:
        _check_decisions(chain, name, result, decision_tensors, recorded)
        run["gates"] = {g: v.tolist() for g, v in result.gates.items()}
        run["routes"] = {r: v.tolist() for r, v in result.routes.items()}
        run["stages_run"] = result.stages_run.tolist()
    return run


def record_trace(
    export: str | os.PathLike | Chain,
    x: np.ndarray | dict,
    *,
    policies: dict | None = None,
    targets: np.ndarray | None = None,
    include_inputs: bool = False,
) -> dict:
    """Runs ``x`` through an export in sample mode and returns the trace document.

    Args:
        export: an export folder (loaded with one interpreter thread, so that the
            recorded outputs are the ones the decisions were made from) or a loaded
            `Chain`.
        x: the inputs, as for `Chain.predict`.
        policies: dict ``run name -> policy`` (a `Policy`, a dict ``exit -> rule`` or a
            policy-file path, applied over the chain's active policy; None: the active
            policy itself). Default: one run named ``"active"`` with the active policy.
        targets: optional true labels, stored for display.
        include_inputs: also store the inputs (the Android demo runs them on the phone).

    Returns:
        The trace as a dict (see the module docstring); `write_trace` saves it.

    Example (``export_dir`` written by `converters.export_stages`):

    >>> trace = record_trace(export_dir, x_test[:100], policies={  # doctest: +SKIP
    ...     "manifest": None, "strict": {"exit_1": {"kind": "max_softmax", "threshold": 0.99}}})
    >>> write_trace("golden.json", trace)  # doctest: +SKIP
    """
    chain = export if isinstance(export, Chain) else load(export, num_threads=1)
    policies = {"active": None} if policies is None else policies
    if not isinstance(policies, dict) or not policies:
        raise TraceError(
            f"`policies` must be a non-empty dict run name -> policy. Received: {policies!r}"
        )
    outputs = {s["name"]: s for stage in chain.manifest["stages"] for s in stage["outputs"]}
    stage_of = {s["name"]: stage["name"] for stage in chain.manifest["stages"] for s in stage["outputs"]}
    for ex in chain.manifest["exits"]:
        if outputs[ex["tensor"]].get("quantization") is not None:
            raise TraceError(
                f"exit {ex['name']!r}: tensor {ex['tensor']!r} is quantized; traces of "
                "quantized exits are not supported yet."
            )
    logits = chain.run_all(x, batch_size=1)
    num_samples = len(next(iter(logits.values())))
    graph = chain.manifest["version"] != 1
    decision_tensors, recorded = _recording_walk(chain, x) if graph else (None, None)
    manifest_bytes = (pathlib.Path(chain.folder) / MANIFEST_NAME).read_bytes()
    trace = {
        "format": FORMAT,
        "version": VERSION if graph else LINEAR_VERSION,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "producer": {
            "keras_dynamic": __version__,
            "numpy": np.__version__,
            "interpreter": interpreter_class()[1],
        },
        "mode": "sample",
        "samples": num_samples,
        "exits": list(chain.exit_names),
        "tensors": {
            ex["tensor"]: {"stage": stage_of[ex["tensor"]], **_encode(logits[ex["name"]])}
            for ex in chain.manifest["exits"]
        },
    }
    if graph:
        trace["stages"] = list(chain.stage_names)
        trace["recorded_stages"] = recorded.tolist()
        for tensor, values in decision_tensors.items():
            trace["tensors"].setdefault(tensor, {"stage": stage_of[tensor], **_encode(values)})
    if include_inputs:
        trace["inputs"] = {n: _encode(a) for n, a in _named_inputs(chain, x).items()}
    if targets is not None:
        targets = np.asarray(targets)
        if targets.shape != (num_samples,) or targets.dtype.kind not in "iu":
            raise TraceError(
                f"`targets` must be {num_samples} integer labels. Received: "
                f"shape {targets.shape}, dtype {targets.dtype.name}"
            )
        trace["targets"] = targets.tolist()
    try:
        trace["runs"] = [
            _run(chain, x, logits, name, p, decision_tensors, recorded)
            for name, p in policies.items()
        ]
    except ManifestError as e:
        raise TraceError(f"policies: {e}") from None
    return trace


def write_trace(path: str | os.PathLike, trace: dict) -> str | os.PathLike:
    """Writes a trace document atomically as compact JSON; returns the path."""
    atomic_write_text(path, json.dumps(trace, separators=(",", ":"), allow_nan=False) + "\n")
    return path


def read_trace(path: str | os.PathLike) -> dict:
    """Reads a trace file, checking its format and version; returns the dict."""
    try:
        trace = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TraceError(f"Cannot read trace {path!s}: {e}") from None
    if not isinstance(trace, dict) or trace.get("format") != FORMAT:
        raise TraceError(f"{path!s}: not a trace ('format' must be {FORMAT!r}).")
    version = trace.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        raise TraceError(
            f"{path!s}: unsupported trace version {version!r}; this reader reads "
            f"versions {list(VERSIONS)}."
        )
    if version == VERSION and not {"stages", "recorded_stages"} <= set(trace):
        raise TraceError(
            f"{path!s}: a version-{VERSION} trace needs 'stages' and 'recorded_stages'."
        )
    return trace


__all__ = ["FORMAT", "VERSION", "LINEAR_VERSION", "TraceError", "record_trace", "write_trace", "read_trace", "decode_array"]
