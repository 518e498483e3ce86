"""`export_stages`: a multi-exit Keras model -> TFLite stages + manifest.json."""

import os

import keras
import numpy as np
import tensorflow as tf

import keras_dynamic
from keras_dynamic import runtime
from keras_dynamic.converters import batch_size as batch_sizes
from keras_dynamic.converters import checks
from keras_dynamic.converters import dynamic_conv
from keras_dynamic.converters import folders
from keras_dynamic.converters import fused
from keras_dynamic.converters import int8_forms
from keras_dynamic.converters import interfaces
from keras_dynamic.converters import keep_float as keep_float_rule
from keras_dynamic.converters import logs
from keras_dynamic.converters import parity
from keras_dynamic.converters import requantize
from keras_dynamic.converters import samples
from keras_dynamic.converters import tflite
from keras_dynamic.converters.macs import count_macs
from keras_dynamic.converters.parity import ParityError
from keras_dynamic.converters.partition import PROBABILITIES
from keras_dynamic.converters.partition import exit_names
from keras_dynamic.converters.partition import input_names
from keras_dynamic.converters.partition import partition
from keras_dynamic.runtime import manifest as schema
from keras_dynamic.runtime.files import atomic_write_bytes
from keras_dynamic.runtime.files import sha256_file
from keras_dynamic.runtime.policy import KINDS as POLICY_KINDS
from keras_dynamic.runtime.xnnpack import stage_coverage

LAYOUTS = ("signatures", "files")
SIGNATURES_FILE = "stages.tflite"
# The manifest feature that marks exits whose tensor holds probabilities.
PROBABILITY_FEATURE = "probability_exits"
# Parity samples taken from `parity_samples` / `representative_data`.
MAX_PARITY_SAMPLES = 64
# Lines of output of a verbose=1 export: partition, MACs, convert, parity, done.
_STEPS = 5


def export_stages(
    model: keras.Model,
    out_dir: "str | os.PathLike",
    *,
    quantize: "str | None" = None,
    representative_data=None,
    interface: "str | None" = None,
    keep_float=None,
    layout: str = "signatures",
    exit_policy: str = "max_softmax",
    exit_threshold: float = 0.9,
    dynamic_conv_form: "str | None" = "auto",
    parity_samples=None,
    fused_model: bool = False,
    overwrite: bool = False,
    verbose: int = 1,
) -> str:
    """Splits `model` at its exits and writes TFLite stages plus manifest.json.

    Every `EarlyExit` output ends a stage; the deepest output is the final
    exit. Tensors that later stages need (a residual that crosses an exit,
    say) are outputs of the stage that computes them. Stages convert with
    TFLite builtin ops only. The export is built in a staging folder next to
    `out_dir`, checked for parity (the chained stages, run by the real TFLite
    interpreter in batch and sample mode, against the Keras model for every
    exit), and only then renamed to `out_dir`: a failed or killed export
    leaves no `out_dir` and no half-written one (the next export removes a
    killed one's staging folder).

    Args:
        model: a functional `keras.Model` whose outputs (a list, or a dict
            name -> exit) are `EarlyExit` logits, except the deepest, which may
            be any classifier layer, softmax-activated or not. Exits are named
            after the dict keys, else after their layers. A mixed_float16 model
            is exported as a float32 copy with the same weights.
        out_dir: the export folder to create.
        quantize: `None` (float32), `"float16"` (float16 weights) or `"int8"`
            (int8 weights and activations; needs `representative_data`).
        representative_data: array (or dict input name -> array) of typical
            model inputs for int8 calibration, in the inputs' own dtypes
            (float values are cast to an integer input's dtype only when they
            are whole numbers in its range); also the default parity samples.
        interface: with `quantize="int8"`, the dtype of every stage's inputs
            and outputs: `"int8"` (the default there: tensors cross the cuts
            as integers, with one scale and zero point that the producer and
            every consumer share, so the runtime hands them on without
            requantizing; the manifest records each scale and zero point,
            the runtime quantizes a float model input once and dequantizes
            exit logits for the policy only), `"uint8"` (the same in uint8,
            for delegates that want it) or `"float"` (float32 interfaces,
            each stage quantizing and dequantizing inside). Other exports
            are `"float"` (the default there).
        keep_float: with `quantize="int8"`, ops to leave in float32 inside
            the int8 stages, by rule: None (default: every op int8, as
            integer-only NPU and DSP delegates need), or one or a sequence
            of `"single_channel_input"` (the convolutions of a
            single-channel model input and their residual ADD) and
            `"hard_swish"` (every HARD_SWISH), ops that XNNPACK runs slower
            in int8 than in float32. The stage interfaces stay as
            `interface` says. See `keras_dynamic.converters.keep_float`.
        layout: `"signatures"` (default): one `stages.tflite` holding each
            stage as a signature, run by one interpreter (one thread pool and
            arena). `"files"`: one `.tflite` per stage, for when stages need
            different delegates.
        exit_policy: default policy kind of the early exits,
            `"max_softmax"` or `"entropy"`, stored in the manifest.
        exit_threshold: default threshold of that policy (calibrate later
            with `keras_dynamic.runtime`).
        dynamic_conv_form: the inference form of the dynamic convolutions
            during export. `"auto"` (default) picks the fastest form per
            layer that converts for this export (`"patch_matmul"` for full
            convolutions, `"mix_outputs"` for depthwise ones and for int8;
            the rule and its measurements are in
            `keras_dynamic.converters.dynamic_conv` and BENCHMARKS.md);
            `"mix_outputs"`, `"mix_kernels"` or `"patch_matmul"` sets that
            form on every layer; `None` keeps each layer's own. A
            `"mix_kernels"` layer converts only with a static batch, so its
            stages take batch 1 (the manifest says so; the runtime then
            feeds one sample at a time).
        parity_samples: inputs for the parity check (at most 64 are used);
            default `representative_data`, else 8 seeded random samples per
            input: standard normal for float inputs; for integer inputs
            uniform over the `input_dim` of the Embedding they feed, else over
            the whole range of an 8-bit dtype, else over [0, 256).
        fused_model: also write ``fused.tflite``, the same stages as ONE model
            whose early exits are IF ops (`export_conditional`), listed in
            the manifest's ``"fused"`` entry and checked for parity down every
            exit path. The runtime runs it for sample-mode predictions on the
            CPU under max-softmax thresholds, where one invoke per sample
            beats the per-stage calls (BENCHMARKS.md), and the stages
            everywhere else (batch mode, accelerators, other policies). Float32
            and float16 exports of models whose only decisions are early exits.
        overwrite: replace `out_dir` if it is a previous export (a folder
            holding a keras_dynamic manifest.json and the files it lists);
            anything else at `out_dir` is refused, never deleted.
        verbose: 0 prints nothing; 1 (default) one line per step (partition,
            MACs, conversion, parity, done) and a progress bar on a terminal.
            At 0 and 1 TensorFlow's, the converter's and the interpreter's
            log (written to file descriptor 2) is hidden; an error of a
            failed export notes how many lines were. 2 adds details and lets
            that log through.

    Returns:
        The path of the written `manifest.json`.

    Example:

    >>> import tempfile, os, keras, keras_dynamic as kd
    >>> model = kd.models.multi_exit_cnn(input_shape=(16, 16, 1), num_classes=4)
    >>> path = kd.converters.export_stages(
    ...     model, os.path.join(tempfile.mkdtemp(), "out"), verbose=0)
    >>> os.path.basename(path)
    'manifest.json'
    """
    checks.require_tensorflow_backend("export_stages")
    _validate_arguments(
        quantize, representative_data, layout, exit_policy, exit_threshold, overwrite
    )
    interface = _check_interface(interface, quantize)
    keep_float = keep_float_rule.rules_of(keep_float, quantize)
    dynamic_conv.check_form(dynamic_conv_form)
    fused.check_options(fused_model, quantize)
    logs.check_verbose(verbose)
    out_dir = os.path.abspath(os.fspath(out_dir))
    folders.check_destination(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with logs.captured_stderr(enabled=verbose < 2) as log, logs.progress(
        verbose, _STEPS, "export"
    ) as progress:
        try:
            _export(
                model,
                out_dir,
                quantize=quantize,
                representative_data=representative_data,
                interface=interface,
                keep_float=keep_float,
                layout=layout,
                policy=exit_policy,
                threshold=exit_threshold,
                dynamic_conv_form=dynamic_conv_form,
                parity_samples=parity_samples,
                fused_model=fused_model,
                overwrite=overwrite,
                progress=progress,
            )
        except BaseException as error:
            _note_hidden_log(error, log)
            raise
    return os.path.join(out_dir, schema.MANIFEST_NAME)


def _note_hidden_log(error, log):
    lines = len(log.text().splitlines())
    if lines and hasattr(error, "add_note"):
        error.add_note(
            f"TensorFlow logged {lines} line(s) during the export, hidden; pass "
            "verbose=2 to see them."
        )


def _check_interface(interface, quantize):
    """The stage interface dtype: `interface`, or the default for `quantize`."""
    if interface is None:
        return "int8" if quantize == "int8" else "float"
    if interface not in tflite.INTERFACES:
        raise ValueError(
            f"`interface` must be one of {tflite.INTERFACES} or None. "
            f"Received: interface={interface!r}"
        )
    if interface != "float" and quantize != "int8":
        raise ValueError(
            f"interface={interface!r} needs quantize='int8': float32 and float16 "
            f"stages take float tensors. Received: quantize={quantize!r}"
        )
    return interface


def _validate_arguments(quantize, representative_data, layout, policy, threshold, overwrite):
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
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not np.isfinite(threshold)
    ):
        raise ValueError(
            "`exit_threshold` must be a finite number. "
            f"Received: exit_threshold={threshold!r}"
        )
    if policy == "patience" and (threshold < 1 or threshold != int(threshold)):
        raise ValueError(
            "With exit_policy='patience', `exit_threshold` is the number of earlier "
            f"exits that must agree, a whole number >= 1. Received: exit_threshold={threshold!r}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(
            f"`overwrite` must be True or False. Received: overwrite={overwrite!r}"
        )


def _export(
    model,
    out_dir,
    *,
    quantize,
    representative_data,
    interface,
    keep_float,
    layout,
    policy,
    threshold,
    dynamic_conv_form,
    parity_samples,
    fused_model,
    overwrite,
    progress,
):
    if checks.is_quantization_aware(model):
        progress.step(
            f"Model '{model.name}' is quantization-aware; exporting its "
            "strip_quantization (the same layers and weights).",
            advance=0,
        )
    half = checks.half_precision_layers(model)
    if half:
        progress.step(
            f"Model '{model.name}' computes in half precision ({len(half)} "
            "layers); exporting a float32 copy with the same weights.",
            advance=0,
        )
    model = checks.plain_model(model)
    checks.check_inputs(model)
    inputs = _parity_inputs(model, parity_samples, representative_data)
    calibration = None
    if quantize == "int8":
        calibration = samples.calibration_inputs(model, representative_data)
    with dynamic_conv.forms_applied(
        model, dynamic_conv_form, quantize
    ) as forms, int8_forms.forms_applied(model, quantize):
        plans = partition(model)
        checks.check_stage_tensors(plans)
        if fused_model:
            fused.check_model(model, plans)
        board = parity.run_stages(plans, inputs)
        parity.check_per_sample(plans, board)
        progress.step(_partition_line(model, plans))
        for plan in plans:
            progress.detail(
                f"  {plan.name}: inputs {', '.join(plan.input_names)} -> outputs "
                f"{', '.join(plan.output_names)} ({len(plan.layer_names)} layers)"
            )
        stage_macs = [
            count_macs(plan.model, checks.trace_stateless(plan)) for plan in plans
        ]
        progress.step(
            f"Counted MACs per stage: {', '.join(map(_count, stage_macs))} "
            f"({_count(sum(stage_macs))} in total)."
        )
        if forms:
            progress.detail(
                "  dynamic convolutions: "
                + ", ".join(f"{name} {form}" for name, form in forms.items())
            )
        batch_size = batch_sizes.signature_batch_size(model, forms)
        looped = batch_sizes.looped_recurrent_layers(model)
        if looped:
            progress.detail(
                f"  recurrent layers {', '.join(layer.name for layer in looped)} loop over time (TFLite WHILE): "
                "stage signatures take a batch of 1; unroll=True converts at any batch"
            )
        dataset = None
        if calibration is not None:
            dataset = _representative_dataset(plans, parity.run_stages(plans, calibration))
        with folders.staging_folder(os.path.dirname(out_dir)) as staging:
            files = _write_stage_files(
                plans,
                staging,
                layout,
                quantize,
                dataset,
                batch_size,
                interface,
                keep_float,
                set(input_names(model)),
            )
            stage_interfaces = None
            if interface != "float":
                paths = {p.name: os.path.join(staging, files[p.name]) for p in plans}
                stage_interfaces = interfaces.read_interfaces(paths)
                changes = interfaces.requantizations(stage_interfaces)
                if changes:
                    _requantize_hand_offs(changes, paths, stage_interfaces, progress)
                    stage_interfaces = interfaces.read_interfaces(paths)
                interfaces.check_hand_off(stage_interfaces, set(input_names(model)))
            sizes = sum(os.path.getsize(os.path.join(staging, f)) for f in set(files.values()))
            progress.step(
                f"Converted {len(plans)} stage(s) to "
                f"{', '.join(sorted(set(files.values())))} ({sizes / 1024:.1f} KiB, "
                f"{quantize or 'float32'}"
                f"{'' if interface == 'float' else f', {interface} interfaces'}"
                f"{'' if not keep_float else ', float32 ' + ' and '.join(keep_float)}, "
                "TFLite builtin ops only)."
            )
            progress.step(_xnnpack_line(plans, files, staging), advance=0)
            fused_entry = fused.write(plans, staging, quantize) if fused_model else None
            if fused_entry is not None:
                size = os.path.getsize(os.path.join(staging, fused_entry["file"]))
                progress.detail(f"  {fused_entry['file']}: {size / 1024:.1f} KiB, IF ops")
            manifest = _manifest(
                model, plans, files, staging, quantize, policy, threshold, batch_size,
                stage_macs, fused_entry, stage_interfaces,
            )
            schema.write_manifest(manifest, staging)
            errors, reference, flips = _check_parity(
                model, plans, staging, inputs, quantize, board
            )
            if fused_entry is not None:
                fused_errors = fused.check_parity(plans, staging, inputs, reference, quantize)
                errors = {k: max(v, fused_errors[k]) for k, v in errors.items()}
            count = len(next(iter(inputs.values())))
            progress.step(
                f"Parity on {count} sample(s), batch and sample mode"
                f"{' and the fused model' if fused_entry else ''}: largest "
                f"difference {max(errors.values(), default=0.0):.2g} of an exit's scale "
                f"(tolerance {parity.TOLERANCE[quantize]:g}); labels agree."
            )
            flipped = max(int(rows.sum()) for rows in flips.values())
            if flipped:
                progress.detail(
                    f"  {flipped} sample(s) took another gate or route at a near tie "
                    "of its decision; their exits after it were not compared"
                )
            for name, error in errors.items():
                progress.detail(f"  {name}: {error:.3g}")
            # Again: something may have appeared at out_dir meanwhile.
            folders.check_destination(out_dir, overwrite)
            folders.move_into_place(staging, out_dir)
    progress.step(f"Exported to {out_dir}.")


def _requantize_hand_offs(changes, paths, found, progress):
    """Rewrites the consumers of integer hand-offs whose scales differ (`requantize`)."""
    for path in sorted({paths[change.signature] for change in changes}):
        with open(path, "rb") as f:
            content = f.read()
        mine = [change for change in changes if paths[change.signature] == path]
        atomic_write_bytes(path, requantize.requantize_inputs(content, mine))
    progress.detail(
        "  integer hand-offs requantized at the start of the reading stage: "
        + ", ".join(
            f"{c.tensor} into {c.signature} (scale {c.scale:.3g} -> "
            f"{found[c.signature]['inputs'][c.tensor][1]['scale']:.3g})"
            for c in changes
        )
    )


def _xnnpack_line(plans, files, folder):
    """What XNNPACK runs of the stages: an op it leaves out runs on a slower kernel."""
    contents = {}
    for path in set(files.values()):
        with open(os.path.join(folder, path), "rb") as f:
            contents[path] = f.read()
    coverage = stage_coverage(
        contents, [{"name": p.name, "file": files[p.name], "signature": p.name} for p in plans]
    )
    incomplete = {name: c for name, c in coverage.items() if not c.complete}
    if not incomplete:
        return "XNNPACK runs every op of every stage."
    return (
        "Ops outside XNNPACK, on TFLite's slower kernels: "
        + "; ".join(
            f"{name} {c.left_ops()} ({c.taken} of {c.total} ops on XNNPACK)"
            for name, c in incomplete.items()
        )
        + ". See `keep_float` and `dynamic_conv_form`."
    )


def _partition_line(model, plans):
    exits = [p.exit_name for p in plans if p.exit_name is not None]
    line = (
        f"Partitioned model '{model.name}' into {len(plans)} stage(s) at "
        f"exits {', '.join(exits)}"
    )
    decisions = {}
    for plan in plans:
        if plan.condition is not None:
            decisions.setdefault((plan.condition.kind, plan.condition.decision), 0)
            decisions[(plan.condition.kind, plan.condition.decision)] += 1
    gates = [name for (kind, name) in decisions if kind == "gate"]
    routes = [name for (kind, name) in decisions if kind == "route"]
    if gates:
        line += f", gates {', '.join(gates)}"
    if routes:
        line += f", routes {', '.join(routes)}"
    return f"{line} ({sum(decisions.values())} conditional)." if decisions else f"{line}."


def _count(macs):
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= size:
            return f"{macs / size:.1f}{unit}"
    return str(macs)


def _parity_inputs(model, parity_samples, representative_data):
    if parity_samples is not None:
        return samples.as_inputs(
            model, parity_samples, "parity_samples", limit=MAX_PARITY_SAMPLES
        )
    if representative_data is not None:
        return samples.as_inputs(
            model, representative_data, "representative_data", limit=MAX_PARITY_SAMPLES
        )
    return samples.random_inputs(model)


def _representative_dataset(plans, board):
    """int8 calibration: each stage's inputs, one sample at a time, keyed by stage."""
    count = len(board[plans[0].input_names[0]])

    def generate():
        for plan in plans:
            for row in range(count):
                yield plan.name, {
                    name: board[name][row : row + 1] for name in plan.input_names
                }

    return generate


def _write_stage_files(plans, folder, layout, quantize, dataset, batch_size,
                       interface="float", keep_float=(), model_inputs=()):
    """Converts the stages into `folder`; returns {stage name: file name}."""
    endpoints = [
        (p.name, p.model, p.input_names, p.output_names) for p in plans
    ]
    layers = {p.name: p.layer_names for p in plans}
    with tflite.saved_model_of(endpoints, folder, batch_size) as saved_model:

        def convert(keys):
            return tflite.convert_signatures(
                saved_model,
                keys,
                quantize=quantize,
                representative_dataset=_only(dataset, keys),
                stage_layers=[layer for key in keys for layer in layers[key]],
                interface=interface,
                keep_float=keep_float,
                model_inputs=model_inputs,
            )

        if layout == "signatures":
            try:
                content = convert([p.name for p in plans])
            except tflite.ConversionError:
                # Convert stage by stage to name the one that fails.
                for plan in plans:
                    convert([plan.name])
                raise
            atomic_write_bytes(os.path.join(folder, SIGNATURES_FILE), content)
            return {p.name: SIGNATURES_FILE for p in plans}
        files = {}
        for plan in plans:
            files[plan.name] = f"{plan.name}.tflite"
            atomic_write_bytes(os.path.join(folder, files[plan.name]), convert([plan.name]))
        return files


def _only(dataset, keys):
    if dataset is None:
        return None
    return lambda: (item for item in dataset() if item[0] in keys)


def _tensor_spec(name, tensor, batch_size, interface=None):
    """A manifest tensor spec; ``interface``: ``(dtype, quantization)`` from the file."""
    dtype, quantization = (
        (keras.backend.standardize_dtype(tensor.dtype), None)
        if interface is None else interface
    )
    return {
        "name": name,
        "shape": [batch_size, *(int(d) for d in tensor.shape[1:])],
        "dtype": dtype,
        "quantization": quantization,
    }


def _edges(plans, index, producer):
    """The `next` edges of stage `index`: always to the next unconditional
    stage; conditional to every branch stage its gates or routes switch."""
    plan = plans[index]
    edges = []
    if plan.condition is None:
        following = [p for p in plans[index + 1 :] if p.condition is None]
        if following:
            edges.append({"stage": following[0].name, "when": "always"})
    for later in plans[index + 1 :]:
        condition = later.condition
        if condition is not None and producer[condition.decision] == plan.name:
            edges.append({
                "stage": later.name,
                "when": {condition.kind: condition.decision, "index": condition.index},
            })
    return edges


def _decision_tables(plans, producer, specs):
    """The manifest's `gates` and `routes`: one entry per decision tensor."""
    tables = {"gate": {}, "route": {}}
    for plan in plans:
        condition = plan.condition
        if condition is None:
            continue
        width_key = "groups" if condition.kind == "gate" else "experts"
        tables[condition.kind][condition.decision] = {
            "name": condition.decision,
            "stage": producer[condition.decision],
            "tensor": condition.decision,
            width_key: specs[condition.decision]["shape"][1],
        }
    return list(tables["gate"].values()), list(tables["route"].values())


def _manifest(
    model, plans, files, folder, quantize, policy, threshold, batch_size, stage_macs,
    fused_entry=None, stage_interfaces=None,
):
    def side(plan, which, name):
        if stage_interfaces is None:
            return None
        return stage_interfaces[plan.name][which][name]

    stages, exits = [], []
    producer, specs = {}, {}
    read_as = {}  # model input -> its first reader's (dtype, quantization)
    for plan in plans:
        for name, tensor in zip(plan.output_names, plan.model.outputs):
            producer[name] = plan.name
            specs[name] = _tensor_spec(name, tensor, batch_size, side(plan, "outputs", name))
        for name in plan.input_names:
            read_as.setdefault(name, side(plan, "inputs", name))
    last_exit = max(i for i, p in enumerate(plans) if p.exit_name is not None)
    for index, plan in enumerate(plans):
        stages.append(
            {
                "name": plan.name,
                "file": files[plan.name],
                "signature": plan.name,
                "inputs": [
                    _tensor_spec(n, t, batch_size, side(plan, "inputs", n))
                    for n, t in zip(plan.input_names, plan.model.inputs)
                ],
                "outputs": [specs[n] for n in plan.output_names],
                "macs": stage_macs[index],
                "next": _edges(plans, index, producer),
            }
        )
        if plan.exit_name is None:
            continue
        exits.append(
            {
                "name": plan.exit_name,
                "stage": plan.name,
                "tensor": plan.output_names[0],
                "kind": "classifier",
                "values": plan.exit_values,
                "policy": None
                if index == last_exit
                else {"kind": policy, "threshold": float(threshold)},
            }
        )
    gates, routes = _decision_tables(plans, producer, specs)
    features = ["exits"]
    if any(plan.exit_values == PROBABILITIES for plan in plans):
        features.append(PROBABILITY_FEATURE)
    if gates:
        features.append("gates")
    if routes:
        features.append("routes")
    unique_files = sorted(set(files.values()))
    if fused_entry is not None:
        unique_files.append(fused_entry["file"])
    manifest = {
        "format": schema.FORMAT,
        "version": schema.VERSION if gates or routes else schema.LINEAR_VERSION,
        "features": features,
        "producer": {
            "keras_dynamic": keras_dynamic.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "model": {"name": model.name},
        "quantization": quantize,
        "inputs": [
            _tensor_spec(name, tensor, batch_size, read_as.get(name))
            for name, tensor in zip(input_names(model), model.inputs)
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
        "gates": gates,
    }
    if routes:
        manifest["routes"] = routes
    if fused_entry is not None:
        manifest["fused"] = fused_entry
    return manifest


def _check_parity(model, plans, folder, inputs, quantize, board):
    """Runs the export in batch and sample mode against the Keras model.

    ``board`` holds the Keras stage tensors on ``inputs`` (the gates' and
    routes' decision values among them). Returns ``({exit name: largest
    relative error}, {exit name: Keras values}, {mode: samples that took
    another gate or route near a tie})``; raises `ParityError`.
    """
    chain = runtime.load(folder)
    ordered = samples.in_model_order(model, inputs)
    ordered = ordered if len(ordered) > 1 else ordered[0]
    margins = parity.decision_margins(model, plans, ordered)
    runs, flips = {}, {}
    for mode, batch_size in (("batch", None), ("sample", 1)):
        values, stages_run, (gates, routes) = chain._run_all(inputs, batch_size, False)
        runs[mode] = values
        flips[mode] = parity.decision_flips(
            _decisions_in_run_order(chain, stages_run), board, margins,
            {"gate": gates, "route": routes}, mode, quantize,
        )
    outputs = model(ordered, training=False)
    reference = {
        name: np.asarray(value)
        for name, value in zip(exit_names(model), keras.tree.flatten(outputs))
    }
    errors = parity.check_exits(plans, reference, runs, quantize, skip=flips)
    return errors, reference, flips


def _decisions_in_run_order(chain, stages_run):
    """``(kind, name, rows on which its stage ran)`` of every gate and route."""
    manifest = chain.manifest
    position = {name: i for i, name in enumerate(chain.stage_names)}
    found = [
        (position[entry["stage"]], kind, entry["name"])
        for kind, table in (("gate", "gates"), ("route", "routes"))
        for entry in manifest.get(table, [])
    ]
    return [(kind, name, stages_run[:, at]) for at, kind, name in sorted(found)]


__all__ = ["export_stages", "ParityError", "LAYOUTS", "SIGNATURES_FILE"]
