"""TFLite interpreter backend selection and per-stage signature runners.

The backend is the first importable of ai_edge_litert, tflite_runtime and
tensorflow (last, and only then, because importing TensorFlow costs seconds
and is absent on edge boards).
"""

import functools
import sys

import numpy as np

from keras_dynamic.runtime.errors import FileIntegrityError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.manifest import numpy_dtype

# More interpreter threads than any machine has cores only costs memory and
# wake-ups; far larger counts (10**5) crash the thread pool at exit.
MAX_THREADS = 1024
# Relative tolerance on a quantization scale: the manifest stores the
# float32 scale of the file as a JSON number.
_SCALE_RTOL = 1e-6


@functools.cache
def interpreter_class():
    """Returns ``(Interpreter class, backend name)`` of the first available backend."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf
    except ImportError:
        raise ImportError(
            "keras_dynamic.runtime needs a TFLite interpreter: install "
            "`ai-edge-litert` (or `tflite-runtime`, or `tensorflow`)."
        ) from None
    return tf.lite.Interpreter, "tensorflow"


def check_options(num_threads, delegate):
    """Validates `load`'s ``num_threads`` and ``delegate``; returns the delegate list."""
    if num_threads is not None and (
        isinstance(num_threads, bool)
        or not isinstance(num_threads, int)
        or not 1 <= num_threads <= MAX_THREADS
    ):
        raise ValueError(
            f"`num_threads` must be None or an int in [1, {MAX_THREADS}]. "
            f"Received: num_threads={describe(num_threads)}"
        )
    if delegate is None:
        return None
    delegates = list(delegate) if isinstance(delegate, (list, tuple)) else [delegate]
    cls, backend = interpreter_class()
    delegate_type = getattr(sys.modules[cls.__module__], "Delegate", None)
    for item in delegates:
        if delegate_type is not None and not isinstance(item, delegate_type):
            raise TypeError(
                "`delegate` must be a delegate loaded with "
                f"`{backend}.interpreter.load_delegate(library_path)` (or a list "
                f"of them). Received: delegate={describe(delegate)}"
            )
    return delegates


def open_interpreters(contents, *, num_threads=None, delegates=None):
    """One interpreter per distinct file: ``{relative path: Interpreter}``.

    ``contents`` maps each file to its verified bytes, which the interpreter
    runs as they are (it never opens the file again). Stages that are
    signatures of one file share its interpreter, hence one thread pool and
    one arena (per-file interpreters fight over the cores: 1.4-1.8x the
    monolithic latency at 2 threads, against 1.06x shared).
    """
    cls, _ = interpreter_class()
    interpreters = {}
    for relpath, content in contents.items():
        try:
            interpreters[relpath] = cls(
                model_content=content,
                num_threads=num_threads,
                experimental_delegates=delegates,
            )
        except Exception as e:  # whatever the backend raises on a bad model
            raise FileIntegrityError(
                f"manifest: file {describe(relpath)} is not a loadable TFLite "
                f"model: {describe(str(e))}"
            ) from None
    return interpreters


def _check_details(details, specs, role, where):
    """Compares a signature's tensor details with the manifest's specs."""
    expected = {spec["name"]: spec for spec in specs}
    if set(details) != set(expected):
        raise ManifestError(
            f"{where}: signature {role}s are {describe(sorted(details))} but the "
            f"manifest lists {describe(sorted(expected))}."
        )
    for name, spec in expected.items():
        detail = details[name]
        shape = [int(d) for d in detail["shape_signature"]]
        batch = spec["shape"][0]
        want = [-1 if batch is None else batch] + spec["shape"][1:]
        if shape != want:
            raise ManifestError(
                f"{where}: {role} {name!r} has shape {describe(shape)} in the model file "
                f"(batch dim -1 for the manifest's null) but the manifest says "
                f"{spec['shape']}."
            )
        if np.dtype(detail["dtype"]) != numpy_dtype(spec):
            raise ManifestError(
                f"{where}: {role} {name!r} is {np.dtype(detail['dtype']).name} in "
                f"the model file but the manifest says {spec['dtype']}."
            )
        scale, zero_point = detail["quantization"]
        quant = spec.get("quantization")
        if quant is None:
            # The file says float (scale 0): exactly, no tolerance.
            matches = scale == 0.0
        else:
            listed = float(quant["scale"])
            matches = (
                scale != 0.0
                and abs(scale - listed) <= _SCALE_RTOL * listed
                and int(zero_point) == int(quant["zero_point"])
            )
        if not matches:
            raise ManifestError(
                f"{where}: {role} {name!r} has quantization "
                f"(scale={scale}, zero_point={zero_point}) in the model file but "
                f"the manifest says {quant!r}."
            )


def _direct_call(runner, inputs, outputs):
    """The signature call without the runner's per-call resize and allocate.

    `SignatureRunner.__call__` resizes every input (building a shape array),
    re-allocates and builds dicts on each call: about 2 us of a batch-1 stage
    that invokes in a few. Here the inputs are set straight away; only when
    ``SetTensor`` refuses them (a new batch size, or nothing allocated yet)
    are they resized, the subgraph allocated and the inputs set again. A
    signature's subgraph belongs to one stage (output tensor names are
    unique, so two stages cannot name the same signature), so nothing else
    resizes it between calls. ``GetTensor`` copies: outputs kept on the
    blackboard survive later invokes.

    The call also carries ``invoke(board)`` and ``fetch(name)``, the two
    halves: the sample loop fetches an exit's logits first and copies the
    tensors handed on to the next stage only when the sample does not leave
    (a feature map copy is several microseconds of a batch-1 stage). An
    output stays readable until the next invoke of the same subgraph.

    Returns None where the runner lacks the private attributes this relies on
    (other backends or versions): the public call is used then.
    """
    try:
        wrapper = runner._interpreter_wrapper
        subgraph = runner._subgraph_index
        output_indices = dict(runner._outputs)
        indexed_inputs = tuple((name, runner._inputs[name]) for name in inputs)
        indexed_outputs = tuple((name, output_indices[name]) for name in outputs)
        resize, allocate = wrapper.ResizeInputTensor, wrapper.AllocateTensors
        set_tensor, invoke, get_tensor = wrapper.SetTensor, wrapper.Invoke, wrapper.GetTensor
    except (AttributeError, KeyError, TypeError):
        return None

    def invoke_with(board):
        try:
            for name, index in indexed_inputs:
                set_tensor(index, board[name], subgraph)
        except ValueError:
            # A dtype error survives the resize and is raised by the retry.
            for name, index in indexed_inputs:
                resize(index, np.array(board[name].shape, np.int32), False, subgraph)
            allocate(subgraph)
            for name, index in indexed_inputs:
                set_tensor(index, board[name], subgraph)
        invoke(subgraph)

    def call(board):
        invoke_with(board)
        return {name: get_tensor(index, subgraph) for name, index in indexed_outputs}

    def fetch(name):
        return get_tensor(output_indices[name], subgraph)

    call.invoke = invoke_with
    call.fetch = fetch
    return call


class StageRunner:
    """A stage's signature runner with its input/output names fixed at load.

    Calling it (or its ``run``) with the blackboard, a dict holding at least
    the stage's inputs, returns the signature's output dict.
    """

    __slots__ = ("name", "inputs", "outputs", "run", "_runner")

    def __init__(self, interpreter, stage, where):
        signatures = interpreter.get_signature_list()
        if stage["signature"] not in signatures:
            raise ManifestError(
                f"{where}: signature {stage['signature']!r} is not in the model "
                f"file; it has {describe(sorted(signatures))}."
            )
        runner = interpreter.get_signature_runner(stage["signature"])
        _check_details(runner.get_input_details(), stage["inputs"], "input", where)
        _check_details(runner.get_output_details(), stage["outputs"], "output", where)
        self.name = stage["name"]
        self.inputs = tuple(spec["name"] for spec in stage["inputs"])
        self.outputs = tuple(spec["name"] for spec in stage["outputs"])
        self._runner = runner
        self.run = _direct_call(runner, self.inputs, self.outputs) or self._public_call

    def __call__(self, board):
        return self.run(board)

    def _public_call(self, board):
        return self._runner(**{name: board[name] for name in self.inputs})

    def dry_run(self, stage, where):
        """Runs the stage once on zeros of its declared inputs (batch 1).

        Checks that every output comes back with its declared shape and dtype.
        """
        board = {
            spec["name"]: np.zeros((1, *spec["shape"][1:]), numpy_dtype(spec))
            for spec in stage["inputs"]
        }
        produced = self.run(board)
        for spec in stage["outputs"]:
            value = produced[spec["name"]]
            expected = (1, *spec["shape"][1:])
            if value.shape != expected or value.dtype != numpy_dtype(spec):
                raise FileIntegrityError(
                    f"{where}: output {spec['name']!r} came back as "
                    f"{value.dtype.name} {describe(value.shape)} from zeros at batch "
                    f"1, not {spec['dtype']} {expected}."
                )


def build_runners(interpreters, manifest):
    """A checked and dry-run `StageRunner` per stage: ``{stage name: runner}``.

    Each stage runs once at load on zeros of its declared input shapes, so a
    file that passes the hash check but cannot run (corrupted, then
    rehashed; or not written by `export_stages`) is refused here, naming
    it, rather than at the first `predict`. It also allocates the batch-1
    tensors the sample mode uses.
    """
    runners = {}
    for stage in manifest["stages"]:
        where = f"stage {stage['name']!r} (file {describe(stage['file'])})"
        try:
            runner = StageRunner(interpreters[stage["file"]], stage, where)
            runner.dry_run(stage, where)
        except ManifestError:
            raise
        except Exception as e:  # whatever the interpreter raises on a bad model
            raise FileIntegrityError(
                f"{where}: the model file cannot run this stage "
                f"({type(e).__name__}: {describe(str(e))}); it is corrupt or was "
                "not written for this manifest."
            ) from None
        runners[stage["name"]] = runner
    return runners


__all__ = [
    "MAX_THREADS",
    "interpreter_class",
    "check_options",
    "open_interpreters",
    "build_runners",
    "StageRunner",
]
