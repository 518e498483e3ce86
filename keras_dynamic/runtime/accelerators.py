"""Placing stages on LiteRT's GPU and NPU accelerators, with a visible CPU fallback.

``load(..., accelerator=...)`` takes ``"cpu"`` (the default: the interpreter
with XNNPACK and ``num_threads``), ``"gpu"`` or ``"npu"`` for every stage, or
a dict ``{stage name: accelerator}`` (stages not named stay on the CPU).
A GPU or NPU stage is compiled with LiteRT's `CompiledModel` for that
accelerator alone. Where the accelerator cannot start (no Vulkan loader, no
vendor library), or does not take every op of the stage (`is_fully_accelerated`
is false), the stage runs on the CPU interpreter instead and a warning is
logged on the ``keras_dynamic.runtime`` logger; with ``strict_placement=True``
`load` raises `AcceleratorError` instead. Nothing runs half-placed silently:
`Chain.placement` says where each stage runs and why.

Why the accelerator alone and not ``GPU | CPU``: LiteRT 2.3 raises for both
when the GPU cannot start (no fallback inside `CompiledModel.from_buffer`), and
a stage split between GPU and CPU pays a device synchronisation per partition;
a whole stage on the CPU is the predictable fallback.
"""

import dataclasses
import logging

import numpy as np

from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.manifest import numpy_dtype

ACCELERATORS = ("cpu", "gpu", "npu")
logger = logging.getLogger("keras_dynamic.runtime")


class AcceleratorError(RuntimeError):
    """An accelerator could not take a stage and ``strict_placement`` was asked for."""


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one stage runs: ``requested`` and ``device`` in `ACCELERATORS`,
    ``fully_accelerated`` (every op on ``device``), and why a fallback happened."""

    requested: str
    device: str
    fully_accelerated: bool
    reason: str = ""


def parse_accelerator(accelerator, stage_names):
    """``{stage name: requested accelerator}`` from `load`'s argument."""
    if accelerator is None:
        accelerator = "cpu"
    if isinstance(accelerator, str):
        requested = {name: accelerator for name in stage_names}
    elif isinstance(accelerator, dict):
        unknown = sorted(set(accelerator) - set(stage_names), key=str)
        if unknown:
            raise ValueError(
                f"`accelerator` names unknown stage(s) {describe(unknown)}; the stages "
                f"are {list(stage_names)}."
            )
        requested = {name: accelerator.get(name, "cpu") for name in stage_names}
    else:
        raise TypeError(
            "`accelerator` must be 'cpu', 'gpu', 'npu' or a dict stage name -> one of "
            f"them. Received: accelerator={describe(accelerator)}"
        )
    for name, value in requested.items():
        if value not in ACCELERATORS:
            raise ValueError(
                f"`accelerator` for stage {name!r} must be one of {ACCELERATORS}. "
                f"Received: {describe(value)}"
            )
    return requested


def _hardware_flag(accelerator):
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator

    return {"cpu": HardwareAccelerator.CPU, "gpu": HardwareAccelerator.GPU,
            "npu": HardwareAccelerator.NPU}[accelerator]


def compile_for(content, accelerator):
    """A `CompiledModel` of ``content`` for ``accelerator`` alone.

    Returns ``(model, None)``, or ``(None, reason)`` where the accelerator cannot
    start or does not take every op.
    """
    try:
        from ai_edge_litert.compiled_model import CompiledModel
    except ImportError:
        return None, "ai-edge-litert's CompiledModel is not installed"
    try:
        model = CompiledModel.from_buffer(content, hardware_accel=_hardware_flag(accelerator))
    except Exception as error:  # LiteRT raises RuntimeError with its log
        first = str(error).strip().splitlines()[:2]
        return None, f"the {accelerator} accelerator could not start or compile the file (LiteRT: {' '.join(first)})"
    if not model.is_fully_accelerated():
        return None, f"{accelerator} does not take every op of the file"
    return model, None


class CompiledStageRunner:
    """A stage run through a `CompiledModel` signature, with host numpy in and out.

    Same interface as `interpreter.StageRunner`: ``run(board)`` returns the
    signature's outputs as numpy arrays. Input and output buffers are made
    once per batch size (a new batch size resizes the inputs first).
    """

    def __init__(self, model, stage):
        self.name = stage["name"]
        self.inputs = tuple(spec["name"] for spec in stage["inputs"])
        self.outputs = tuple(spec["name"] for spec in stage["outputs"])
        self._model = model
        self._key = stage["signature"]
        self._dtypes = {spec["name"]: numpy_dtype(spec) for spec in stage["outputs"]}
        self._batch = None
        self._buffers = None

    def _prepare(self, batch):
        for name in self.inputs:
            shape = list(self._model.get_input_tensor_details(self._key)[name]["shape"])
            if shape[0] != batch:
                self._model.resize_input_tensor_by_name(self._key, name, [batch, *shape[1:]])
        ins = {n: self._model.create_input_buffer_by_name(self._key, n) for n in self.inputs}
        outs = {n: self._model.create_output_buffer_by_name(self._key, n) for n in self.outputs}
        details = self._model.get_output_tensor_details(self._key)
        shapes = {n: tuple(details[n]["shape"]) for n in self.outputs}
        self._buffers = (ins, outs, shapes)
        self._batch = batch

    def run(self, board):
        batch = len(board[self.inputs[0]])
        if batch != self._batch:
            self._prepare(batch)
        ins, outs, shapes = self._buffers
        for name in self.inputs:
            ins[name].write(np.ascontiguousarray(board[name]))
        self._model.run_by_name(self._key, ins, outs)
        return {
            name: outs[name].read(int(np.prod(shapes[name])), self._dtypes[name]).reshape(shapes[name])
            for name in self.outputs
        }

    __call__ = run


def place_stages(manifest, contents, runners, requested, strict):
    """Replaces the CPU runners of stages asked on an accelerator; returns placements.

    ``runners`` are the checked CPU interpreter runners of every stage (kept as
    the fallback). A stage moves only if its file compiles for the accelerator
    alone, fully accelerated, and its dry run gives the declared outputs.
    """
    placements = {}
    compiled = {}
    for stage in manifest["stages"]:
        name, wanted = stage["name"], requested[stage["name"]]
        if wanted == "cpu":
            placements[name] = Placement("cpu", "cpu", True)
            continue
        key = (stage["file"], wanted)
        if key not in compiled:
            compiled[key] = compile_for(contents[stage["file"]], wanted)
        model, reason = compiled[key]
        if model is not None:
            runner = CompiledStageRunner(model, stage)
            try:
                _dry_run(runner, stage)
            except Exception as error:  # whatever the accelerator raises
                reason = f"{wanted} could not run the stage: {describe(str(error))}"
            else:
                runners[name] = runner
                placements[name] = Placement(wanted, wanted, True)
                continue
        where = f"stage {name!r} (file {describe(stage['file'])})"
        if strict:
            raise AcceleratorError(f"{where}: {reason}; strict_placement=True forbids the CPU fallback.")
        logger.warning("%s: %s; it runs on the CPU instead.", where, reason)
        placements[name] = Placement(wanted, "cpu", True, reason)
    return placements


def _dry_run(runner, stage):
    board = {
        spec["name"]: np.zeros((1, *spec["shape"][1:]), numpy_dtype(spec))
        for spec in stage["inputs"]
    }
    produced = runner.run(board)
    for spec in stage["outputs"]:
        value = produced[spec["name"]]
        if value.shape != (1, *spec["shape"][1:]):
            raise ValueError(f"output {spec['name']!r} came back with shape {value.shape}")


__all__ = [
    "ACCELERATORS",
    "AcceleratorError",
    "Placement",
    "parse_accelerator",
    "place_stages",
    "CompiledStageRunner",
]
