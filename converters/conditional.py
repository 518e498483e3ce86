"""`export_conditional`: a multi-exit model as ONE .tflite whose early exits are IF ops.

The baseline a user could build instead of a chain of stages: the same trained
stages, nested in `tf.cond`, so that one `invoke` runs the network up to the
first exit whose top softmax probability clears its threshold. TFLite writes
each branch as a subgraph and the condition as a builtin `IF` op. On a CPU it
saves the chain's per-stage calls; GPU and NPU delegates refuse `IF`, which is
why the product exports stages (BENCHMARKS.md, "The runtime against the single
conditional model").
"""

import os

import keras
import tensorflow as tf

from keras_dynamic.converters import checks
from keras_dynamic.converters import dynamic_conv
from keras_dynamic.converters import folders
from keras_dynamic.converters import logs
from keras_dynamic.converters import tflite
from keras_dynamic.converters.partition import LOGITS
from keras_dynamic.converters.partition import partition
from keras_dynamic.runtime.files import atomic_write_bytes

# The signature's extra input and its outputs.
THRESHOLDS = "exit_thresholds"
LOGITS_OUTPUT = "values"
EXIT_OUTPUT = "exit_index"
SIGNATURE = "serving_default"


def export_conditional(
    model: keras.Model,
    path: "str | os.PathLike",
    *,
    dynamic_conv_form: "str | None" = "auto",
    verbose: int = 1,
) -> str:
    """Converts a multi-exit `model` into one .tflite with `IF` ops at its exits.

    The file has one signature, ``serving_default``, at batch 1. Its inputs are
    the model's (named as in the manifest `export_stages` writes) plus
    ``exit_thresholds``, a float32 vector with one max-softmax threshold per
    early exit in run order (a threshold above 1 never fires), so that any
    calibrated policy runs without converting again. Its outputs are
    ``values`` (1, C), the logits (or probabilities) of the exit taken, and
    ``exit_index`` (1,) int32, that exit's index in run order. The decision is
    the chain's: exit when ``max softmax >= threshold``, the softmax computed
    in float32 by TFLite (the chain computes it in float64, so the two can
    disagree on a sample whose score lies within float32 rounding of the
    threshold).

    Args:
        model: a functional multi-exit `keras.Model` with exits only (no gates
            or routers: their branches are stages of their own, not early
            exits).
        path: the `.tflite` file to write (atomically).
        dynamic_conv_form: as in `export_stages` (default `"auto"`, so the
            baseline computes its convolutions as the stages do).
        verbose: 0 silent, 1 one line, 2 lets TensorFlow's log through.

    Returns:
        `path`.

    Example:

    >>> import os, tempfile, numpy as np, keras_dynamic as kd
    >>> model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    >>> path = kd.converters.export_conditional(
    ...     model, os.path.join(tempfile.mkdtemp(), "conditional.tflite"), verbose=0)
    >>> from ai_edge_litert.interpreter import Interpreter
    >>> runner = Interpreter(model_path=path).get_signature_runner()
    >>> out = runner(image=np.zeros((1, 16, 16, 1), "float32"),
    ...              exit_thresholds=np.zeros(2, "float32"))
    >>> int(out["exit_index"][0])  # every threshold 0: the first exit answers
    0
    """
    checks.require_tensorflow_backend("export_conditional")
    dynamic_conv.check_form(dynamic_conv_form)
    logs.check_verbose(verbose)
    with logs.captured_stderr(enabled=verbose < 2):
        model = checks.plain_model(model)
    plans = partition(model)
    check_exits_only(model, plans, "export_conditional")
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with logs.captured_stderr(enabled=verbose < 2):
        checks.check_inputs(model)
        with dynamic_conv.forms_applied(model, dynamic_conv_form):
            content = conditional_content(plans, folder)
        atomic_write_bytes(path, content)
    if verbose:
        early = sum(p.exit_name is not None for p in plans) - 1
        print(
            f"Converted model '{model.name}' with {early} early exit(s) as IF "
            f"ops to {path} ({len(content) / 1024:.1f} KiB, TFLite builtin ops only).",
            flush=True,
        )
    return path


def check_exits_only(model, plans, caller):
    """Refuses models an IF-op model cannot express: gates, routes, no early exit."""
    conditional = [p.name for p in plans if p.condition is not None]
    if conditional:
        raise ValueError(
            f"{caller} takes models whose only decisions are early exits; "
            f"model {model.name!r} has gated or routed stages {conditional}. Export it "
            "with `export_stages`, whose runtime skips those branches."
        )
    exits = [p for p in plans if p.exit_name is not None]
    if len(exits) < 2:
        raise ValueError(
            f"{caller} needs a model with at least one early exit; model "
            f"{model.name!r} has exits {[p.exit_name for p in exits]}."
        )


def conditional_content(plans, folder, *, quantize=None):
    """The IF-op model of the stages `plans` as TFLite bytes.

    `folder` receives (and loses again) the SavedModel the converter reads;
    ``quantize`` is None or ``"float16"``, as for the stages.
    """
    function, signature = _conditional_function(plans)
    archive = keras.export.ExportArchive()
    for plan in plans:
        archive.track(plan.model)
    archive.add_endpoint(SIGNATURE, function, input_signature=signature)
    with folders.staging_folder(folder) as staging:
        saved = os.path.join(staging, "saved_model")
        archive.write_out(saved, verbose=False)
        return tflite.convert_signatures(saved, [SIGNATURE], quantize=quantize)


def _conditional_function(plans):
    """``(function, input signature)``: stage after stage, each early exit a `tf.cond`."""
    exit_slots = {p.name: i for i, p in enumerate(q for q in plans if q.exit_name)}
    last = len(plans) - 1
    specs = [
        tf.TensorSpec((1, *tensor.shape[1:]), tensor.dtype, name=name)
        for name, tensor in zip(plans[0].input_names, plans[0].model.inputs)
    ]
    entry_names = list(plans[0].input_names)
    num_early = len(exit_slots) - 1

    def from_stage(index, board, thresholds):
        plan = plans[index]
        outputs = plan.model([board[n] for n in plan.input_names], training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        board = {**board, **dict(zip(plan.output_names, outputs))}
        if plan.exit_name is None:
            return from_stage(index + 1, board, thresholds)
        slot = exit_slots[plan.name]
        values = tf.cast(board[plan.output_names[0]], tf.float32)
        taken = (values, tf.constant([slot], tf.int32))
        if index == last:
            return taken
        probabilities = values if plan.exit_values != LOGITS else tf.nn.softmax(values)
        confident = tf.reduce_max(probabilities) >= thresholds[slot]
        return tf.cond(
            confident, lambda: taken, lambda: from_stage(index + 1, board, thresholds)
        )

    def run(*args):
        *inputs, thresholds = args
        values, exit_index = from_stage(0, dict(zip(entry_names, inputs)), thresholds)
        return {LOGITS_OUTPUT: values, EXIT_OUTPUT: exit_index}

    return run, [*specs, tf.TensorSpec((num_early,), tf.float32, name=THRESHOLDS)]


__all__ = ["export_conditional", "conditional_content", "check_exits_only"]
