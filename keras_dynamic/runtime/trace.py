"""Golden traces: the stage outputs and decisions of the Python runtime, for another runtime to replay.

A trace records, for a set of inputs run through an export in sample mode (batch 1,
the edge case), the stage outputs that decisions are made of (every exit's logits for
every sample, so one trace serves several policies) and, per policy, what the Python
runtime decided: the exit taken, the label, and the score of every exit whose rule was
evaluated. The JVM core of the Android demo (``android_demo/core``) replays the recorded
outputs through its own graph walk and exit policies and must take the same decisions;
the demo app also reads a trace that carries its inputs, to run them on the phone.

Format (version 1; JSON, written compactly):

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
reached, or no rule). Decision tensors hold real values; gate and router outputs will
join ``tensors`` when the manifest gains those features.
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

FORMAT = "keras_dynamic.trace"
VERSION = 1


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
    probabilities = softmax(row)
    if rule.kind == "max_softmax":
        return float(probabilities.max())
    return float(entropy(probabilities)[0])


def _run(chain, x, logits, name, policy):
    """One policy's decisions, checked against the recorded exit logits."""
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
        # Version-1 chains are linear: a sample reaches every exit up to the one it took.
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
    return {
        "name": name,
        "policy": {n: None if r is None else r._asdict() for n, r in rules.items()},
        "exit": result.exit_index.tolist(),
        "label": result.labels.tolist(),
        "scores": scores,
    }


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
    manifest_bytes = (pathlib.Path(chain.folder) / MANIFEST_NAME).read_bytes()
    trace = {
        "format": FORMAT,
        "version": VERSION,
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
        trace["runs"] = [_run(chain, x, logits, name, p) for name, p in policies.items()]
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
    if trace.get("version") != VERSION or isinstance(trace.get("version"), bool):
        raise TraceError(
            f"{path!s}: unsupported trace version {trace.get('version')!r}; this "
            f"reader reads version {VERSION}."
        )
    return trace


__all__ = ["FORMAT", "VERSION", "TraceError", "record_trace", "write_trace", "read_trace", "decode_array"]
