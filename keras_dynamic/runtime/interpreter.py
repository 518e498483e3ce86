"""TFLite interpreter backend selection and per-stage signature runners.

The backend is the first importable of ai_edge_litert, tflite_runtime and
tensorflow (last, and only then, because importing TensorFlow costs seconds
and is absent on edge boards).
"""

import functools

import numpy as np

from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.manifest import numpy_dtype


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


def open_interpreters(paths, *, num_threads=None, delegate=None):
    """One interpreter per distinct file: ``{relative path: Interpreter}``.

    Stages that are signatures of one file share its interpreter, hence one
    thread pool and one arena (per-file interpreters fight over the cores:
    1.4-1.8x the monolithic latency at 2 threads, against 1.06x shared).
    """
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(
            f"`num_threads` must be None or a positive int. Received: {num_threads!r}"
        )
    if delegate is None:
        delegates = None
    elif isinstance(delegate, (list, tuple)):
        delegates = list(delegate)
    else:
        delegates = [delegate]
    cls, _ = interpreter_class()
    interpreters = {}
    for relpath, real in paths.items():
        try:
            interpreters[relpath] = cls(
                model_path=str(real),
                num_threads=num_threads,
                experimental_delegates=delegates,
            )
        except (ValueError, RuntimeError) as e:
            raise ManifestError(
                f"manifest: file {relpath!r} is not a loadable TFLite model: {e}"
            ) from None
    return interpreters


def _check_details(details, specs, role, where):
    """Compares a signature's tensor details with the manifest's specs."""
    expected = {spec["name"]: spec for spec in specs}
    if set(details) != set(expected):
        raise ManifestError(
            f"{where}: signature {role}s are {sorted(details)} but the manifest "
            f"lists {sorted(expected)}."
        )
    for name, spec in expected.items():
        detail = details[name]
        shape = [int(d) for d in detail["shape_signature"]]
        batch = spec["shape"][0]
        want = [-1 if batch is None else batch] + spec["shape"][1:]
        if shape != want:
            raise ManifestError(
                f"{where}: {role} {name!r} has shape {shape} in the model file "
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
            matches = scale == 0.0
        else:
            matches = np.isclose(scale, quant["scale"], rtol=1e-6) and int(
                zero_point
            ) == int(quant["zero_point"])
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

    def call(board):
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
        return {name: get_tensor(index, subgraph) for name, index in indexed_outputs}

    return call


class StageRunner:
    """A stage's signature runner with its input/output names fixed at load.

    Calling it (or its ``run``) with the blackboard, a dict holding at least
    the stage's inputs, returns the signature's output dict.
    """

    __slots__ = ("name", "inputs", "outputs", "run", "_runner")

    def __init__(self, interpreter, stage):
        where = f"stage {stage['name']!r} (file {stage['file']!r})"
        signatures = interpreter.get_signature_list()
        if stage["signature"] not in signatures:
            raise ManifestError(
                f"{where}: signature {stage['signature']!r} is not in the model "
                f"file; it has {sorted(signatures)}."
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


__all__ = ["interpreter_class", "open_interpreters", "StageRunner"]
