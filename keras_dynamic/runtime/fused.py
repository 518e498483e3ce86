"""The fused CPU model: sample-mode predictions in one invoke per sample.

An export written with ``export_stages(..., fused_model=True)`` carries, beside
its stages, the same network as one IF-op model (manifest key ``"fused"``,
docs/MANIFEST.md). On a CPU one invoke of it runs a sample to its exit without
the chain's per-stage calls, tensor copies and thread-pool wake-ups, which
measured faster at every thread count on both benchmark networks
(BENCHMARKS.md). GPU and NPU accelerators refuse the ``IF`` op, so the
stages stay the portable form: `Chain` uses this model only where it stands
for them exactly (`Chain.engine_for`): sample mode, every stage on the CPU
interpreter, and a policy of max-softmax thresholds, which is all the IF ops
can take. Its decisions are the stages' up to float32 rounding of the
softmax (a score within ~1e-7 of a threshold may go either way).
"""

import time

import numpy as np

from keras_dynamic.runtime.errors import FileIntegrityError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.single_model import EXIT_INDEX
from keras_dynamic.runtime.single_model import NEVER
from keras_dynamic.runtime.single_model import THRESHOLDS
from keras_dynamic.runtime.single_model import VALUES
from keras_dynamic.runtime.single_model import SingleModel


class FusedModel:
    """The manifest's fused model, checked against the chain it stands for.

    Args:
        manifest: the validated manifest (with a ``"fused"`` entry).
        contents: ``{relative path: verified bytes}`` from `read_files`.
        num_threads, delegates: as for the stages' interpreters.
    """

    def __init__(self, manifest, contents, *, num_threads=None, delegates=None):
        entry = manifest["fused"]
        self.file = entry["file"]
        self.exit_names = tuple(entry["exits"])
        where = f"manifest: fused model {describe(self.file)}"
        try:
            self._model = SingleModel(
                self.file, content=contents[self.file], num_threads=num_threads,
                delegates=delegates,
            )
        except ManifestError as error:
            raise FileIntegrityError(f"{where}: {error}") from None
        self._check_signature(manifest, where)
        self._call = None
        self._set_thresholds = None
        self._inputs_call = None
        self._run_once_on_zeros(manifest, where)

    def _check_signature(self, manifest, where):
        model = self._model
        if model.kind != "conditional":
            raise ManifestError(f"{where}: has no {THRESHOLDS!r} input; it is not an IF-op model.")
        if model.num_early_exits != len(self.exit_names):
            raise ManifestError(
                f"{where}: takes {model.num_early_exits} threshold(s); the manifest lists "
                f"{len(self.exit_names)} early exit(s)."
            )
        specs = {spec["name"]: spec for spec in manifest["inputs"]}
        if set(model.input_names) != set(specs):
            raise ManifestError(
                f"{where}: inputs {list(model.input_names)}; the model's are {sorted(specs)}."
            )
        for name, spec in specs.items():
            detail = model._input_details[name]
            want = [1, *spec["shape"][1:]]
            got = [int(d) for d in detail["shape"]]
            if got != want or np.dtype(detail["dtype"]) != np.dtype(spec["dtype"]):
                raise ManifestError(
                    f"{where}: input {name!r} is {got} {np.dtype(detail['dtype'])}; the "
                    f"manifest says {want} {spec['dtype']} at batch 1."
                )

    def _run_once_on_zeros(self, manifest, where):
        zeros = {
            spec["name"]: np.zeros([1, *spec["shape"][1:]], spec["dtype"])
            for spec in manifest["inputs"]
        }
        try:
            self._model.run(zeros)
        except Exception as error:  # whatever the backend raises on a broken model
            raise FileIntegrityError(f"{where}: does not run: {describe(str(error))}") from None

    def thresholds(self, rules):
        """The IF ops' threshold vector for per-exit-slot ``rules``, or None.

        None where a rule is not a max-softmax threshold: the IF ops decide
        by nothing else, so the stages must run. A ``None`` rule never fires.
        """
        values = []
        for rule in rules[: len(self.exit_names)]:
            if rule is None:
                values.append(NEVER)
            elif rule.kind == "max_softmax":
                values.append(rule.threshold)
            else:
                return None
        return np.asarray(values, np.float32)

    def run_samples(self, inputs, thresholds, out, start, stop, exit_position):
        """Rows ``start:stop``, one invoke each; the time goes to the exit's stage.

        The thresholds are set once per call, not per sample (an input tensor
        keeps its values between invokes of a batch-1 model, which is never
        resized); per sample only the inputs are set, the model invoked and
        the exit index and values read.
        """
        if self._call is None:
            self._call = self._model.direct_call()
            self._set_thresholds = self._model.threshold_setter()
            self._inputs_call = self._model.direct_call(with_thresholds=False)
        items = tuple(inputs.items())
        call = self._inputs_call
        if self._set_thresholds is None or getattr(call, "invoke", None) is None:
            self._run_fed(self._call, items, thresholds, out, start, stop, exit_position)
            return
        self._set_thresholds(thresholds)
        invoke, fetch = call.invoke, call.fetch
        clock = time.perf_counter
        # Per sample only Python lists grow; the arrays are written once after.
        rows, slots, times = [], [], []
        board = {}
        for j in range(start, stop):
            begin = clock()
            for name, a in items:
                board[name] = a[j : j + 1]
            invoke(board)
            slots.append(fetch(EXIT_INDEX))
            rows.append(fetch(VALUES))
            times.append(clock() - begin)
        if rows:
            taken = np.concatenate(slots).astype(np.int64)
            out.values[start:stop] = np.concatenate(rows)
            out.exit_index[start:stop] = taken
            out.stage_seconds[np.arange(start, stop), np.asarray(exit_position)[taken]] = times

    @staticmethod
    def _run_fed(call, items, thresholds, out, start, stop, exit_position):
        """The same through the public call (backends without direct calls)."""
        clock = time.perf_counter
        for j in range(start, stop):
            begin = clock()
            board = {name: a[j : j + 1] for name, a in items}
            board[THRESHOLDS] = thresholds
            produced = call(board)
            slot = int(produced[EXIT_INDEX][0])
            out.values[j] = produced[VALUES][0]
            out.exit_index[j] = slot
            out.stage_seconds[j, exit_position[slot]] = clock() - begin


__all__ = ["FusedModel"]
