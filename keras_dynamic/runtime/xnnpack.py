"""How much of a stage XNNPACK runs on the CPU, and what it leaves to TFLite's own kernels.

An op XNNPACK does not take (an int8 HARD_SWISH, a convolution whose filter is
computed at run time) runs on TFLite's reference kernel, often several times
slower, and every such op splits the stage into one more XNNPACK partition,
each a hand-off between XNNPACK and TFLite. Nothing fails: the stage is just
slower than it should be. `xnnpack_coverage` says so per signature.

How it is read: after `allocate_tensors`, the interpreter lists the
subgraph's own nodes followed by one DELEGATE node per XNNPACK partition; a
partition covers the nodes that produce its outputs from its inputs, so
walking back from each DELEGATE's outputs to its inputs finds the nodes it
replaced. The Python interpreter lists the nodes of subgraph 0 only, so the
signature of a multi-signature file is first moved to subgraph 0 of a copy of
the file (the flatbuffer schema ai-edge-litert ships; nothing else changes).
"""

import collections
import dataclasses

from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.flatbuffer import pack
from keras_dynamic.runtime.flatbuffer import tflite_schema
from keras_dynamic.runtime.interpreter import interpreter_class


@dataclasses.dataclass(frozen=True)
class XnnpackCoverage:
    """What XNNPACK runs of one signature's subgraph.

    Attributes:
        taken: ops XNNPACK runs.
        total: ops in the subgraph.
        partitions: XNNPACK partitions (DELEGATE nodes); one per run of
            consecutive ops it takes.
        left: the op names it leaves to TFLite's kernels, sorted, one entry
            per op (``("HARD_SWISH", "HARD_SWISH")``).
    """

    taken: int
    total: int
    partitions: int
    left: tuple = ()

    @property
    def complete(self) -> bool:
        """Whether XNNPACK runs every op."""
        return self.taken == self.total

    def to_dict(self) -> dict:
        """The JSON form, as `keras-dynamic inspect --json` and `bench` write it."""
        return {"taken": self.taken, "total": self.total, "partitions": self.partitions,
                "left": list(self.left)}

    def left_ops(self) -> str:
        """The ops left to TFLite's kernels, counted: ``"CONV_2D x4, HARD_SWISH"``."""
        return ", ".join(
            name if count == 1 else f"{name} x{count}"
            for name, count in collections.Counter(self.left).items()
        )

    def __str__(self) -> str:
        """``"XNNPACK runs 4 of 5 ops in 2 partitions; left to TFLite's kernels: HARD_SWISH"``."""
        line = (
            f"XNNPACK runs {self.taken} of {self.total} ops in {self.partitions} "
            f"partition{'' if self.partitions == 1 else 's'}"
        )
        return line + (f"; left to TFLite's kernels: {self.left_ops()}" if self.left else "")


def xnnpack_coverage(content: bytes, signature: str = None) -> XnnpackCoverage:
    """What XNNPACK runs of one signature of a ``.tflite`` file.

    Args:
        content: the file's bytes.
        signature: the signature key; None for a file's only signature (or
            its main subgraph where it has none).

    Returns:
        An `XnnpackCoverage`.

    Raises:
        ValueError: the file has no signature ``signature``.

    Example (``export_dir`` written by `converters.export_stages`):

    >>> import os
    >>> from keras_dynamic.runtime.xnnpack import xnnpack_coverage
    >>> with open(os.path.join(export_dir, "stages.tflite"), "rb") as f:
    ...     coverage = xnnpack_coverage(f.read(), "stage_1")
    >>> coverage.complete, coverage.left
    (True, ())
    """
    schema = tflite_schema()
    index = _subgraph_of(schema, content, signature)
    if index != 0:
        content = _with_subgraph_first(schema, content, index)
    cls, _ = interpreter_class()
    interpreter = cls(model_content=content, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter_coverage(interpreter)


def stage_coverage(contents, stages) -> dict:
    """``{stage name: XnnpackCoverage}`` of manifest ``stages`` over ``{file: bytes}``."""
    return {
        stage["name"]: xnnpack_coverage(contents[stage["file"]], stage["signature"])
        for stage in stages
    }


def interpreter_coverage(interpreter) -> XnnpackCoverage:
    """What XNNPACK runs of an allocated interpreter's subgraph 0 (its first signature)."""
    return _coverage_of(interpreter._get_ops_details())


def _subgraph_of(schema, content, signature):
    model = schema.Model.GetRootAs(content, 0)
    keys = {
        model.SignatureDefs(i).SignatureKey().decode(): model.SignatureDefs(i).SubgraphIndex()
        for i in range(model.SignatureDefsLength())
    }
    if signature is None:
        if len(keys) > 1:
            raise ValueError(
                f"the file has {len(keys)} signatures {describe(sorted(keys))}; "
                "name one with `signature`."
            )
        return next(iter(keys.values()), 0)
    if signature not in keys:
        raise ValueError(
            f"the file has no signature {signature!r}; it has {describe(sorted(keys))}."
        )
    return keys[signature]


def _with_subgraph_first(schema, content, index):
    """The model with subgraph ``index`` moved to 0, every subgraph reference renumbered."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    order = [index] + [i for i in range(len(model.subgraphs)) if i != index]
    renumbered = {old: new for new, old in enumerate(order)}
    model.subgraphs = [model.subgraphs[i] for i in order]
    for signature in model.signatureDefs or ():
        signature.subgraphIndex = renumbered[signature.subgraphIndex]
    # IF, WHILE, CALL_ONCE and StableHLO ops name the subgraphs they call.
    for subgraph in model.subgraphs:
        for op in subgraph.operators or ():
            for options in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
                for field, value in vars(options).items() if options is not None else ():
                    if field.endswith("SubgraphIndex"):
                        setattr(options, field, renumbered[value])
    return pack(model, len(content))


def _coverage_of(nodes):
    own = [n for n in nodes if n["op_name"] != "DELEGATE"]
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    producer = {int(t): n["index"] for n in own for t in n["outputs"]}
    by_index = {n["index"]: n for n in own}
    taken = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer:
                continue
            index = producer[tensor]
            if index in taken:
                continue
            taken.add(index)
            stack.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)
    left = tuple(sorted(n["op_name"] for n in own if n["index"] not in taken))
    return XnnpackCoverage(len(taken), len(own), len(delegates), left)


__all__ = ["XnnpackCoverage", "xnnpack_coverage", "stage_coverage", "interpreter_coverage"]
