"""One .tflite run as a whole: the static model or the single conditional (IF-op) model.

The baselines the chain is measured against (`keras_dynamic.runtime.benchmark`):

* static: `converters.export_static`, one input set, one output, the final exit;
* conditional: `converters.export_conditional`, the same stages nested in IF
  ops, with an ``exit_thresholds`` input and ``values`` / ``exit_index``
  outputs.
"""

import os

import numpy as np

from keras_dynamic.runtime.errors import InputError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.interpreter import interpreter_class

THRESHOLDS = "exit_thresholds"
VALUES = "values"
EXIT_INDEX = "exit_index"
# A max-softmax threshold no probability reaches: the exit never fires.
NEVER = 2.0


class SingleModel:
    """A static or conditional .tflite behind one interface, for benchmarks.

    Args:
        path: the .tflite file (with ``content``: the name used in messages).
        num_threads: interpreter threads (None: the backend's default).
        content: the file's bytes, already read (and verified) by the caller;
            the file is then not opened again.
        delegates: optional delegates, passed as ``experimental_delegates``.

    Example (``static_path`` written by `converters.export_static`):

    >>> from keras_dynamic.runtime.single_model import SingleModel
    >>> model = SingleModel(static_path, num_threads=1)
    >>> model.kind, model.input_names
    ('static', ('image',))
    """

    def __init__(self, path, *, num_threads=None, content=None, delegates=None):
        cls, _ = interpreter_class()
        self.path = os.fspath(path)
        source = {"model_path": self.path} if content is None else {"model_content": content}
        if delegates:
            source["experimental_delegates"] = list(delegates)
        try:
            self._interpreter = cls(**source, num_threads=num_threads)
        except Exception as error:  # whatever the backend raises on a bad file
            raise ManifestError(
                f"{describe(self.path)} is not a loadable TFLite model: {describe(str(error))}"
            ) from None
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            raise ManifestError(
                f"{describe(self.path)}: expected one signature, found {sorted(signatures)}; "
                "pass the file written by export_static or export_conditional."
            )
        self._runner = self._interpreter.get_signature_runner(next(iter(signatures)))
        inputs = self._runner.get_input_details()
        outputs = self._runner.get_output_details()
        self.kind = "conditional" if THRESHOLDS in inputs else "static"
        self.input_names = tuple(sorted(n for n in inputs if n != THRESHOLDS))
        if self.kind == "conditional":
            self.num_early_exits = int(inputs[THRESHOLDS]["shape"][0])
            if set(outputs) != {VALUES, EXIT_INDEX}:
                raise ManifestError(
                    f"{describe(self.path)}: a conditional model has outputs "
                    f"{[VALUES, EXIT_INDEX]}; this one has {sorted(outputs)}."
                )
            self._values = VALUES
        else:
            self.num_early_exits = 0
            if len(outputs) != 1:
                raise ManifestError(
                    f"{describe(self.path)}: a static model has one output; this one "
                    f"has {sorted(outputs)}."
                )
            self._values = next(iter(outputs))
        self._input_details = inputs
        self._thresholds = np.full(self.num_early_exits, NEVER, np.float32)

    @property
    def batch_fixed(self):
        """True where the file takes batch 1 only (the conditional model)."""
        name = self.input_names[0]
        return int(self._input_details[name]["shape_signature"][0]) != -1

    def set_thresholds(self, policy, exit_names):
        """Sets the conditional model's thresholds from a chain `Policy`.

        Only max-softmax rules can be fed to the IF ops; ``None`` rules never
        fire.
        """
        if self.kind != "conditional":
            return
        early = exit_names[:-1]
        if len(early) != self.num_early_exits:
            raise ManifestError(
                f"{describe(self.path)} has {self.num_early_exits} early exit(s), the "
                f"chain {len(early)}: they are not the same model."
            )
        values = []
        for name in early:
            rule = policy.rules.get(name)
            if rule is not None and rule.kind != "max_softmax":
                raise ValueError(
                    f"exit {name!r}: the conditional model decides by max_softmax only; "
                    f"the policy says {rule.kind!r}."
                )
            values.append(NEVER if rule is None else rule.threshold)
        self.set_threshold_values(values)

    def set_threshold_values(self, values):
        """Sets the conditional model's thresholds, one per early exit in run order."""
        values = np.asarray(values, np.float32)
        if values.shape != (self.num_early_exits,):
            raise ValueError(
                f"{describe(self.path)} takes {self.num_early_exits} threshold(s); "
                f"received shape {values.shape}."
            )
        # A new array: a call made by `fast_call` keeps the thresholds it was made with.
        self._thresholds = values

    def _feed(self, batch):
        feed = {name: batch[name] for name in self.input_names}
        if self.kind == "conditional":
            feed[THRESHOLDS] = self._thresholds
        return feed

    def run(self, batch):
        """Runs one batch (a dict name -> array); returns ``(values, exit_index or None)``."""
        try:
            out = self._runner(**self._feed(batch))
        except ValueError as error:
            raise InputError(f"{describe(self.path)}: {describe(str(error))}") from None
        exit_index = out[EXIT_INDEX] if self.kind == "conditional" else None
        return out[self._values], exit_index

    def direct_call(self, *, with_thresholds=True):
        """A call ``call(feed) -> outputs`` without the runner's per-call checks.

        ``feed`` holds the inputs and, for the conditional model, its
        ``exit_thresholds``. The signature runner resizes and allocates on
        every call (for the IF-op model that re-prepares every branch: 6x its
        invoke at batch 1); the chain's stages use the same direct calls
        (interpreter.py `_direct_call`), which resize only when the batch
        size changes. ``with_thresholds=False``: ``feed`` holds the inputs
        only, the thresholds set apart (`threshold_setter`).
        """
        from keras_dynamic.runtime.interpreter import _direct_call

        names = self.input_names
        if self.kind == "conditional" and with_thresholds:
            names = (*names, THRESHOLDS)
        outputs = (VALUES, EXIT_INDEX) if self.kind == "conditional" else (self._values,)
        direct = _direct_call(self._runner, names, outputs)
        if direct is None:
            return lambda feed: self._runner(**feed)
        return direct

    def threshold_setter(self):
        """``set(thresholds)`` writing the conditional model's thresholds input alone.

        For a loop that invokes with `direct_call`'s ``invoke`` and feeds the
        model inputs only: the tensor keeps the values until the next
        allocation, which a batch-1 model at its own shape never needs. None
        where the backend lacks what `interpreter._direct_call` relies on.
        Allocates first, so that a later call does not wipe the values.
        """
        if self.kind != "conditional":
            return None
        try:
            wrapper = self._runner._interpreter_wrapper
            subgraph = self._runner._subgraph_index
            index = self._runner._inputs[THRESHOLDS]
            set_tensor = wrapper.SetTensor
        except (AttributeError, KeyError, TypeError):
            return None
        self.run({
            name: np.zeros(self._input_details[name]["shape"], self._input_details[name]["dtype"])
            for name in self.input_names
        })
        return lambda thresholds: set_tensor(index, thresholds, subgraph)

    def fast_call(self):
        """`direct_call` with the thresholds set now: ``call(batch) -> outputs``.

        A benchmark of a baseline must not pay what the chain avoids.
        """
        direct = self.direct_call()
        if self.kind != "conditional":
            return direct
        thresholds = self._thresholds
        return lambda batch: direct({**batch, THRESHOLDS: thresholds})


__all__ = ["SingleModel"]
