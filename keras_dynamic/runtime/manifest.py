"""The manifest.json schema (versions 1 and 2): constants, validation, reading and writing.

The runtime owns the format (docs/MANIFEST.md); `converters.export_stages`
imports `FORMAT`, `VERSION`, `sha256_file`, `validate_manifest` and
`write_manifest` from here so writer and reader cannot drift apart.

Version-1 chains are linear: every stage has at most one ``"always"`` edge,
so the walk from ``entry`` is the order in which stages run. Version 2 adds
gates and routes: stages are listed in run order, edges point forward and may
be conditional (``{"gate": name, "index": j}``, ``{"route": name, "index":
k}``), and a stage runs for a sample when an edge into it fires from a stage
that ran for that sample. The writer writes version 1 whenever a model has
no gate or router, so older readers keep reading such exports. Every error is
a `ManifestError` (a `ValueError`) naming the stage, tensor, exit or file at
fault.
"""

import hashlib
import json
import math
import os
import pathlib
import stat

import numpy as np

from keras_dynamic.runtime.errors import FileIntegrityError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe
from keras_dynamic.runtime.files import atomic_write_text
from keras_dynamic.runtime.files import check_relative_path
from keras_dynamic.runtime.files import parse_json
from keras_dynamic.runtime.files import read_inside
from keras_dynamic.runtime.files import sha256_file
from keras_dynamic.runtime.policy import parse_rule

FORMAT = "keras_dynamic.stages"
# The newest version, written for chains with gates or routes; version 1
# (linear chains) is still written and read.
VERSION = 2
LINEAR_VERSION = 1
VERSIONS = (LINEAR_VERSION, VERSION)
MANIFEST_NAME = "manifest.json"
SUPPORTED_FEATURES = frozenset({"exits", "probability_exits", "gates", "routes"})
# The decision tables of version 2: the key naming the width of the tensor.
DECISION_KINDS = {"gate": ("gates", "groups"), "route": ("routes", "experts")}
DTYPES = frozenset(
    {"float32", "float16", "int8", "uint8", "int16", "int32", "int64"}
)
EXIT_KINDS = ("classifier",)
# What an exit's tensor holds. "probabilities" (a softmax-activated
# classifier) needs the feature "probability_exits", so that a reader that
# would take them for logits refuses the export instead.
EXIT_VALUES = ("logits", "probabilities")
# Bounds on what is read: a manifest of a few hundred stages is ~1 MB.
# Strings are names and enums; file paths have their own bounds
# (`check_relative_path`).
MAX_MANIFEST_BYTES = 4 << 20
MAX_STRING_CHARS = 256
MAX_RANK = 32
# MACs are summed in int64; a TFLite dimension is an int32.
_MAX_INT64 = (1 << 63) - 1
_MAX_DIM = (1 << 31) - 1

_TOP_KEYS = {
    "format": str,
    "version": int,
    "features": list,
    "inputs": list,
    "files": list,
    "entry": str,
    "stages": list,
    "exits": list,
}
_STAGE_KEYS = {
    "name": str,
    "file": str,
    "signature": str,
    "inputs": list,
    "outputs": list,
    "macs": int,
    "next": list,
}
_FILE_KEYS = {"path": str, "sha256": str, "bytes": int}
_EXIT_KEYS = {"name": str, "stage": str, "tensor": str, "kind": str}
_TENSOR_KEYS = {"name": str, "shape": list, "dtype": str}
# The optional fused CPU model: the stages as one IF-op model (docs/MANIFEST.md).
_FUSED_KEYS = {"file": str, "signature": str, "exits": list, "decision": str}
FUSED_DECISIONS = ("max_softmax",)


def _require(obj, keys, where):
    """Checks that dict ``obj`` has ``keys`` with the given types (bool is not int).

    Strings other than file paths are names or enums: at most
    `MAX_STRING_CHARS` characters, so that messages naming them stay short.
    """
    if not isinstance(obj, dict):
        raise ManifestError(
            f"{where}: expected a JSON object. Received: {describe(obj)}"
        )
    for key, kind in keys.items():
        if key not in obj:
            raise ManifestError(f"{where}: missing required key {key!r}.")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (
            isinstance(value, bool) and bool not in kinds
        ):
            names = " or ".join(k.__name__ for k in kinds)
            raise ManifestError(
                f"{where}: {key!r} must be of type {names}. "
                f"Received: {describe(value)}"
            )
        if isinstance(value, str) and key != "path" and len(value) > MAX_STRING_CHARS:
            raise ManifestError(
                f"{where}: {key!r} is longer than {MAX_STRING_CHARS} characters. "
                f"Received: {describe(value)}"
            )


def _int_in(value, low, high, where, key):
    """Refuses the int ``value`` of ``key`` outside ``[low, high]`` (JSON ints are unbounded)."""
    if not low <= value <= high:
        raise ManifestError(
            f"{where}: {key!r} must lie in [{low}, {high}]. Received: {describe(value)}"
        )


def _positive_float(value, where, key):
    """``value`` as a float, refusing non-finite, non-positive and overflowing numbers."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ManifestError(
            f"{where}: {key!r} must be a positive finite number. "
            f"Received: {describe(value)}"
        )
    return number


def _check_tensor(spec, where):
    _require(spec, _TENSOR_KEYS, where)
    where = f"{where} tensor {spec['name']!r}"
    if not spec["name"]:
        raise ManifestError(f"{where}: tensor names must be non-empty.")
    shape = spec["shape"]
    if len(shape) > MAX_RANK:
        raise ManifestError(
            f"{where}: shape has more than {MAX_RANK} dimensions. "
            f"Received: {describe(shape)}"
        )
    if not shape or not (shape[0] is None or type(shape[0]) is int and shape[0] == 1):
        raise ManifestError(
            f"{where}: shape must start with the batch dimension: null (any "
            f"batch) or 1 (a stage that needs a static batch). "
            f"Received: {describe(shape)}"
        )
    for dim in shape[1:]:
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= _MAX_DIM:
            raise ManifestError(
                f"{where}: non-batch dimensions must be ints in [1, {_MAX_DIM}]. "
                f"Received: {describe(shape)}"
            )
    if spec["dtype"] not in DTYPES:
        raise ManifestError(
            f"{where}: unsupported dtype {spec['dtype']!r}; "
            f"supported: {sorted(DTYPES)}."
        )
    quant = spec.get("quantization")
    if quant is not None:
        _require(quant, {"scale": (int, float), "zero_point": int}, where)
        if np.dtype(spec["dtype"]).kind == "f":
            # A float tensor with a scale would be "dequantized" by the
            # reader: a scale near 0 would silently rescale exit logits.
            raise ManifestError(
                f"{where}: a {spec['dtype']} tensor cannot have quantization "
                f"parameters. Received: {describe(quant)}"
            )
        _positive_float(quant["scale"], f"{where} quantization", "scale")
        info = np.iinfo(spec["dtype"])
        _int_in(quant["zero_point"], int(info.min), int(info.max),
                f"{where} quantization", "zero_point")


def _check_features(manifest):
    features = manifest["features"]
    if not all(isinstance(f, str) for f in features):
        raise ManifestError(
            f"manifest: 'features' must be strings. Received: {describe(features)}"
        )
    unknown = sorted(set(features) - SUPPORTED_FEATURES)
    if unknown:
        raise ManifestError(
            f"manifest: uses feature(s) {describe(unknown)} that this runtime does not "
            f"implement (supported: {sorted(SUPPORTED_FEATURES)}); upgrade "
            "keras_dynamic to run this export."
        )
    for table, _ in DECISION_KINDS.values():
        if manifest.get(table) and table not in features:
            raise ManifestError(
                f"manifest: {table!r} is non-empty but the feature {table!r} is "
                "not declared."
            )
        if table in features and manifest["version"] == LINEAR_VERSION:
            raise ManifestError(
                f"manifest: the feature {table!r} needs version {VERSION}; "
                f"version {LINEAR_VERSION} chains are linear."
            )


def _check_edges(stage, stage_names):
    where = f"manifest: stage {stage['name']!r}"
    for edge in stage["next"]:
        _require(edge, {"stage": str}, f"{where} edge")
        if edge.get("when") != "always":
            raise ManifestError(
                f"{where}: edge to {edge['stage']!r} has condition "
                f"{describe(edge.get('when'))}; version {LINEAR_VERSION} supports only "
                f"\"when\": \"always\" (gated and routed edges need version {VERSION} "
                "and the 'gates' / 'routes' features)."
            )
        if edge["stage"] not in stage_names:
            raise ManifestError(
                f"{where}: 'next' names unknown stage {edge['stage']!r}."
            )
    if len(stage["next"]) > 1:
        raise ManifestError(
            f"{where}: has {len(stage['next'])} 'always' edges; version "
            f"{LINEAR_VERSION} chains are linear (at most one edge per stage)."
        )


def chain_order(manifest):
    """Stage names in run order.

    Version 1: the walk from ``entry`` along ``next`` edges (refusing cycles
    and stages the walk never reaches). Version 2: the order of ``stages``
    (validated by `validate_manifest`: edges point forward).
    """
    if manifest.get("version") != LINEAR_VERSION:
        return [stage["name"] for stage in manifest["stages"]]
    stages = {s["name"]: s for s in manifest["stages"]}
    order, current = [], manifest["entry"]
    while current is not None:
        if current in order:
            raise ManifestError(
                f"manifest: stage {current!r} is reached twice (the 'next' edges "
                "form a cycle)."
            )
        order.append(current)
        edges = stages[current]["next"]
        current = edges[0]["stage"] if edges else None
    unreachable = sorted(set(stages) - set(order))
    if unreachable:
        raise ManifestError(
            f"manifest: stage(s) {describe(unreachable)} are not reachable from entry "
            f"{manifest['entry']!r}."
        )
    return order


def validate_manifest(manifest):
    """Validates a parsed manifest (schema and graph, not the files); returns it.

    Example:

    >>> validate_manifest({"format": "other"})
    Traceback (most recent call last):
    ...
    keras_dynamic.runtime.errors.ManifestError: manifest: 'format' must be 'keras_dynamic.stages'. Received: 'other'
    """
    if not isinstance(manifest, dict):
        raise ManifestError("manifest: the top level must be a JSON object.")
    if manifest.get("format") != FORMAT:
        raise ManifestError(
            f"manifest: 'format' must be {FORMAT!r}. "
            f"Received: {describe(manifest.get('format'))}"
        )
    version = manifest.get("version")
    if version not in VERSIONS or isinstance(version, bool):
        raise ManifestError(
            f"manifest: unsupported version {describe(version)}; this runtime reads "
            f"versions {list(VERSIONS)}."
        )
    _require(manifest, _TOP_KEYS, "manifest")
    _check_features(manifest)
    for key in ("inputs", "files", "stages", "exits"):
        if not manifest[key]:
            raise ManifestError(f"manifest: {key!r} must not be empty.")

    files = {}
    for i, entry in enumerate(manifest["files"]):
        _require(entry, _FILE_KEYS, f"manifest: files[{i}]")
        where = f"manifest: file {describe(entry['path'])}"
        check_relative_path(entry["path"], where)
        if entry["path"] in files:
            raise ManifestError(f"{where}: listed twice in 'files'.")
        digest = entry["sha256"]
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ManifestError(f"{where}: sha256 must be 64 lowercase hex digits.")
        _int_in(entry["bytes"], 0, _MAX_INT64, where, "bytes")
        files[entry["path"]] = entry

    # Tensor names are blackboard keys: each must have exactly one producer.
    producers = {}
    for spec in manifest["inputs"]:
        _check_tensor(spec, "manifest: model input")
        if spec["name"] in producers:
            raise ManifestError(
                f"manifest: model input {spec['name']!r} is listed twice."
            )
        producers[spec["name"]] = ("model input", spec)

    stages = {}
    for i, stage in enumerate(manifest["stages"]):
        _require(stage, _STAGE_KEYS, f"manifest: stages[{i}]")
        where = f"manifest: stage {stage['name']!r}"
        if stage["name"] in stages:
            raise ManifestError(f"{where}: the stage name is used twice.")
        if stage["file"] not in files:
            raise ManifestError(
                f"{where}: file {stage['file']!r} is not listed in 'files'."
            )
        _int_in(stage["macs"], 0, _MAX_INT64, where, "macs")
        if not stage["inputs"] or not stage["outputs"]:
            raise ManifestError(f"{where}: needs at least one input and output.")
        for spec in stage["inputs"]:
            _check_tensor(spec, f"{where} input")
        for spec in stage["outputs"]:
            _check_tensor(spec, f"{where} output")
            if spec["name"] in producers:
                kind, _ = producers[spec["name"]]
                raise ManifestError(
                    f"{where}: output tensor {spec['name']!r} is already produced "
                    f"by {kind}; tensor names must be unique."
                )
            producers[spec["name"]] = (f"stage {stage['name']!r}", spec)
        stages[stage["name"]] = stage
    # Result MACs are int64 sums: the total must not wrap around.
    if sum(stage["macs"] for stage in stages.values()) > _MAX_INT64:
        raise ManifestError(
            f"manifest: the stages' 'macs' sum to more than {_MAX_INT64}."
        )
    # A file no stage reads is not read (nor hashed: it may be huge); listing
    # one is a writer's error or a sign of tampering.
    used = {stage["file"] for stage in stages.values()}
    if "fused" in manifest:
        used.add(_check_fused_entry(manifest, files))
    unused = sorted(set(files) - used)
    if unused:
        raise ManifestError(
            f"manifest: file(s) {describe(unused)} are listed in 'files' but no "
            "stage uses them."
        )
    if manifest["entry"] not in stages:
        raise ManifestError(
            f"manifest: entry {manifest['entry']!r} is not a stage name."
        )
    if version == LINEAR_VERSION:
        for stage in manifest["stages"]:
            _check_edges(stage, stages)
        order = chain_order(manifest)
        unconditional = set(order)
    else:
        order, unconditional = _check_graph(manifest, stages)

    available = {spec["name"] for spec in manifest["inputs"]}
    for name in order:
        stage = stages[name]
        for spec in stage["inputs"]:
            where = f"manifest: stage {name!r} input {spec['name']!r}"
            if spec["name"] not in available:
                raise ManifestError(
                    f"{where}: no model input or earlier stage produces it."
                )
            _, produced = producers[spec["name"]]
            if (spec["shape"], spec["dtype"]) != (produced["shape"], produced["dtype"]):
                raise ManifestError(
                    f"{where}: declared {spec['shape']} {spec['dtype']} but its "
                    f"producer declares {produced['shape']} {produced['dtype']}."
                )
            if not _same_quantization(spec.get("quantization"), produced.get("quantization")):
                # The runtime hands integer tensors on as they are: a consumer
                # reading other scales would read other real values.
                raise ManifestError(
                    f"{where}: quantization {spec.get('quantization')} differs from its "
                    f"producer's {produced.get('quantization')}; integer tensors are "
                    "handed on without requantizing."
                )
        available.update(spec["name"] for spec in stage["outputs"])

    _check_exits(manifest, stages, order[-1], unconditional)
    if "fused" in manifest:
        _check_fused_exits(manifest, order)
    return manifest


# Two calibrations of one range give float32 scales a few ulps apart; the
# runtime's check of a file against the manifest allows the same.
_HAND_OFF_SCALE_RTOL = 1e-6


def _same_quantization(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a["zero_point"] == b["zero_point"] and abs(a["scale"] - b["scale"]) <= (
        _HAND_OFF_SCALE_RTOL * max(a["scale"], b["scale"])
    )


def _check_fused_entry(manifest, files):
    """The ``"fused"`` entry's keys and file; returns the file's path."""
    fused = manifest["fused"]
    _require(fused, _FUSED_KEYS, "manifest: fused")
    where = f"manifest: fused model {describe(fused['file'])}"
    if fused["file"] not in files:
        raise ManifestError(f"{where}: the file is not listed in 'files'.")
    if fused["file"] in {stage["file"] for stage in manifest["stages"]}:
        raise ManifestError(f"{where}: the file also holds stages; it must be its own file.")
    if fused["decision"] not in FUSED_DECISIONS:
        raise ManifestError(
            f"{where}: 'decision' must be one of {FUSED_DECISIONS}. "
            f"Received: {describe(fused['decision'])}"
        )
    if manifest["version"] != LINEAR_VERSION:
        raise ManifestError(
            f"{where}: a fused model stands for a linear chain (version "
            f"{LINEAR_VERSION}); gates and routes are not expressed in it."
        )
    return fused["file"]


def _check_fused_exits(manifest, order):
    """The fused model's early exits must be the chain's, in run order."""
    by_stage = {e["stage"]: e["name"] for e in manifest["exits"]}
    early = [by_stage[name] for name in order if name in by_stage][:-1]
    if manifest["fused"]["exits"] != early:
        raise ManifestError(
            f"manifest: fused model {describe(manifest['fused']['file'])}: 'exits' "
            f"must list the chain's early exits in run order, {early}. Received: "
            f"{describe(manifest['fused']['exits'])}"
        )


def _check_decisions(manifest, stages):
    """The gate and route tables: ``{(kind, name): (stage name, width)}``."""
    decisions = {}
    for kind, (table, width_key) in DECISION_KINDS.items():
        entries = manifest.get(table, [])
        if not isinstance(entries, list):
            raise ManifestError(
                f"manifest: {table!r} must be a list. Received: {describe(entries)}"
            )
        for i, entry in enumerate(entries):
            _require(
                entry,
                {"name": str, "stage": str, "tensor": str, width_key: int},
                f"manifest: {table}[{i}]",
            )
            where = f"manifest: {kind} {entry['name']!r}"
            if (kind, entry["name"]) in decisions:
                raise ManifestError(f"{where}: the {kind} name is used twice.")
            if entry["stage"] not in stages:
                raise ManifestError(f"{where}: unknown stage {entry['stage']!r}.")
            outputs = {s["name"]: s for s in stages[entry["stage"]]["outputs"]}
            if entry["tensor"] not in outputs:
                raise ManifestError(
                    f"{where}: tensor {entry['tensor']!r} is not an output of "
                    f"stage {entry['stage']!r}."
                )
            width = entry[width_key]
            _int_in(width, 2 if kind == "route" else 1, _MAX_DIM, where, width_key)
            shape = outputs[entry["tensor"]]["shape"]
            if len(shape) != 2 or shape[1] != width:
                raise ManifestError(
                    f"{where}: tensor {entry['tensor']!r} must have shape "
                    f"(batch, {width}) for {width_key}={width}. Received: {shape}"
                )
            decisions[(kind, entry["name"])] = (entry["stage"], width)
    return decisions


def _edge_condition(edge, source, decisions, where):
    """``None`` for an "always" edge, else ``(kind, name, index)``, checked."""
    when = edge.get("when")
    if when == "always":
        return None
    kinds = [k for k in DECISION_KINDS if isinstance(when, dict) and k in when]
    if len(kinds) != 1 or set(when) != {kinds[0], "index"}:
        raise ManifestError(
            f"{where}: 'when' must be \"always\", {{\"gate\": name, \"index\": j}} "
            f"or {{\"route\": name, \"index\": k}}. Received: {describe(when)}"
        )
    kind = kinds[0]
    name, index = when[kind], when["index"]
    if not isinstance(name, str) or (kind, name) not in decisions:
        raise ManifestError(f"{where}: names unknown {kind} {describe(name)}.")
    stage, width = decisions[(kind, name)]
    if stage != source:
        raise ManifestError(
            f"{where}: a {kind} edge must leave the stage that computes {kind} "
            f"{name!r} ({stage!r})."
        )
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < width:
        raise ManifestError(
            f"{where}: 'index' must be an int in [0, {width - 1}] for {kind} "
            f"{name!r}. Received: {describe(index)}"
        )
    return kind, name, index


def _check_graph(manifest, stages):
    """Version 2: ``(run order, unconditional stage names)``, checked.

    Stages run in the order listed; edges point forward; every stage but the
    entry (the first) has an edge into it. A stage is unconditional when it
    is the entry or an "always" edge leads into it from an unconditional
    stage: it runs for every sample not yet exited.
    """
    names = [stage["name"] for stage in manifest["stages"]]
    position = {name: i for i, name in enumerate(names)}
    if manifest["entry"] != names[0]:
        raise ManifestError(
            f"manifest: entry {manifest['entry']!r} must be the first stage "
            f"listed ({names[0]!r}); version {VERSION} lists stages in run order."
        )
    decisions = _check_decisions(manifest, stages)
    incoming = {name: [] for name in names}
    for stage in manifest["stages"]:
        source = stage["name"]
        targets = set()
        for edge in stage["next"]:
            where = f"manifest: stage {source!r} edge"
            _require(edge, {"stage": str}, where)
            target = edge["stage"]
            where = f"{where} to {target!r}"
            if target not in position:
                raise ManifestError(f"{where}: 'next' names an unknown stage.")
            if position[target] <= position[source]:
                raise ManifestError(
                    f"{where}: edges must point to a stage listed later (stages "
                    "are listed in run order)."
                )
            if target in targets:
                raise ManifestError(f"{where}: the stage has two edges to it.")
            targets.add(target)
            incoming[target].append(
                (source, _edge_condition(edge, source, decisions, where))
            )
    unconditional = {names[0]}
    for name in names[1:]:
        if not incoming[name]:
            raise ManifestError(
                f"manifest: stage {name!r} has no edge into it; it is not "
                f"reachable from entry {names[0]!r}."
            )
        if any(c is None and src in unconditional for src, c in incoming[name]):
            unconditional.add(name)
    last = names[-1]
    if last not in unconditional:
        raise ManifestError(
            f"manifest: the last stage {last!r} is conditional; the last stage "
            "must run for every sample that reaches it."
        )
    if stages[last]["next"]:
        raise ManifestError(
            f"manifest: the last stage {last!r} has edges out of it."
        )
    return names, unconditional


def _check_exits(manifest, stages, terminal, unconditional):
    exits_by_stage, names, classes = {}, set(), set()
    for i, ex in enumerate(manifest["exits"]):
        _require(ex, _EXIT_KEYS, f"manifest: exits[{i}]")
        where = f"manifest: exit {ex['name']!r}"
        if ex["name"] in names:
            raise ManifestError(f"{where}: the exit name is used twice.")
        names.add(ex["name"])
        if ex["kind"] not in EXIT_KINDS:
            raise ManifestError(
                f"{where}: unknown exit kind {ex['kind']!r}; known: {EXIT_KINDS}."
            )
        if ex["stage"] not in stages:
            raise ManifestError(f"{where}: unknown stage {ex['stage']!r}.")
        if ex["stage"] not in unconditional:
            raise ManifestError(
                f"{where}: stage {ex['stage']!r} is conditional (a gate or route "
                "may skip it); exits must be on stages every sample runs."
            )
        if ex["stage"] in exits_by_stage:
            raise ManifestError(
                f"{where}: stage {ex['stage']!r} already has exit "
                f"{exits_by_stage[ex['stage']]!r}; one exit per stage."
            )
        exits_by_stage[ex["stage"]] = ex["name"]
        outputs = {s["name"]: s for s in stages[ex["stage"]]["outputs"]}
        if ex["tensor"] not in outputs:
            raise ManifestError(
                f"{where}: tensor {ex['tensor']!r} is not an output of stage "
                f"{ex['stage']!r}."
            )
        shape = outputs[ex["tensor"]]["shape"]
        if len(shape) != 2:
            raise ManifestError(
                f"{where}: a classifier exit must output (batch, classes) logits; "
                f"tensor {ex['tensor']!r} has shape {shape}."
            )
        classes.add(shape[1])
        values = ex.get("values", "logits")
        if values not in EXIT_VALUES:
            raise ManifestError(
                f"{where}: 'values' must be one of {EXIT_VALUES} (absent: "
                f"logits). Received: {describe(values)}"
            )
        if values == "probabilities" and "probability_exits" not in manifest["features"]:
            raise ManifestError(
                f"{where}: gives probabilities but 'features' does not list "
                "'probability_exits' (a reader without it would take them for "
                "logits)."
            )
        parse_rule(ex.get("policy"), where)
    if len(classes) > 1:
        raise ManifestError(
            f"manifest: exits disagree on the number of classes: {sorted(classes)}."
        )
    if terminal not in exits_by_stage:
        raise ManifestError(
            f"manifest: terminal stage {terminal!r} has no exit; the last stage "
            "must answer for the samples that reach it."
        )


def dumps_manifest(manifest):
    """Validates ``manifest`` and returns its JSON text (2-space indent, newline)."""
    validate_manifest(manifest)
    return json.dumps(manifest, indent=2) + "\n"


def write_manifest(manifest, folder):
    """Validates and atomically writes ``folder/manifest.json``; returns its path."""
    path = pathlib.Path(folder) / MANIFEST_NAME
    atomic_write_text(path, dumps_manifest(manifest))
    return path


def _locate(path):
    """``(folder, file name)`` of the manifest that ``path`` names."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be an export folder or the path of its manifest.json "
            f"(str or os.PathLike). Received: {describe(path)}"
        )
    try:
        path = pathlib.Path(path)
        mode = os.stat(path).st_mode
    except (OSError, ValueError, TypeError) as e:
        reason = e.strerror if isinstance(e, OSError) else str(e)
        raise FileIntegrityError(
            f"No export folder or manifest at {describe(str(path))}: {reason}."
        ) from None
    if stat.S_ISDIR(mode):
        return path, MANIFEST_NAME
    return path.parent, path.name


def _check_digest(expected_sha256):
    if expected_sha256 is None:
        return None
    if (
        not isinstance(expected_sha256, str)
        or len(expected_sha256) != 64
        or any(c not in "0123456789abcdef" for c in expected_sha256.lower())
    ):
        raise ValueError(
            "`expected_sha256` must be None or 64 hex digits. "
            f"Received: expected_sha256={describe(expected_sha256)}"
        )
    return expected_sha256.lower()


def read_manifest(path, *, expected_sha256=None):
    """Reads and validates a manifest; ``path`` is an export folder or its manifest.

    The manifest is read once, without following a symbolic link, and at most
    `MAX_MANIFEST_BYTES`; a FIFO or device is refused without blocking. With
    ``expected_sha256``, bytes with another hash are refused before parsing.
    Returns ``(folder, manifest, sha256 of its bytes)``. Files are not checked
    here: see `read_files`.
    """
    expected = _check_digest(expected_sha256)
    folder, name = _locate(path)
    manifest_path = folder / name
    data = read_inside(folder, name, "manifest", limit=MAX_MANIFEST_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise FileIntegrityError(
            f"{manifest_path}: sha256 {digest} is not the expected {expected}; "
            "the manifest was changed (or is another export's)."
        )
    if data[4:8] == b"TFL3":
        raise ManifestError(
            f"{manifest_path} is a TFLite model, not a manifest: pass the export "
            "folder written by export_stages (or its manifest.json)."
        )
    manifest = parse_json(data, manifest_path)
    try:
        validate_manifest(manifest)
    except ManifestError as e:
        raise type(e)(f"{manifest_path}: {e}") from None
    return folder, manifest, digest


def read_files(folder, manifest, *, check_hashes=True):
    """Reads every listed file once: inside the folder, no symlinks, size, sha256.

    The size is checked before a byte is read; the hash is computed on the
    bytes read, which are the bytes returned (and handed to the
    interpreter), so a file swapped after the check cannot be run.

    Returns ``{relative path: bytes}``.
    """
    contents = {}
    for entry in manifest["files"]:
        where = f"manifest: file {describe(entry['path'])}"
        data = read_inside(folder, entry["path"], where, size=entry["bytes"])
        if check_hashes and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise FileIntegrityError(
                f"{where}: sha256 does not match the manifest; the file was "
                "changed after export."
            )
        contents[entry["path"]] = data
    return contents


def numpy_dtype(spec):
    """The numpy dtype of a manifest tensor spec."""
    return np.dtype(spec["dtype"])


__all__ = [
    "FORMAT",
    "VERSION",
    "LINEAR_VERSION",
    "VERSIONS",
    "MANIFEST_NAME",
    "SUPPORTED_FEATURES",
    "sha256_file",
    "validate_manifest",
    "dumps_manifest",
    "write_manifest",
    "read_manifest",
    "read_files",
    "chain_order",
]
