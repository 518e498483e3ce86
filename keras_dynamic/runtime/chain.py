"""`load` an export and run it as a chain of stages with early exits."""

import copy
import dataclasses
import time

import numpy as np

from keras_dynamic.runtime.calibration import calibrate
from keras_dynamic.runtime.errors import InputError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.interpreter import StageRunner
from keras_dynamic.runtime.interpreter import interpreter_class
from keras_dynamic.runtime.interpreter import open_interpreters
from keras_dynamic.runtime.manifest import chain_order
from keras_dynamic.runtime.manifest import numpy_dtype
from keras_dynamic.runtime.manifest import read_manifest
from keras_dynamic.runtime.manifest import verify_files
from keras_dynamic.runtime.manifest import write_manifest
from keras_dynamic.runtime.policy import Policy
from keras_dynamic.runtime.policy import decider
from keras_dynamic.runtime.policy import fires
from keras_dynamic.runtime.policy import parse_rule
from keras_dynamic.runtime.policy import softmax

_MODES = ("batch", "sample")


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """What `Chain.predict` returns, one row per sample.

    Attributes:
        labels: ``(N,)`` int64 argmax of the exit taken.
        probabilities: ``(N, C)`` float32 softmax of the exit taken.
        exit_index: ``(N,)`` int64 index into ``exit_names``.
        exit_names: the chain's exit names, in run order.
        stage_seconds: ``(N, num_stages)`` wall time attributed to each sample
            per stage, 0 where the stage did not run for it. In batch mode a
            stage's wall time is shared equally among the samples of that call.
        latency_seconds: ``(N,)`` sum of ``stage_seconds`` over stages.
        macs: ``(N,)`` int64 multiply-accumulates actually run per sample.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    exit_index: np.ndarray
    exit_names: tuple
    stage_seconds: np.ndarray
    latency_seconds: np.ndarray
    macs: np.ndarray


class _Buffers:
    """Preallocated per-sample outputs that the stage loops write rows into.

    The loops keep the logits of the exit taken; probabilities, labels and
    MACs follow from them and the exit index in one vectorised pass at the
    end (softmax is row-wise, so this equals a softmax per exit batch).
    """

    __slots__ = ("logits", "exit_index", "stage_seconds")

    def __init__(self, n, num_classes, num_stages):
        self.logits = np.zeros((n, num_classes), np.float64)
        self.exit_index = np.full(n, -1, np.int64)
        self.stage_seconds = np.zeros((n, num_stages), np.float64)


def _dequantize(values, quant):
    """Real values of an output with manifest quantization ``quant`` (None: as is)."""
    if quant is None:
        return values
    return (values.astype(np.float32) - quant["zero_point"]) * np.float32(quant["scale"])


def load(path, *, num_threads=None, delegate=None, policy=None, verify=True):
    """Loads an export folder (or its manifest.json) as a runnable `Chain`.

    The manifest is validated, every file is checked (inside the folder, no
    symlinks, size, sha256), one interpreter is opened per distinct .tflite
    file and each stage's signature is checked against the manifest.

    Args:
        path: export folder or the path of its ``manifest.json``.
        num_threads: interpreter threads (None: the backend's default).
        delegate: a loaded delegate (e.g. from ``load_delegate``) or a list of
            them, passed to every interpreter as ``experimental_delegates``.
        policy: optional `Policy`, dict ``exit_name -> {"kind", "threshold"}``
            or policy-file path applied over the manifest's default policies.
        verify: when False, skip the sha256 check (paths and sizes are still
            checked); for large exports already verified on this device.

    Returns:
        A `Chain`.

    Example (``export_dir`` written by `converters.export_stages`):

    >>> chain = load(export_dir, num_threads=2)  # doctest: +SKIP
    >>> result = chain.predict(images)           # doctest: +SKIP
    >>> result.labels, result.exit_index         # doctest: +SKIP
    """
    folder, manifest = read_manifest(path)
    paths = verify_files(folder, manifest, check_hashes=verify)
    used = {stage["file"] for stage in manifest["stages"]}
    interpreters = open_interpreters(
        {p: paths[p] for p in used}, num_threads=num_threads, delegate=delegate
    )
    runners = {
        stage["name"]: StageRunner(interpreters[stage["file"]], stage)
        for stage in manifest["stages"]
    }
    return Chain(folder, manifest, runners, policy=policy)


class Chain:
    """A loaded export: stages run in order, samples leave at confident exits.

    Build it with `load`. Version-1 chains are linear; each stage may carry one
    exit and the last stage's exit answers for every sample that reaches it.
    """

    def __init__(self, folder, manifest, runners, *, policy=None):
        self._folder = folder
        self._manifest = manifest
        order = chain_order(manifest)
        self._runners = tuple(runners[name] for name in order)
        by_stage = {e["stage"]: e for e in manifest["exits"]}
        self._exits = tuple(by_stage[name] for name in order if name in by_stage)
        self._exit_names = tuple(e["name"] for e in self._exits)
        slots = {e["stage"]: i for i, e in enumerate(self._exits)}
        # Per stage: the index of its exit in self._exits, -1 if it has none.
        self._stage_exit = tuple(slots.get(name, -1) for name in order)
        outputs = {
            spec["name"]: spec for s in manifest["stages"] for spec in s["outputs"]
        }
        self._exit_tensors = tuple(e["tensor"] for e in self._exits)
        self._exit_quant = tuple(
            outputs[e["tensor"]].get("quantization") for e in self._exits
        )
        self._num_classes = outputs[self._exits[0]["tensor"]]["shape"][1]
        stages = {s["name"]: s for s in manifest["stages"]}
        self._cum_macs = np.cumsum([stages[n]["macs"] for n in order], dtype=np.int64)
        self._exit_macs = self._cum_macs[[order.index(e["stage"]) for e in self._exits]]
        # Tensors on the blackboard that a later stage still reads: what
        # survives when exited samples are dropped from the batch.
        self._live_after = []
        available = {spec["name"] for spec in manifest["inputs"]}
        for i, runner in enumerate(self._runners):
            available.update(runner.outputs)
            later = {name for r in self._runners[i + 1 :] for name in r.inputs}
            self._live_after.append(tuple(sorted(later & available)))
        self._input_specs = tuple(manifest["inputs"])
        # Stages exported with a static batch of 1 (the manifest's batch dim
        # is 1, not null) are fed one sample per call in every mode.
        self._static_batch = any(
            spec["shape"][0] == 1
            for s in manifest["stages"] for spec in s["inputs"] + s["outputs"]
        )
        self._rules = tuple(
            parse_rule(e.get("policy"), f"manifest: exit {e['name']!r}")
            for e in self._exits
        )
        if policy is not None:
            self.set_policy(policy)

    # ------------------------------------------------------------ properties
    @property
    def manifest(self):
        """The parsed manifest (a dict; treat as read-only)."""
        return self._manifest

    @property
    def folder(self):
        return self._folder

    @property
    def exit_names(self):
        return self._exit_names

    @property
    def stage_names(self):
        return tuple(r.name for r in self._runners)

    @property
    def input_names(self):
        return tuple(spec["name"] for spec in self._input_specs)

    @property
    def num_classes(self):
        return self._num_classes

    @property
    def total_macs(self):
        """MACs of one sample through every stage."""
        return int(self._cum_macs[-1])

    @property
    def exit_macs(self):
        """``(num_exits,)`` cumulative MACs of a sample that leaves at each exit."""
        return self._exit_macs.copy()

    @property
    def backend(self):
        """Name of the interpreter package in use."""
        return interpreter_class()[1]

    @property
    def policy(self):
        """The active `Policy` (every exit; ``None`` rules never exit early)."""
        return Policy(dict(zip(self._exit_names, self._rules)))

    # ---------------------------------------------------------------- policy
    def _merge_policy(self, policy):
        """Rules per exit slot: ``policy`` over the active ones (None: active)."""
        if policy is None:
            return self._rules
        policy = Policy.coerce(policy)
        unknown = sorted(set(policy.rules) - set(self._exit_names))
        if unknown:
            raise ManifestError(
                f"policy names unknown exit(s) {unknown}; the chain's exits are "
                f"{list(self._exit_names)}."
            )
        return tuple(
            policy.rules.get(name, rule)
            for name, rule in zip(self._exit_names, self._rules)
        )

    def set_policy(self, policy):
        """Makes ``policy`` (Policy, dict or policy-file path) the active one."""
        self._rules = self._merge_policy(policy)

    def save_policy(self, path=None):
        """Saves the active policy.

        ``path=None`` writes the thresholds into the export's manifest.json
        (atomically); a path writes a policy file (docs/MANIFEST.md) that
        ``load(..., policy=path)`` applies. Returns the path written.
        """
        if path is not None:
            self.policy.save(path)
            return path
        manifest = copy.deepcopy(self._manifest)
        rules = dict(zip(self._exit_names, self._rules))
        for ex in manifest["exits"]:
            rule = rules[ex["name"]]
            ex["policy"] = None if rule is None else rule._asdict()
        written = write_manifest(manifest, self._folder)
        self._manifest = manifest
        return written

    # ---------------------------------------------------------------- inputs
    def _coerce_input(self, value, spec):
        name = spec["name"]
        try:
            arr = np.asarray(value)
        except ValueError as e:
            raise InputError(f"input {name!r}: not an array ({e}).") from None
        expected = tuple(spec["shape"][1:])
        if arr.ndim != len(spec["shape"]) or arr.shape[1:] != expected:
            raise InputError(
                f"input {name!r}: expected shape (batch, "
                f"{', '.join(map(str, expected))}). Received: {arr.shape}"
            )
        dtype, quant = numpy_dtype(spec), spec.get("quantization")
        quantized = quant is not None and dtype.kind in "iu"
        if arr.dtype.kind == "f" and (dtype.kind == "f" or quantized):
            # Any float width is accepted: the model computes in its own dtype
            # anyway, and a quantized input is fed real values to quantize.
            with np.errstate(over="ignore", invalid="ignore"):
                cast = arr.astype(np.float32 if quantized else dtype, copy=False)
            if not np.isfinite(cast).all():
                raise InputError(
                    f"input {name!r}: contains NaN or Inf (after casting to "
                    f"{cast.dtype.name})."
                )
            if quantized:
                info = np.iinfo(dtype)
                q = np.round(cast / quant["scale"]) + quant["zero_point"]
                cast = np.clip(q, info.min, info.max).astype(dtype)
            return np.ascontiguousarray(cast)
        if dtype.kind in "iu" and arr.dtype.kind in "iu":
            info = np.iinfo(dtype)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise InputError(
                    f"input {name!r}: values outside the {dtype.name} range."
                )
            return np.ascontiguousarray(arr.astype(dtype))
        raise InputError(
            f"input {name!r}: expected {spec['dtype']}"
            f"{' (or float values to quantize)' if quantized else ''}. Received "
            f"dtype {arr.dtype.name}; cast explicitly if the values are meant."
        )

    def _prepare_inputs(self, x):
        names = self.input_names
        if isinstance(x, dict):
            missing = sorted(set(names) - set(x))
            extra = sorted(set(x) - set(names))
            if missing or extra:
                raise InputError(
                    f"inputs: expected exactly {list(names)}; missing {missing}, "
                    f"unexpected {extra}."
                )
        elif len(names) == 1:
            x = {names[0]: x}
        else:
            raise InputError(
                f"inputs: the model has several inputs {list(names)}; pass a "
                "dict name -> array."
            )
        arrays = {spec["name"]: self._coerce_input(x[spec["name"]], spec)
                  for spec in self._input_specs}
        sizes = {name: len(a) for name, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise InputError(f"inputs: batch sizes differ: {sizes}.")
        return arrays, next(iter(sizes.values()))

    def _exit_logits(self, produced, slot):
        return _dequantize(produced[self._exit_tensors[slot]], self._exit_quant[slot])

    def _chunks(self, n, batch_size):
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(
                f"`batch_size` must be None or a positive int. Received: {batch_size!r}"
            )
        if self._static_batch:
            batch_size = 1
        elif batch_size is None:
            return [(0, n)] if n else []
        return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    # ----------------------------------------------------------------- runs
    def _run(self, board, active, rules, out):
        """Runs the chain on the rows ``active`` whose tensors are in ``board``.

        Samples that exit leave the batch: the blackboard is then subset to
        the remaining rows, keeping only tensors a later stage still reads.
        Results are written only when rows leave, not after every stage.
        """
        last = len(self._runners) - 1
        # Seconds per sample of each stage run so far; every row still active
        # ran all of them, on a batch of the size at that stage.
        seconds = []
        for i, runner in enumerate(self._runners):
            start = time.perf_counter()
            produced = runner(board)
            seconds.append((time.perf_counter() - start) / len(active))
            board.update(produced)
            slot = self._stage_exit[i]
            if slot < 0 or (i != last and rules[slot] is None):
                continue
            logits = self._exit_logits(produced, slot)
            if i == last:
                leave = None
            else:
                leave = fires(rules[slot], logits)
                if not leave.any():
                    continue
                if leave.all():
                    leave = None
            taken = active if leave is None else active[leave]
            out.logits[taken] = logits if leave is None else logits[leave]
            out.exit_index[taken] = slot
            out.stage_seconds[taken, : i + 1] = seconds
            if leave is None:
                return
            stay = ~leave
            board = {name: board[name][stay] for name in self._live_after[i]}
            active = active[stay]

    def _run_samples(self, inputs, rules, out):
        """Sample mode: each sample alone at batch 1 until an exit fires.

        `_run` on a batch of one takes the same decisions; at batch 1 there
        are no rows to subset, and the per-sample Python work is the whole
        cost of chaining over the monolithic model, so this loop does only
        the stage calls, one `decider` call per deciding exit and one row
        write per output.
        """
        last = len(self._runners) - 1
        # Per stage: (index, run, exit slot, exit tensor, quantization,
        # decision or None). The terminal exit always takes the sample.
        steps = tuple(
            (i, runner.run, slot, self._exit_tensors[slot], self._exit_quant[slot],
             (lambda logits: True) if i == last else decider(rules[slot]))
            if slot >= 0 else (i, runner.run, slot, None, None, None)
            for i, (runner, slot) in enumerate(zip(self._runners, self._stage_exit))
        )
        clock = time.perf_counter
        items = tuple(inputs.items())
        for j, seconds in enumerate(out.stage_seconds):
            board = {name: a[j : j + 1] for name, a in items}
            for i, run, slot, tensor, quant, leaves in steps:
                start = clock()
                produced = run(board)
                seconds[i] = clock() - start
                if leaves is not None:
                    logits = _dequantize(produced[tensor], quant)
                    if leaves(logits):
                        break
                board.update(produced)
            out.logits[j] = logits
            out.exit_index[j] = slot

    def predict(self, x, *, mode="batch", policy=None, batch_size=None):
        """Classifies ``x``, letting each sample leave at the first exit that fires.

        Args:
            x: a numpy array (single-input models) or a dict name -> array.
                Any float dtype is cast to the model's float dtype; integer or
                string arrays for a float input, wrong shapes and NaN/Inf are
                refused with an `InputError` naming the input.
            mode: ``"batch"`` runs each stage once on the samples still in
                the chain; ``"sample"`` runs every sample alone at batch 1 (the
                edge latency case). Both take the same decisions.
            policy: optional `Policy` / dict / policy-file path for this call,
                applied over the active policy.
            batch_size: batch mode only: at most this many samples per call
                (None: all at once). Chains whose stages have a static batch
                of 1 run one sample per call whatever this says.

        Returns:
            A `PredictResult`; an empty input gives an empty result.

        Example:

        >>> result = chain.predict(images, mode="sample")  # doctest: +SKIP
        >>> result.exit_index.mean(), result.macs.mean() / chain.total_macs  # doctest: +SKIP
        """
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}. Received: {mode!r}")
        rules = self._merge_policy(policy)
        inputs, n = self._prepare_inputs(x)
        out = _Buffers(n, self._num_classes, len(self._runners))
        if mode == "batch":
            rows = np.arange(n)
            for start, stop in self._chunks(n, batch_size):
                board = {name: a[start:stop] for name, a in inputs.items()}
                self._run(board, rows[start:stop], rules, out)
        else:
            self._run_samples(inputs, rules, out)
        probabilities = softmax(out.logits).astype(np.float32)
        return PredictResult(
            labels=probabilities.argmax(axis=1).astype(np.int64),
            probabilities=probabilities,
            exit_index=out.exit_index,
            exit_names=self._exit_names,
            stage_seconds=out.stage_seconds,
            latency_seconds=out.stage_seconds.sum(axis=1),
            macs=self._exit_macs[out.exit_index],
        )

    def run_all(self, x, *, batch_size=None):
        """Runs every stage on every sample; returns ``{exit_name: (N, C) logits}``.

        Used by calibration and by the converter's parity check. Quantized
        exits are dequantized to float32.
        """
        inputs, n = self._prepare_inputs(x)
        logits = {name: np.zeros((n, self._num_classes), np.float32)
                  for name in self._exit_names}
        for start, stop in self._chunks(n, batch_size):
            board = {name: a[start:stop] for name, a in inputs.items()}
            for runner, slot in zip(self._runners, self._stage_exit):
                produced = runner(board)
                board.update(produced)
                if slot >= 0:
                    logits[self._exit_names[slot]][start:stop] = self._exit_logits(
                        produced, slot
                    )
        return logits

    def calibrate(self, x_val, y_val, *, max_accuracy_drop=None,
                  target_mean_cost=None, kind="max_softmax", confidence=None,
                  batch_size=None):
        """Chooses exit thresholds on validation data; see `calibration.calibrate`."""
        return calibrate(
            self, x_val, y_val, max_accuracy_drop=max_accuracy_drop,
            target_mean_cost=target_mean_cost, kind=kind, confidence=confidence,
            batch_size=batch_size,
        )

    def __repr__(self):
        return (
            f"Chain(stages={list(self.stage_names)}, exits={list(self._exit_names)}, "
            f"backend={self.backend!r})"
        )


__all__ = ["load", "Chain", "PredictResult"]
