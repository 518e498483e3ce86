"""`load` an export and run it as a chain of stages with early exits."""

import copy
import dataclasses
import os
import threading
import time
from typing import Callable
from typing import Optional
from typing import Union

import numpy as np

from keras_dynamic.runtime.accelerators import Placement
from keras_dynamic.runtime.accelerators import parse_accelerator
from keras_dynamic.runtime.accelerators import place_stages
from keras_dynamic.runtime.calibration import calibrate
from keras_dynamic.runtime.errors import InputError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import NonFiniteOutputError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.fused import FusedModel
from keras_dynamic.runtime.interpreter import build_runners
from keras_dynamic.runtime.interpreter import check_options
from keras_dynamic.runtime.interpreter import interpreter_class
from keras_dynamic.runtime.interpreter import open_interpreters
from keras_dynamic.runtime.manifest import chain_order
from keras_dynamic.runtime.manifest import numpy_dtype
from keras_dynamic.runtime.manifest import read_files
from keras_dynamic.runtime.manifest import read_manifest
from keras_dynamic.runtime.manifest import write_manifest
from keras_dynamic.runtime.policy import PATIENCE
from keras_dynamic.runtime.policy import ExitRule
from keras_dynamic.runtime.policy import Policy
from keras_dynamic.runtime.policy import decider
from keras_dynamic.runtime.policy import fires
from keras_dynamic.runtime.policy import parse_rule
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.policy import update_streak
from keras_dynamic.runtime.policy import uses_patience
from keras_dynamic.runtime.progress import check_progress
from keras_dynamic.runtime.progress import open_bar
from keras_dynamic.runtime.quantized import dequantize as _dequantize
from keras_dynamic.runtime.walk import Record
from keras_dynamic.runtime.walk import StageGraph
from keras_dynamic.runtime.walk import sample_plan
from keras_dynamic.runtime.walk import walk_batch
from keras_dynamic.runtime.walk import walk_samples
from keras_dynamic.runtime.xnnpack import stage_coverage

_MODES = ("batch", "sample")
# `PredictResult.engine`: what ran the samples.
STAGES, FUSED = "stages", "fused"
# `load` drops the fused model only where the stages time this much faster: on
# the networks of BENCHMARKS.md the two are within noise on the full path
# (where a load-time timing cannot tell them apart) and the fused model wins
# with exits (one invoke, no per-stage Python); the stages win clearly only on
# tiny networks, where the IF ops cost as much as a stage (8% on the 0.5 M-MAC
# test network).
FUSED_MARGIN = 0.05
# Sample mode advances a progress bar once per this many samples, so that the
# per-sample loop itself stays as it is.
_PROGRESS_BLOCK = 64

PathLike = Union[str, os.PathLike]
PolicyLike = Union[Policy, dict, str, os.PathLike]


def _always(logits):
    """The terminal exit's decision: it answers every sample that reaches it."""
    return True


@dataclasses.dataclass(frozen=True)
class PredictResult:
    """What `Chain.predict` returns, one row per sample.

    Attributes:
        labels: ``(N,)`` int64 argmax of the exit taken.
        probabilities: ``(N, C)`` float32 class probabilities of the exit
            taken: the softmax of its logits, or its own probabilities where
            the manifest says the exit gives probabilities.
        exit_index: ``(N,)`` int64 index into ``exit_names``.
        exit_names: the chain's exit names, in run order.
        stage_seconds: ``(N, num_stages)`` wall time attributed to each sample
            per stage, 0 where the stage did not run for it. In batch mode a
            stage's wall time is shared equally among the samples of that call.
        latency_seconds: ``(N,)`` sum of ``stage_seconds`` over stages.
        macs: ``(N,)`` int64 multiply-accumulates actually run per sample:
            the sum of the MACs of the stages that ran for it.
        stages_run: ``(N, num_stages)`` bool, which stages ran per sample
            (a stage a gate or route switched off, or one after the exit
            taken, did not).
        gates: ``{gate name: (N, groups) bool}``, each gate's decision per
            sample (False where the gate was not reached: the sample left
            earlier); empty for chains without gates.
        routes: ``{route name: (N,) int64}``, the expert each route chose,
            -1 where it was not reached; empty for chains without routes.
        engine: ``"stages"``, or ``"fused"`` where the export's fused CPU
            model ran the samples (`load`'s ``fused``): then each sample's
            whole time is in ``stage_seconds`` at its exit's stage, and
            ``stages_run`` / ``macs`` are the stages that model ran for it.
        placement: ``{stage name: Placement}``, where each stage ran
            (`Chain.placement`).
    """

    labels: np.ndarray
    probabilities: np.ndarray
    exit_index: np.ndarray
    exit_names: tuple
    stage_seconds: np.ndarray
    latency_seconds: np.ndarray
    macs: np.ndarray
    stages_run: np.ndarray
    gates: dict
    routes: dict
    engine: str = STAGES
    placement: dict = dataclasses.field(default_factory=dict)


class _Buffers:
    """Preallocated per-sample outputs that the stage loops write rows into.

    The loops keep the values (logits or probabilities) of the exit taken;
    probabilities, labels and MACs follow from them and the exit index in one
    vectorised pass at the end (softmax is row-wise, so this equals a softmax
    per exit batch).
    """

    __slots__ = ("values", "exit_index", "stage_seconds")

    def __init__(self, n, num_classes, num_stages):
        self.values = np.zeros((n, num_classes), np.float64)
        self.exit_index = np.full(n, -1, np.int64)
        self.stage_seconds = np.zeros((n, num_stages), np.float64)


def load(
    path: PathLike,
    *,
    num_threads: Optional[int] = None,
    delegate=None,
    policy: Optional[PolicyLike] = None,
    verify: bool = True,
    expected_sha256: Optional[str] = None,
    accelerator=None,
    strict_placement: bool = False,
    fused: Optional[bool] = None,
) -> "Chain":
    """Loads an export folder (or its manifest.json) as a runnable `Chain`.

    What is checked, in order: the manifest (read once, at most 4 MiB, no
    symbolic link, FIFO or device; strict UTF-8 JSON without duplicate keys;
    schema, features, tensor graph); every file it lists (inside the folder,
    no symbolic link, size, then the sha256 of the bytes read, which are the
    bytes the interpreter runs); each stage's signature against the manifest
    (names, shapes, dtypes, quantization); finally each stage runs once on
    zeros, so a file that cannot run is refused here, naming it.

    Args:
        path: export folder or the path of its ``manifest.json``.
        num_threads: interpreter threads, 1 to 1024 (None: the backend's
            default).
        delegate: a delegate loaded with the backend's ``load_delegate`` (or a
            list of them), passed to every interpreter as
            ``experimental_delegates``.
        policy: optional `Policy`, dict ``exit_name -> {"kind", "threshold"}``
            or policy-file path applied over the manifest's default policies.
        verify: when False, skip the sha256 check (paths and sizes are still
            checked); for large exports already verified on this device.
        expected_sha256: optional hex sha256 of the manifest.json bytes, kept
            apart from the export folder: the manifest is refused unless it
            matches. A manifest is not signed (whoever can write the folder can
            rewrite the files and their hashes); pinning the manifest's hash
            pins every file it lists. See `Chain.manifest_sha256`.
        accelerator: ``"cpu"`` (None: the default, the interpreter with
            XNNPACK), ``"gpu"`` or ``"npu"`` (LiteRT's `CompiledModel`
            accelerators) for every stage, or a dict stage name -> one of them.
            A stage the accelerator cannot take runs on the CPU with a logged
            warning (accelerators.py); `Chain.placement` says where each runs.
        strict_placement: raise `AcceleratorError` instead of falling back.
        fused: the export's fused CPU model (``export_stages(...,
            fused_model=True)``): None (default) loads it where the export
            carries one, every stage is asked on the CPU and no delegate is
            given, and `Chain.predict` runs sample mode on it whenever the
            policy is max-softmax thresholds (one invoke per sample; the
            stages' decisions up to float32 rounding); True requires it
            (`ManifestError` if the export has none, `ValueError` if an
            accelerator or delegate is asked, or at a `predict` whose policy
            it cannot take); False never loads it.

    Returns:
        A `Chain`.

    Raises:
        ManifestError: the manifest (or policy) is malformed or disagrees
            with the model files.
        FileIntegrityError: a file is missing, unsafe (a link, a FIFO,
            outside the folder), resized, tampered with or cannot run.
        TypeError, ValueError: an argument of `load` itself is wrong.

    Example (``export_dir`` written by `converters.export_stages`):

    >>> from keras_dynamic import runtime
    >>> chain = runtime.load(export_dir, num_threads=1)
    >>> chain.stage_names, chain.exit_names
    (('stage_1', 'stage_2', 'stage_3'), ('exit_1', 'exit_2', 'final'))
    >>> pinned = runtime.load(export_dir, expected_sha256=chain.manifest_sha256)
    """
    delegates = check_options(num_threads, delegate)
    if not isinstance(verify, bool):
        raise TypeError(f"`verify` must be a bool. Received: verify={describe(verify)}")
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"`fused` must be None, True or False. Received: {describe(fused)}")
    folder, manifest, digest = read_manifest(path, expected_sha256=expected_sha256)
    contents = read_files(folder, manifest, check_hashes=verify)
    fused_file = manifest.get("fused", {}).get("file")
    stage_contents = {k: v for k, v in contents.items() if k != fused_file}
    interpreters = open_interpreters(
        stage_contents, num_threads=num_threads, delegates=delegates
    )
    runners = build_runners(interpreters, manifest)
    if not isinstance(strict_placement, bool):
        raise TypeError(
            f"`strict_placement` must be a bool. Received: {describe(strict_placement)}"
        )
    requested = parse_accelerator(accelerator, [s["name"] for s in manifest["stages"]])
    placement = place_stages(manifest, stage_contents, runners, requested, strict_placement)
    fused_model = _open_fused(manifest, contents, fused, requested, delegates, num_threads)
    chain = Chain(folder, manifest, runners, policy=policy, manifest_sha256=digest,
                  placement=placement, fused=fused_model, fused_required=fused is True)
    if fused_model is not None and fused is None:
        chain._time_engines()
    return chain


def _open_fused(manifest, contents, fused, requested, delegates, num_threads):
    """The export's `FusedModel` where `load`'s ``fused`` asks for it, else None."""
    if fused is False:
        return None
    if "fused" not in manifest:
        if fused:
            raise ManifestError(
                "fused=True, but the export carries no fused model; export it with "
                "`export_stages(..., fused_model=True)`."
            )
        return None
    elsewhere = sorted(name for name, value in requested.items() if value != "cpu")
    if elsewhere or delegates:
        if fused:
            asked = f"stage(s) {elsewhere} on an accelerator" if elsewhere else "a delegate"
            raise ValueError(
                f"fused=True runs the fused model on the CPU interpreter, but {asked} "
                "was asked; GPU and NPU accelerators refuse its IF ops."
            )
        return None
    return FusedModel(manifest, contents, num_threads=num_threads)


class Chain:
    """A loaded export: stages run in order, samples leave at confident exits.

    Build it with `load`. Version-1 chains are linear; each stage may carry one
    exit and the last stage's exit answers for every sample that reaches it.
    Version-2 chains (gates and routes) are walked as a graph: a stage runs
    only for the samples whose gate or route chose it (see walk.py and
    docs/MANIFEST.md).

    Thread safety: a chain may be shared between threads. Its interpreters
    are not reentrant, so `predict` and `run_all` hold a lock for the whole
    call: calls from several threads run one after the other, and each gets
    exactly the answers it would get alone. The lock costs nothing measurable
    on one thread (BENCHMARKS.md, "Sharing a chain between threads"), where
    per-thread interpreters would cost a copy of every interpreter, its
    arena, its thread pool and its delegate per thread, for no more
    throughput on 2 cores. For parallel throughput over many cores, `load`
    one chain per thread. A chain is closed with `close` or a ``with`` block.
    """

    def __init__(self, folder, manifest, runners, *, policy=None, manifest_sha256=None,
                 placement=None, fused=None, fused_required=False):
        self._folder = folder
        self._fused = fused
        self._fused_required = fused_required
        # Where `fused` is None (auto), `load` times both engines and keeps the
        # fused model for sample mode only if it is the faster one here.
        self._fused_preferred = fused is not None
        self._fused_file = None if fused is None else fused.file
        self._engine_seconds = None
        self._placement = dict(placement or {
            s["name"]: Placement("cpu", "cpu", True) for s in manifest["stages"]
        })
        self._manifest = manifest
        self._manifest_sha256 = manifest_sha256
        self._lock = threading.Lock()
        self._order = tuple(chain_order(manifest))
        self._runners = tuple(runners[name] for name in self._order)
        by_stage = {e["stage"]: e for e in manifest["exits"]}
        self._exits = tuple(by_stage[name] for name in self._order if name in by_stage)
        self._exit_names = tuple(e["name"] for e in self._exits)
        slots = {e["stage"]: i for i, e in enumerate(self._exits)}
        # Per stage: the index of its exit in self._exits, -1 if it has none.
        self._stage_exit = tuple(slots.get(name, -1) for name in self._order)
        outputs = {
            spec["name"]: spec for s in manifest["stages"] for spec in s["outputs"]
        }
        self._exit_tensors = tuple(e["tensor"] for e in self._exits)
        self._exit_quant = tuple(
            outputs[e["tensor"]].get("quantization") for e in self._exits
        )
        self._exit_values = tuple(e.get("values", "logits") for e in self._exits)
        self._exit_gives_probabilities = np.array(
            [v == "probabilities" for v in self._exit_values], dtype=bool
        )
        self._any_probability_exit = bool(self._exit_gives_probabilities.any())
        self._num_classes = outputs[self._exits[0]["tensor"]]["shape"][1]
        stages = {s["name"]: s for s in manifest["stages"]}
        self._stage_macs = np.array(
            [stages[n]["macs"] for n in self._order], dtype=np.int64
        )
        self._cum_macs = np.cumsum(self._stage_macs)
        # Per exit slot, the position of its stage in the run order.
        self._exit_position = np.array(
            [self._order.index(e["stage"]) for e in self._exits], dtype=np.int64
        )
        self._exit_macs = self._cum_macs[
            [self._order.index(e["stage"]) for e in self._exits]
        ]
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
        # Chains with gates or routes (manifest version 2) are walked as a
        # graph (walk.py); linear chains keep the straight loops below.
        self._graph = (
            StageGraph(manifest, self._order, self._runners, self._stage_exit)
            if manifest["version"] != 1 else None
        )
        self._conditional = self._graph is not None
        self._check_rules(self._rules)
        if policy is not None:
            self.set_policy(policy)

    # ------------------------------------------------------------ properties
    @property
    def manifest(self) -> dict:
        """The parsed manifest (a dict; treat as read-only)."""
        return self._manifest

    @property
    def manifest_sha256(self) -> Optional[str]:
        """Hex sha256 of the manifest.json bytes that were loaded.

        Keep it apart from the export and pass it to ``load(...,
        expected_sha256=...)`` to refuse any other manifest (hence any other
        stage file) later. `save_policy` into the manifest changes it.
        """
        return self._manifest_sha256

    @property
    def placement(self) -> dict:
        """``{stage name: Placement}``: the accelerator asked for, where the stage
        runs, whether fully, and why it fell back to the CPU if it did."""
        return dict(self._placement)

    def xnnpack_coverage(self) -> dict:
        """``{stage name: XnnpackCoverage}``: what XNNPACK runs of each CPU stage.

        An op XNNPACK leaves to TFLite's own kernels (an int8 HARD_SWISH, a
        convolution with a run-time filter) runs slower and splits the stage
        into more partitions; see `keras_dynamic.runtime.xnnpack`. The stage
        files are read again and checked against the manifest's hashes; stages
        placed on a GPU or NPU are left out.

        Example:

        >>> from keras_dynamic import runtime
        >>> chain = runtime.load(export_dir)
        >>> print(chain.xnnpack_coverage()["stage_1"])
        XNNPACK runs 4 of 4 ops in 1 partition
        """
        on_cpu = [
            s for s in self._manifest["stages"] if self._placement[s["name"]].device == "cpu"
        ]
        files = {s["file"] for s in on_cpu}
        listed = [f for f in self._manifest["files"] if f["path"] in files]
        contents = read_files(self._folder, {**self._manifest, "files": listed})
        return stage_coverage(contents, on_cpu)

    @property
    def fused_file(self) -> Optional[str]:
        """The fused CPU model's file where sample mode may run on it (`load`'s
        ``fused``), else None (none in the export, not asked, or slower here)."""
        return None if self._fused is None else self._fused.file

    @property
    def folder(self):
        return self._folder

    @property
    def exit_names(self) -> tuple:
        return self._exit_names

    @property
    def exit_values(self) -> tuple:
        """Per exit, ``"logits"`` or ``"probabilities"``: what its tensor holds."""
        return self._exit_values

    @property
    def stage_names(self) -> tuple:
        return self._order

    @property
    def input_names(self) -> tuple:
        return tuple(spec["name"] for spec in self._input_specs)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def total_macs(self) -> int:
        """MACs of one sample through every stage."""
        return int(self._cum_macs[-1])

    @property
    def exit_macs(self) -> np.ndarray:
        """``(num_exits,)`` cumulative MACs of a sample that leaves at each exit."""
        return self._exit_macs.copy()

    @property
    def backend(self) -> str:
        """Name of the interpreter package in use."""
        return interpreter_class()[1]

    @property
    def policy(self) -> Policy:
        """The active `Policy` (every exit; ``None`` rules never exit early)."""
        return Policy(dict(zip(self._exit_names, self._rules)))

    @property
    def closed(self) -> bool:
        """True once `close` has run; a closed chain refuses to run."""
        return not self._runners

    # --------------------------------------------------------------- closing
    def close(self) -> None:
        """Releases the interpreters (their arenas, thread pools and model bytes).

        Waits for a call running in another thread to finish. Closing twice
        is harmless; any later `predict` or `run_all` raises `ValueError`.
        """
        with self._lock:
            self._runners = ()
            self._graph = None
            self._fused = None

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check_open(self):
        if not self._runners:
            raise ValueError(f"The chain of {self._folder} is closed.")

    # ---------------------------------------------------------------- policy
    def _merge_policy(self, policy):
        """Rules per exit slot: ``policy`` over the active ones (None: active)."""
        if policy is None:
            return self._rules
        policy = Policy.coerce(policy)
        unknown = sorted(set(policy.rules) - set(self._exit_names))
        if unknown:
            raise ManifestError(
                f"policy names unknown exit(s) {describe(unknown)}; the chain's "
                f"exits are {list(self._exit_names)}."
            )
        rules = tuple(
            policy.rules.get(name, rule)
            for name, rule in zip(self._exit_names, self._rules)
        )
        self._check_rules(rules)
        return rules

    def _check_rules(self, rules):
        # Patience compares consecutive exits of one path; in a graph with
        # gates and routes the exits a sample passes depend on the sample.
        if self._conditional and uses_patience(rules):
            raise ManifestError(
                "patience rules apply to linear chains (exits, no gates or routes); "
                f"this export ({self._folder}) has gates or routes. Use max_softmax "
                "or entropy thresholds."
            )

    def set_policy(self, policy: PolicyLike) -> None:
        """Makes ``policy`` (Policy, dict or policy-file path) the active one."""
        self._rules = self._merge_policy(policy)

    def save_policy(self, path: Optional[PathLike] = None):
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
        if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
            raise InputError(
                f"input {name!r}: a masked array with masked values; the model "
                "cannot skip them. Fill them first (e.g. `x.filled(0)`)."
            )
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise InputError(f"input {name!r}: not an array ({describe(str(e))}).") from None
        expected = tuple(spec["shape"][1:])
        if arr.ndim != len(spec["shape"]) or arr.shape[1:] != expected:
            raise InputError(
                f"input {name!r}: expected shape (batch, "
                f"{', '.join(map(str, expected))}). Received: {describe(arr.shape)}"
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
            extra = sorted(set(x) - set(names), key=repr)
            if missing or extra:
                raise InputError(
                    f"inputs: expected exactly {list(names)}; missing {missing}, "
                    f"unexpected {describe(extra)}."
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
                "`batch_size` must be None or a positive int. "
                f"Received: batch_size={describe(batch_size)}"
            )
        if self._static_batch:
            batch_size = 1
        elif batch_size is None:
            return [(0, n)] if n else []
        return [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    def _refuse_non_finite(self, values, exit_index):
        """Raises `NonFiniteOutputError` if any row of exit ``values`` is NaN/Inf."""
        if np.isfinite(values).all():
            return
        rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        names = tuple(sorted({self._exit_names[i] for i in exit_index[rows]}))
        raise NonFiniteOutputError(
            f"exit(s) {list(names)} gave NaN or Inf for {len(rows)} sample(s) "
            f"(rows {describe(rows.tolist())}): the model overflowed on these "
            "inputs (finite inputs can still overflow float32 inside it). "
            "Nothing is returned for this call; leave these samples out.",
            exit_names=names,
            rows=rows,
        )

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
        # Patience rules read every exit's top class, whatever its own rule.
        patience = uses_patience(rules)
        streak = previous = None
        for i, runner in enumerate(self._runners):
            start = time.perf_counter()
            produced = runner(board)
            seconds.append((time.perf_counter() - start) / len(active))
            board.update(produced)
            slot = self._stage_exit[i]
            if slot < 0 or (i != last and rules[slot] is None and not patience):
                continue
            logits = self._exit_logits(produced, slot)
            if patience:
                if previous is None:
                    streak, previous = np.zeros(len(active), np.int64), -1
                streak, previous = update_streak(streak, previous, logits.argmax(axis=1))
            if i == last:
                leave = None
            elif rules[slot] is None:
                continue
            else:
                leave = fires(
                    rules[slot], logits, self._exit_gives_probabilities[slot], streak
                )
                if not leave.any():
                    continue
                if leave.all():
                    leave = None
            taken = active if leave is None else active[leave]
            out.values[taken] = logits if leave is None else logits[leave]
            out.exit_index[taken] = slot
            out.stage_seconds[taken, : i + 1] = seconds
            if leave is None:
                return
            stay = ~leave
            board = {name: board[name][stay] for name in self._live_after[i]}
            active = active[stay]
            if patience:
                streak, previous = streak[stay], previous[stay]

    def _sample_steps(self, rules):
        """Per stage: (index, run, invoke, fetch, other outputs, exit slot, exit
        tensor, quantization, decision).

        The decision is None at stages without an exit (or whose exit never
        fires); the terminal exit always takes the sample. ``invoke`` and
        ``fetch`` are the halves of ``run`` (interpreter.py `_direct_call`),
        None where the backend only has the public call.
        """
        last = len(self._runners) - 1
        steps = []
        for i, (runner, slot) in enumerate(zip(self._runners, self._stage_exit)):
            invoke = getattr(runner.run, "invoke", None)
            fetch = getattr(runner.run, "fetch", None)
            if slot < 0:
                steps.append((i, runner.run, invoke, fetch, (), slot, None, None, None))
                continue
            tensor = self._exit_tensors[slot]
            if i == last:
                leaves = _always
            elif rules[slot] is not None and rules[slot].kind == PATIENCE:
                leaves = rules[slot]  # decided in `_run_samples_patience`
            else:
                leaves = decider(
                    rules[slot], self._exit_gives_probabilities[slot], self._exit_quant[slot]
                )
            others = tuple(name for name in runner.outputs if name != tensor)
            steps.append((i, runner.run, invoke, fetch, others, slot, tensor,
                          self._exit_quant[slot], leaves))
        return tuple(steps)

    def _run_samples_patience(self, inputs, steps, out, start, stop):
        """`_run_samples` where some exit decides by patience.

        Every exit reads its logits for the top-class streak (update_streak's
        rule, here in Python ints); an exit whose rule is patience leaves when
        the streak reaches its threshold, the others ask their decider.
        """
        clock = time.perf_counter
        items = tuple(inputs.items())
        for j, seconds in enumerate(out.stage_seconds[start:stop], start):
            board = {name: a[j : j + 1] for name, a in items}
            streak, previous = 0, -1
            for i, run, _, _, _, slot, tensor, quant, leaves in steps:
                begin = clock()
                produced = run(board)
                board.update(produced)
                if slot >= 0:
                    codes = produced[tensor]
                    logits = _dequantize(codes, quant)
                    label = int(logits[0].argmax())
                    streak = streak + 1 if label == previous else 0
                    previous = label
                    if leaves is not None and (
                        streak >= leaves.threshold if isinstance(leaves, ExitRule)
                        else leaves(codes)
                    ):
                        seconds[i] = clock() - begin
                        break
                seconds[i] = clock() - begin
            out.values[j] = logits
            out.exit_index[j] = slot

    def _run_samples(self, inputs, steps, out, start, stop):
        """Sample mode on rows ``start:stop``: each alone at batch 1 until an exit fires.

        `_run` on a batch of one takes the same decisions; at batch 1 there
        are no rows to subset, and the per-sample Python work is the whole
        cost of chaining over the monolithic model, so this loop does only
        the stage calls, one `decider` call per deciding exit and one row
        write per output. At a deciding exit it reads the exit's logits
        first and copies the tensors the next stages read only when the
        sample stays; a stage's time includes its decision.
        """
        clock = time.perf_counter
        items = tuple(inputs.items())
        for j, seconds in enumerate(out.stage_seconds[start:stop], start):
            board = {name: a[j : j + 1] for name, a in items}
            for i, run, invoke, fetch, others, slot, tensor, quant, leaves in steps:
                begin = clock()
                if leaves is None:
                    board.update(run(board))
                    seconds[i] = clock() - begin
                    continue
                # A quantized exit's codes are decided on as they are and
                # dequantized for the whole block below.
                if invoke is None:
                    produced = run(board)
                    logits = produced[tensor]
                    if leaves(logits):
                        seconds[i] = clock() - begin
                        break
                    board.update(produced)
                else:
                    invoke(board)
                    logits = fetch(tensor)
                    if leaves(logits):
                        seconds[i] = clock() - begin
                        break
                    for name in others:
                        board[name] = fetch(name)
                seconds[i] = clock() - begin
            out.values[j] = logits
            out.exit_index[j] = slot
        self._dequantize_rows(out, start, stop)

    def _dequantize_rows(self, out, start, stop):
        """Rows ``start:stop`` of ``out.values`` from exit codes to real values."""
        for slot, quant in enumerate(self._exit_quant):
            if quant is None:
                continue
            rows = start + np.flatnonzero(out.exit_index[start:stop] == slot)
            if rows.size:
                out.values[rows] = _dequantize(out.values[rows], quant)

    def predict(
        self,
        x,
        *,
        mode: str = "batch",
        policy: Optional[PolicyLike] = None,
        batch_size: Optional[int] = None,
        progress: Optional[bool] = None,
    ) -> PredictResult:
        """Classifies ``x``, letting each sample leave at the first exit that fires.

        Args:
            x: a numpy array (single-input models) or a dict name -> array.
                Any float dtype is cast to the model's float dtype; integer or
                string arrays for a float input, wrong shapes, NaN/Inf and
                masked arrays with masked values are refused with an
                `InputError` naming the input.
            mode: ``"batch"`` runs each stage once on the samples still in
                the chain; ``"sample"`` runs every sample alone at batch 1 (the
                edge latency case). Both take the same decisions.
            policy: optional `Policy` / dict / policy-file path for this call,
                applied over the active policy.
            batch_size: batch mode only: at most this many samples per call
                (None: all at once). Chains whose stages have a static batch
                of 1 run one sample per call whatever this says.
            progress: show a progress bar (tqdm): True, False, or None for
                one only on calls of 1,000 samples or more that run longer
                than 2 s on a terminal. In batch mode it advances per batch.

        Returns:
            A `PredictResult`; an empty input gives an empty result.

        Raises:
            InputError: an input does not fit the model.
            NonFiniteOutputError: the exit taken gave NaN or Inf for some
                samples (an `InputError` naming the exit and the rows).
            ValueError: an argument is wrong, or the chain is closed.

        Example (``export_dir`` written by `converters.export_stages`,
        ``x_val``: digit images of shape (N, 8, 8, 1)):

        >>> from keras_dynamic import runtime
        >>> chain = runtime.load(export_dir)
        >>> result = chain.predict(x_val[:100], mode="sample")
        >>> result.labels.shape, result.probabilities.shape
        ((100,), (100, 10))
        >>> result.exit_names
        ('exit_1', 'exit_2', 'final')

        A policy for one call: every sample leaves at the first exit.

        >>> open_first = {"exit_1": {"kind": "max_softmax", "threshold": 0.0}}
        >>> result = chain.predict(x_val[:100], policy=open_first)
        >>> set(result.exit_index.tolist()), bool((result.macs == chain.exit_macs[0]).all())
        ({0}, True)
        """
        if mode not in _MODES:
            raise ValueError(
                f"`mode` must be one of {_MODES}. Received: mode={describe(mode)}"
            )
        if mode == "sample" and batch_size is not None:
            raise ValueError(
                "`batch_size` applies to mode='batch' only: sample mode runs one "
                f"sample per call. Received: batch_size={describe(batch_size)}"
            )
        check_progress(progress)
        rules = self._merge_policy(policy)
        inputs, n = self._prepare_inputs(x)
        chunks = self._chunks(n, batch_size) if mode == "batch" else None
        out = _Buffers(n, self._num_classes, len(self._order))
        with self._lock:
            self._check_open()
            # Batches of one are samples: the fused model may run them.
            one_by_one = "sample" if batch_size == 1 else mode
            engine, thresholds = self._engine(one_by_one, rules)
            record = Record(n, self._graph) if self._conditional else None
            bar = open_bar(n, progress, "predict")
            try:
                if engine == FUSED:
                    self._predict_fused(inputs, n, thresholds, out, bar)
                elif mode == "batch":
                    self._predict_batches(inputs, chunks, rules, out, record, bar)
                else:
                    self._predict_samples(inputs, n, rules, out, record, bar)
            finally:
                if bar is not None:
                    bar.close()
        self._refuse_non_finite(out.values, out.exit_index)
        probabilities = softmax(out.values)
        if self._any_probability_exit:
            own = self._exit_gives_probabilities[out.exit_index]
            probabilities[own] = out.values[own]
        # The labels from float64: near-equal logits (an untrained network's)
        # round to tied float32 probabilities, whose argmax would be the first.
        labels = probabilities.argmax(axis=1).astype(np.int64)
        probabilities = probabilities.astype(np.float32)
        if record is None:
            # Linear: a sample ran every stage up to its exit's.
            stages_run = (
                np.arange(len(self._order))[None, :]
                <= self._exit_position[out.exit_index][:, None]
            )
            gates, routes = {}, {}
        else:
            stages_run, gates, routes = record.stages_run, record.gates, record.routes
        return PredictResult(
            labels=labels,
            probabilities=probabilities,
            exit_index=out.exit_index,
            exit_names=self._exit_names,
            stage_seconds=out.stage_seconds,
            latency_seconds=out.stage_seconds.sum(axis=1),
            macs=stages_run.astype(np.int64) @ self._stage_macs,
            stages_run=stages_run,
            gates=gates,
            routes=routes,
            engine=engine,
            placement=dict(self._placement),
        )

    def engine_for(self, mode: str = "sample", policy: Optional[PolicyLike] = None,
                   batch_size: Optional[int] = None) -> str:
        """What `predict` runs in ``mode`` under ``policy``: ``"fused"`` or ``"stages"``.

        The fused CPU model (`load`'s ``fused``) runs sample mode (and batch
        mode with ``batch_size=1``) where the policy is max-softmax thresholds
        (or exits that never fire); larger batches, other policies and chains
        without it run the stages.
        """
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}. Received: mode={describe(mode)}")
        one_by_one = "sample" if batch_size == 1 else mode
        return self._engine(one_by_one, self._merge_policy(policy))[0]

    def _engine(self, mode, rules):
        """``(engine, thresholds of the fused model or None)`` for one call."""
        if self._fused is None or mode != "sample":
            return STAGES, None
        thresholds = self._fused.thresholds(rules)
        if thresholds is not None:
            return FUSED, thresholds
        if self._fused_required:
            kinds = sorted({r.kind for r in rules[:-1] if r is not None})
            raise ValueError(
                f"fused=True, but the policy uses {kinds}: the fused model's IF ops "
                "decide by max_softmax thresholds only. Load with fused=None to run "
                "the stages for such a policy."
            )
        return STAGES, None

    def _time_engines(self, rounds=9, budget_seconds=0.03, max_rounds=100):
        """Times one sample through every stage on each engine; drops the slower.

        Interleaved calls on zeros after two warm-up calls each, minimum of
        each (other processes only ever add time, so the minimum is the least
        disturbed estimate of a model's own cost; medians flipped the choice
        on a busy 2-core machine): the
        path through every stage is where the per-stage calls cost the most,
        so the fused model is dropped only where the stages win there by
        `FUSED_MARGIN` on this machine (on a tiny network the IF ops' own cost
        can exceed the calls saved).
        At least ``rounds`` rounds, more until ``budget_seconds`` have passed
        (small networks: more samples against timer noise), at most
        ``max_rounds``; on the MobileNetV2 of BENCHMARKS.md about 30 ms.
        """
        zeros = {
            spec["name"]: np.zeros([1, *spec["shape"][1:]], numpy_dtype(spec))
            for spec in self._input_specs
        }
        never = (None,) * len(self._exits)
        steps = self._sample_steps(never)
        thresholds = self._fused.thresholds(never)
        out = _Buffers(1, self._num_classes, len(self._order))
        runs = {
            STAGES: lambda: self._run_samples(zeros, steps, out, 0, 1),
            FUSED: lambda: self._fused.run_samples(
                zeros, thresholds, out, 0, 1, self._exit_position
            ),
        }
        times = {name: [] for name in runs}
        clock = time.perf_counter
        began = clock()
        for i in range(max_rounds + 2):
            for name, run in runs.items():
                start = clock()
                run()
                if i >= 2:
                    times[name].append(clock() - start)
            if i >= rounds + 1 and clock() - began >= budget_seconds:
                break
        self._engine_seconds = {name: float(min(t)) for name, t in times.items()}
        self._fused_preferred = (
            self._engine_seconds[STAGES] >= (1 - FUSED_MARGIN) * self._engine_seconds[FUSED]
        )
        self._fused_file = self._fused.file
        if not self._fused_preferred:
            self._fused = None  # its interpreter and arena are not kept for nothing

    def _predict_fused(self, inputs, n, thresholds, out, bar):
        step = max(n, 1) if bar is None else _PROGRESS_BLOCK
        for start in range(0, n, step):
            stop = min(start + step, n)
            self._fused.run_samples(
                inputs, thresholds, out, start, stop, self._exit_position
            )
            if bar is not None:
                bar.update(stop - start)

    def _predict_batches(self, inputs, chunks, rules, out, record, bar):
        rows = np.arange(sum(stop - start for start, stop in chunks))
        for start, stop in chunks:
            board = {name: a[start:stop] for name, a in inputs.items()}
            if record is None:
                self._run(board, rows[start:stop], rules, out)
            else:
                self._walk(board, rows[start:stop], rules, out, record)
            if bar is not None:
                bar.update(stop - start)

    def _predict_samples(self, inputs, n, rules, out, record, bar):
        if record is None:
            steps = self._sample_steps(rules)
            loop = (
                self._run_samples_patience if uses_patience(rules) else self._run_samples
            )

            def run(start, stop):
                loop(inputs, steps, out, start, stop)
        else:
            plan = sample_plan(
                self._graph, rules, self._exit_gives_probabilities,
                self._exit_tensors, self._exit_quant,
            )

            def run(start, stop):
                walk_samples(plan, inputs, out, record, start, stop)
        if bar is None:
            run(0, n)
            return
        for start in range(0, n, _PROGRESS_BLOCK):
            stop = min(start + _PROGRESS_BLOCK, n)
            run(start, stop)
            bar.update(stop - start)

    def _walk(self, board, active, rules, out, record, collect=None):
        walk_batch(
            self._graph, board, active, rules, out, record,
            exit_logits=self._exit_logits,
            gives_probabilities=self._exit_gives_probabilities,
            collect=collect,
            live_after=self._live_after,
        )

    def run_all(
        self, x, *, batch_size: Optional[int] = None, progress: Optional[bool] = None
    ) -> dict:
        """Runs the chain with no early exit; returns ``{exit_name: (N, C) values}``.

        Every exit's values for every sample. In a chain with gates or
        routes, a stage still runs only for the samples whose gates and
        routes choose it (what Keras computes anyway, since a switched-off
        branch is multiplied by 0). Values are logits, or probabilities for
        exits whose manifest entry says ``"values": "probabilities"`` (see
        `exit_values`); quantized exits are dequantized to float32. Used by
        calibration and by the converter's parity check. ``progress`` is as
        in `predict`.

        Raises:
            NonFiniteOutputError: an exit gave NaN or Inf for some samples.
        """
        return self._run_all(x, batch_size, progress)[0]

    def _run_all(self, x, batch_size, progress):
        """``(run_all's values, (N, num_stages) bool stages run, (gates, routes))``.

        ``gates`` and ``routes`` are as in `PredictResult` (empty for a
        linear chain).
        """
        check_progress(progress)
        inputs, n = self._prepare_inputs(x)
        chunks = self._chunks(n, batch_size)
        values = [np.zeros((n, self._num_classes), np.float32) for _ in self._exit_names]
        stages_run = np.ones((n, len(self._order)), bool)
        decisions = ({}, {})
        with self._lock:
            self._check_open()
            bar = open_bar(n, progress, "run_all")
            try:
                if self._conditional:
                    record = Record(n, self._graph)
                    out = _Buffers(n, self._num_classes, len(self._order))
                    never = (None,) * len(self._exit_names)
                    rows = np.arange(n)
                for start, stop in chunks:
                    board = {name: a[start:stop] for name, a in inputs.items()}
                    if self._conditional:
                        self._walk(board, rows[start:stop], never, out, record, values)
                    else:
                        self._run_every_stage(board, values, start, stop)
                    if bar is not None:
                        bar.update(stop - start)
            finally:
                if bar is not None:
                    bar.close()
        if self._conditional:
            stages_run = record.stages_run
            decisions = (record.gates, record.routes)
        for slot, name in enumerate(self._exit_names):
            self._refuse_non_finite(values[slot], np.full(n, slot))
        return dict(zip(self._exit_names, values)), stages_run, decisions

    def _run_every_stage(self, board, values, start, stop):
        for runner, slot in zip(self._runners, self._stage_exit):
            produced = runner(board)
            board.update(produced)
            if slot >= 0:
                values[slot][start:stop] = self._exit_logits(produced, slot)

    def exit_costs(self, stages_run: np.ndarray) -> np.ndarray:
        """``(num_exits, N)`` MACs a sample has run on reaching each exit.

        ``stages_run`` is ``PredictResult.stages_run`` or what `run_all`
        walked: in a linear chain every sample's row is `exit_macs`; with
        gates and routes it counts only the stages that ran for the sample.
        """
        cumulative = np.cumsum(stages_run.astype(np.int64) * self._stage_macs, axis=1)
        return cumulative[:, self._exit_position].T

    def calibrate(self, x_val, y_val, *, max_accuracy_drop=None,
                  target_mean_cost=None, kind="max_softmax", confidence=None,
                  batch_size=None, progress=None) -> Policy:
        """Chooses exit thresholds on validation data; see `calibration.calibrate`.

        Example (``x_val``, ``y_val``: labelled digit images):

        >>> from keras_dynamic import runtime
        >>> chain = runtime.load(export_dir)
        >>> policy = chain.calibrate(x_val, y_val, max_accuracy_drop=0.02)
        >>> sorted(policy.rules) == sorted(chain.exit_names)
        True
        """
        return calibrate(
            self, x_val, y_val, max_accuracy_drop=max_accuracy_drop,
            target_mean_cost=target_mean_cost, kind=kind, confidence=confidence,
            batch_size=batch_size, progress=progress,
        )

    # ----------------------------------------------------------- description
    def _model_name(self):
        model = self._manifest.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        return name if isinstance(name, str) else None

    def _rule_text(self, slot, terminal):
        if terminal:
            return "answers every sample left"
        rule = self._rules[slot]
        if rule is None:
            return "never exits early"
        if rule.kind == PATIENCE:
            return f"patience: the {rule.threshold} exit(s) before agree"
        sign = ">=" if rule.kind == "max_softmax" else "<="
        return f"{rule.kind} {sign} {rule.threshold:.6g}"

    def _run_conditions(self):
        """Per stage, when it runs: "always" or its gate and route edges."""
        conditions = {name: [] for name in self._order}
        for stage in self._manifest["stages"]:
            for edge in stage["next"]:
                when = edge["when"]
                if when == "always":
                    conditions[edge["stage"]].append("always")
                elif "gate" in when:
                    conditions[edge["stage"]].append(f"gate {when['gate']}[{when['index']}]")
                else:
                    conditions[edge["stage"]].append(f"route {when['route']}={when['index']}")
        conditions[self._order[0]] = ["always"]
        return {
            name: "always" if "always" in c else " or ".join(c)
            for name, c in conditions.items()
        }

    def summary_text(self) -> str:
        """The table `summary` prints (also ``str(chain)``)."""
        stages = {s["name"]: s for s in self._manifest["stages"]}
        total = max(self.total_macs, 1)
        rows = [("stage", "file", "MACs", "cumulative", "exit", "values", "policy")]
        runs = self._run_conditions() if self._conditional else None
        if runs is not None:
            rows[0] += ("runs",)
        for i, name in enumerate(self._order):
            slot = self._stage_exit[i]
            has_exit = slot >= 0
            row = (
                name,
                stages[name]["file"],
                f"{stages[name]['macs']:,}",
                f"{self._cum_macs[i] / total:.1%}",
                self._exit_names[slot] if has_exit else "-",
                self._exit_values[slot] if has_exit else "-",
                self._rule_text(slot, i == len(self._order) - 1) if has_exit else "-",
            )
            rows.append(row if runs is None else row + (runs[name],))
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        table = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in rows
        ]
        name = self._model_name()
        inputs = ", ".join(
            f"{spec['name']} {spec['shape']} {spec['dtype']}"
            + (
                f" (scale {spec['quantization']['scale']:.6g}, zero point "
                f"{spec['quantization']['zero_point']}; float values are quantized)"
                if spec.get("quantization") else ""
            )
            for spec in self._input_specs
        )
        files = ", ".join(f"{f['path']} ({f['bytes']:,} bytes)" for f in self._manifest["files"])
        return "\n".join([
            f"Chain{f' {name!r}' if name else ''}: {len(self._order)} stages, "
            f"{len(self._exit_names)} exits, {self._num_classes} classes"
            f"{' (closed)' if self.closed else ''}",
            f"folder: {self._folder}",
            f"inputs: {inputs}",
            *table,
            f"total: {self.total_macs:,} MACs per sample through every stage"
            + (" (every gate on, every expert)" if self._conditional else ""),
            f"files: {files}",
            f"backend: {self.backend}",
            *self._placement_lines(),
            *self._fused_lines(),
        ])

    def _fused_lines(self):
        if self._fused_file is None:
            return []
        timed = ""
        if self._engine_seconds is not None:
            timed = (
                f" (every stage, timed at load: fused {self._engine_seconds[FUSED] * 1e6:.0f} "
                f"us, stages {self._engine_seconds[STAGES] * 1e6:.0f} us)"
            )
        if not self._fused_preferred:
            return [f"fused: {self._fused_file} not used: the stages are faster{timed}"]
        return [
            f"fused: {self._fused_file} runs sample mode under max-softmax thresholds"
            f"{timed}; the stages run the rest"
        ]

    def _placement_lines(self):
        """Where the stages run, where any was asked on an accelerator."""
        if all(p.requested == "cpu" for p in self._placement.values()):
            return []
        return [
            f"placement: {name} on {p.device}"
            + ("" if p.device == p.requested else f" (asked {p.requested}: {p.reason})")
            for name, p in self._placement.items()
        ]

    def summary(self, print_fn: Optional[Callable[[str], None]] = None) -> None:
        """Prints stages, MACs, files and their sizes, exits and their policies.

        Args:
            print_fn: called with the whole text (default: `print`).

        Example:

        >>> from keras_dynamic import runtime
        >>> runtime.load(export_dir).summary()  # doctest: +ELLIPSIS
        Chain 'digits_skip': 3 stages, 3 exits, 10 classes
        folder: ...digits_signatures
        inputs: image [None, 8, 8, 1] float32
        stage    file           MACs     cumulative  exit    values  policy
        stage_1  stages.tflite  88,837   16.2%       exit_1  logits  max_softmax >= 0.9
        stage_2  stages.tflite  227,077  57.8%       exit_2  logits  max_softmax >= 0.9
        stage_3  stages.tflite  230,829  100.0%      final   logits  answers every sample left
        total: 546,743 MACs per sample through every stage
        files: stages.tflite (... bytes)
        backend: ai_edge_litert
        """
        (print_fn or print)(self.summary_text())

    def __str__(self):
        return self.summary_text()

    def __repr__(self):
        name = self._model_name()
        return (
            f"<Chain{f' {name!r}' if name else ''} of {self._folder}: "
            f"stages={list(self._order)}, exits={list(self._exit_names)}, "
            f"total_macs={self.total_macs:,}, backend={self.backend!r}"
            f"{', closed' if self.closed else ''}>"
        )


__all__ = ["load", "Chain", "PredictResult"]
