"""Multiply-accumulate counts of Keras (sub-)models, from TensorFlow's profiler.

The profiler counts the float operations of the frozen inference graph at
batch 1 (convolutions and matmuls dominate; bias adds, activations and
poolings add a little). One MAC is two float operations.
"""

import contextlib
import io

import tensorflow as tf


def count_macs(model):
    """MACs of one sample through `model` (called with `training=False`)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    specs = [
        tf.TensorSpec((1, *tensor.shape[1:]), tensor.dtype)
        for tensor in model.inputs
    ]

    @tf.function
    def forward(*inputs):
        return model(list(inputs), training=False)

    frozen = convert_variables_to_constants_v2(forward.get_concrete_function(*specs))
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
