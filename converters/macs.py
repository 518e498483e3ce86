"""The inference graph of a stage: multiply-accumulate counts and variable writes.

The profiler counts the float operations of the frozen inference graph at
batch 1 (convolutions and matmuls dominate; bias adds, activations and
poolings add a little). One MAC is two float operations. It counts the body
of a WHILE loop once, so recurrent layers are counted unrolled over their
(static) time steps.
"""

import contextlib
import io

import tensorflow as tf

from keras_dynamic.converters.batch_size import looped_recurrent_layers

# Ops that change a resource variable; a stage holding one is not a function
# of its inputs, and the TFLite converter cannot freeze it.
_WRITE_PREFIXES = ("Assign", "ResourceScatter", "ResourceApply", "ResourceStridedSliceAssign")


def trace(model):
    """The batch-1 inference graph of `model` (`training=False`), not frozen."""
    specs = [
        tf.TensorSpec((1, *tensor.shape[1:]), tensor.dtype)
        for tensor in model.inputs
    ]

    @tf.function
    def forward(*inputs):
        return model(list(inputs), training=False)

    return forward.get_concrete_function(*specs)


def variable_writers(concrete, model) -> list:
    """Names of the layers of `model` whose call writes a variable in `concrete`.

    A write is traced to its layer through the variable handle it captures;
    a write to a variable no layer owns is named by its op.
    """
    captured = {id(inner): outer for outer, inner in concrete.graph.captures}
    owners = {
        id(variable.value.handle): layer.name
        for layer in model.layers
        for variable in layer.variables
    }
    writers = set()
    for op in concrete.graph.get_operations():
        if op.type.startswith(_WRITE_PREFIXES) and op.inputs:
            handle = captured.get(id(op.inputs[0]))
            writers.add(owners.get(id(handle), f"op {op.name}"))
    return sorted(writers)


@contextlib.contextmanager
def _unrolled(layers):
    """Recurrent ``layers`` traced as unrolled loops (their ``unroll`` restored after)."""
    for layer in layers:
        layer.unroll = True
    try:
        yield
    finally:
        for layer in layers:
            layer.unroll = False


def count_macs(model, concrete=None) -> int:
    """MACs of one sample through `model`; `concrete` is its `trace` if known.

    A model with recurrent layers that loop over time is traced again with
    the loops unrolled (``concrete`` is then not used), so every time step
    is counted.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    looped = looped_recurrent_layers(model)
    if looped:
        with _unrolled(looped):
            concrete = trace(model)
    frozen = convert_variables_to_constants_v2(concrete or trace(model))
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    # The v1 profiler prints a deprecation notice per call; keep output clean.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            profile = tf.compat.v1.profiler.profile(
                graph=frozen.graph, options=options
            )
    finally:
        logger.setLevel(level)
    return int(profile.total_float_ops // 2)
