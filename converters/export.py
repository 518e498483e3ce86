"""`export_stages`: a multi-exit Keras model -> TFLite stages + manifest.json."""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

import keras_dynamic
from keras_dynamic import runtime
from keras_dynamic.converters import tflite
from keras_dynamic.converters.macs import count_macs
from keras_dynamic.converters.partition import partition
from keras_dynamic.runtime import manifest as schema
from keras_dynamic.runtime.files import sha256_file
from keras_dynamic.runtime.policy import KINDS as POLICY_KINDS

LAYOUTS = ("signatures", "files")
SIGNATURES_FILE = "stages.tflite"

# Largest |TFLite - Keras| logit difference accepted, relative to
# max(1, largest |Keras logit|). float32 kernels differ only by summation
# order (XNNPACK vs oneDNN); reduced precision gets the slack it needs.
PARITY_TOLERANCE = {None: 1e-4, "float16": 2e-2, "int8": 1.5e-1}


class ParityError(AssertionError):
    """The exported chain disagrees with the Keras model; nothing was written."""


def export_stages(
    model,
    out_dir,
    *,
    quantize=None,
    representative_data=None,
    layout="signatures",
    exit_policy="max_softmax",
    exit_threshold=0.9,
    dynamic_conv_form=None,
    parity_samples=None,
    overwrite=False,
):
    """Splits `model` at its exits and writes TFLite stages plus manifest.json.

    Every `EarlyExit` output ends a stage; the deepest output is the final
    exit. Tensors that later stages need (a residual that crosses an exit,
    say) are outputs of the stage that computes them. Stages convert with
    TFLite builtin ops only. The export is built in a temporary folder next to
    `out_dir`, checked for parity (the chained stages, run by the real TFLite
    interpreter, against the Keras model for every exit), and only then
    renamed to `out_dir`: a failed export leaves nothing behind.

    Args:
        model: a functional `keras.Model` whose outputs are `EarlyExit`
            logits (the deepest may be any classifier layer).
        out_dir: the export folder to create.
        quantize: `None` (float32), `"float16"` (float16 weights) or `"int8"`
            (int8 weights and activations with a float interface; needs
            `representative_data`).
        representative_data: array (or dict name -> array) of typical model
            inputs for int8 calibration; also used for the parity check.
        layout: `"signatures"` (default): one `stages.tflite` holding each
            stage as a signature, run by one interpreter (one thread pool and
            arena). `"files"`: one `.tflite` per stage, for when stages need
            different delegates.
        exit_policy: default policy kind of the early exits,
            `"max_softmax"` or `"entropy"`, stored in the manifest.
        exit_threshold: default threshold of that policy (calibrate later
            with `keras_dynamic.runtime`).
        dynamic_conv_form: `None`, `"mix_outputs"` or `"mix_kernels"`: the
            inference form of dynamic convolution layers during export.
            `"mix_kernels"` converts only with a static batch, so its stages
            take batch 1 (the manifest says so; the runtime then feeds one
            sample at a time).
        parity_samples: inputs for the parity check; default
            `representative_data`, else 8 seeded standard-normal samples.
        overwrite: replace an existing `out_dir`.

    Returns:
        The path of the written `manifest.json`.

    Example:

    >>> import tempfile, os, keras, keras_dynamic as kd
    >>> model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    >>> path = kd.converters.export_stages(model, os.path.join(tempfile.mkdtemp(), "out"))
    >>> os.path.basename(path)
    'manifest.json'
    """
    _validate_arguments(
        quantize, representative_data, layout, exit_policy, exit_threshold
    )
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(
            f"Export folder '{out_dir}' already exists; pass overwrite=True "
            "to replace it."
        )
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)

    with tflite.dynamic_conv_form(model, dynamic_conv_form):
        plans = partition(model)
        staging = tempfile.mkdtemp(
            dir=parent, prefix=f".{os.path.basename(out_dir)}.partial-"
        )
        try:
            files = _write_stage_files(
                plans,
                staging,
                layout,
                quantize,
                representative_data,
                model,
                dynamic_conv_form,
            )
            manifest = _manifest(
                model,
                plans,
                files,
                staging,
                quantize,
                exit_policy,
                exit_threshold,
                tflite.signature_batch_size(dynamic_conv_form),
            )
            schema.write_manifest(manifest, staging)
            samples = _parity_samples(model, parity_samples, representative_data)
            _check_parity(model, plans, staging, samples, quantize)
            _move_into_place(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return os.path.join(out_dir, "manifest.json")


def _validate_arguments(quantize, representative_data, layout, policy, threshold):
    if quantize not in tflite.QUANTIZE_OPTIONS:
        raise ValueError(
            f"`quantize` must be one of {tflite.QUANTIZE_OPTIONS}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs `representative_data`: typical inputs to "
            "calibrate the activation ranges of every stage."
        )
    if layout not in LAYOUTS:
        raise ValueError(
            f"`layout` must be one of {LAYOUTS}. Received: layout={layout!r}"
        )
    if policy not in POLICY_KINDS:
        raise ValueError(
            f"`exit_policy` must be one of {POLICY_KINDS}. "
            f"Received: exit_policy={policy!r}"
        )
    if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise ValueError(
            "`exit_threshold` must be a finite number. "
            f"Received: exit_threshold={threshold!r}"
        )


def _as_input_dict(model, data):
    """Maps model input names to arrays, accepting a bare array for one input."""
    if isinstance(data, dict):
        return {name: np.asarray(value) for name, value in data.items()}
    if len(model.inputs) != 1:
        raise ValueError(
            f"Model '{model.name}' has {len(model.inputs)} inputs: pass data "
            "as a dict keyed by input name."
        )
    return {model.inputs[0]._keras_history[0].name: np.asarray(data)}


def _stage_tensors(plans, inputs):
    """Runs the Keras stages in order and returns every named tensor.

    This gives each stage's inputs for int8 calibration.
    """
    board = dict(inputs)
    for plan in plans:
        args = [board[name] for name in plan.input_names]
        outputs = plan.model(args, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        board.update(
            {name: np.asarray(t) for name, t in zip(plan.output_names, outputs)}
        )
    return board


def _representative_dataset(plans, model, data, max_samples=200):
    inputs = {
        name: value.astype(np.float32)
        for name, value in _as_input_dict(model, data).items()
    }
    board = _stage_tensors(plans, inputs)
    count = min(max_samples, len(next(iter(inputs.values()))))

    def generate():
        for plan in plans:
            for row in range(count):
                yield plan.name, {
                    name: board[name][row : row + 1] for name in plan.input_names
                }

    return generate


def _write_stage_files(
    plans, folder, layout, quantize, representative_data, model, dynamic_conv_form
):
    """Converts the stages; returns {stage name: file name}."""
    dataset = None
    if quantize == "int8":
        dataset = _representative_dataset(plans, model, representative_data)
    endpoints = [
        (p.name, p.model, p.input_names, p.output_names) for p in plans
    ]
    layers = {p.name: p.layer_names for p in plans}
    batch_size = tflite.signature_batch_size(dynamic_conv_form)
    with tflite.saved_model_of(endpoints, batch_size) as saved_model:
        convert = lambda keys: tflite.convert_signatures(  # noqa: E731
            saved_model,
            keys,
            quantize=quantize,
            representative_dataset=_only(dataset, keys),
            stage_layers=[l for k in keys for l in layers[k]],
        )
        if layout == "signatures":
            try:
                content = convert([p.name for p in plans])
            except tflite.ConversionError:
                # Convert stage by stage to name the one that fails.
                for plan in plans:
                    convert([plan.name])
                raise
            _write(folder, SIGNATURES_FILE, content)
            return {p.name: SIGNATURES_FILE for p in plans}
        files = {}
        for plan in plans:
            files[plan.name] = f"{plan.name}.tflite"
            _write(folder, files[plan.name], convert([plan.name]))
        return files


def _only(dataset, keys):
    if dataset is None:
        return None
    return lambda: (item for item in dataset() if item[0] in keys)


def _write(folder, name, content):
    with open(os.path.join(folder, name), "wb") as file:
        file.write(content)


def _tensor_spec(name, tensor, batch_size):
    return {
        "name": name,
        "shape": [batch_size, *(int(d) for d in tensor.shape[1:])],
        "dtype": np.dtype(tensor.dtype).name,
        "quantization": None,
    }


def _manifest(model, plans, files, folder, quantize, policy, threshold, batch_size):
    input_names = [t._keras_history[0].name for t in model.inputs]
    stages, exits = [], []
    for index, plan in enumerate(plans):
        stages.append(
            {
                "name": plan.name,
                "file": files[plan.name],
                "signature": plan.name,
                "inputs": [
                    _tensor_spec(n, t, batch_size)
                    for n, t in zip(plan.input_names, plan.model.inputs)
                ],
                "outputs": [
                    _tensor_spec(n, t, batch_size)
                    for n, t in zip(plan.output_names, plan.model.outputs)
                ],
                "macs": count_macs(plan.model),
                "next": (
                    [{"stage": plans[index + 1].name, "when": "always"}]
                    if index + 1 < len(plans)
                    else []
                ),
            }
        )
        is_final = index + 1 == len(plans)
        exits.append(
            {
                "name": plan.exit_name,
                "stage": plan.name,
                "tensor": plan.output_names[0],
                "kind": "classifier",
                "policy": None
                if is_final
                else {"kind": policy, "threshold": float(threshold)},
            }
        )
    unique_files = sorted(set(files.values()))
    return {
        "format": schema.FORMAT,
        "version": schema.VERSION,
        "features": ["exits"],
        "producer": {
            "keras_dynamic": keras_dynamic.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "model": {"name": model.name},
        "quantization": quantize,
        "inputs": [
            _tensor_spec(name, tensor, batch_size)
            for name, tensor in zip(input_names, model.inputs)
        ],
        "files": [
            {
                "path": name,
                "sha256": sha256_file(os.path.join(folder, name)),
                "bytes": os.path.getsize(os.path.join(folder, name)),
            }
            for name in unique_files
        ],
        "entry": plans[0].name,
        "stages": stages,
        "exits": exits,
        "gates": [],
    }


def _parity_samples(model, parity_samples, representative_data):
    data = parity_samples if parity_samples is not None else representative_data
    if data is not None:
        return {
            name: value[:64].astype(np.float32)
            for name, value in _as_input_dict(model, data).items()
        }
    rng = np.random.default_rng(0)
    return {
        tensor._keras_history[0].name: rng.standard_normal(
            (8, *tensor.shape[1:])
        ).astype(np.float32)
        for tensor in model.inputs
    }


def _check_parity(model, plans, folder, samples, quantize):
    lite = runtime.load(folder).run_all(samples)
    ordered = [samples[t._keras_history[0].name] for t in model.inputs]
    outputs = model(ordered if len(ordered) > 1 else ordered[0], training=False)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    expected = {
        tensor._keras_history[0].name: np.asarray(value)
        for tensor, value in zip(model.outputs, outputs)
    }
    tolerance = PARITY_TOLERANCE[quantize]
    for plan in plans:
        reference = expected[plan.exit_name]
        got = lite[plan.exit_name]
        scale = max(1.0, float(np.abs(reference).max()))
        error = float(np.abs(got - reference).max()) / scale
        if not error <= tolerance:
            raise ParityError(
                f"Exit '{plan.exit_name}' ({plan.name}): TFLite logits differ "
                f"from Keras by {error:.3g} (relative to max(1, |logit|)), "
                f"above the tolerance {tolerance:g} for quantize={quantize!r}. "
                "Nothing was written."
            )


def _move_into_place(staging, out_dir):
    if not os.path.exists(out_dir):
        os.rename(staging, out_dir)
        return
    # Replace an existing export: move it aside first so that at every moment
    # out_dir is either the old complete export or the new one.
    retired = tempfile.mkdtemp(
        dir=os.path.dirname(out_dir), prefix=f".{os.path.basename(out_dir)}.old-"
    )
    os.rename(out_dir, os.path.join(retired, "export"))
    os.rename(staging, out_dir)
    shutil.rmtree(retired, ignore_errors=True)
