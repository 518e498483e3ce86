"""A structure-aware fuzzer of export folders for `keras_dynamic.runtime.load` (not a test module).

Each case is a copy of a real export with one kind of damage:

* ``json``: the parsed manifest mutated where it matters (values of random
  types, numbers at and past their bounds, unicode and control characters,
  deleted, added, renamed, duplicated and swapped keys and items, nesting),
  then written back in a random JSON style;
* ``text``: the manifest's bytes damaged (duplicate keys, NaN, 5,000-digit
  integers, deep brackets, non-UTF-8, a byte order mark, flipped bytes,
  truncation, padding past the size limit, harmless whitespace);
* ``fs``: the folder itself (links to files inside and outside, to
  /dev/zero, FIFOs, folders and missing files where files belong, hard
  links, stray files);
* ``tflite``: a stage file flipped, overwritten, truncated, extended, swapped
  for another model or stripped of a kernel, with the manifest's hash left
  alone or rewritten to match (what anyone who can write the folder can do).

Every case runs in a subprocess under a memory limit (``RLIMIT_AS``) and a
time limit; cases that cannot block or crash the interpreter share one
subprocess, the others (FIFOs, /dev/zero, rehashed model files) get one each.
A worker that dies or overruns is replaced and the case it was running is
recorded as a crash or a hang.

Outcomes: ``loaded`` (and its results are exactly what the files and the
manifest say: every exit's values equal the original export's, and every
decision, label, probability and MAC count replays from those values under
the manifest's own policies), ``loaded_rehashed`` (a model file was changed
and rehashed: a different but valid model, which no reader can tell apart;
it must still run without undocumented errors), ``refused_manifest``,
``refused_file``, ``input_error`` (documented errors). Failures:
``undocumented`` (another exception type), ``silent_change`` (loaded but
computed something else), ``accepted_bad`` (loaded where it must refuse),
``hang``, ``crash``.
"""

import copy
import dataclasses
import json
import os
import pathlib
import random
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

OK_OUTCOMES = ("loaded", "loaded_rehashed", "refused_manifest", "refused_file", "input_error")
FAIL_OUTCOMES = ("undocumented", "silent_change", "accepted_bad", "hang", "crash")
FAMILIES = {"json": 0.45, "text": 0.2, "fs": 0.15, "tflite": 0.2}
MEMORY_LIMIT = 1 << 30
TIME_LIMIT = 20.0
BATCH = 64
_HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass
class Case:
    index: int
    family: str
    detail: str
    folder: str
    expect: str = "any"  # "any" or "refuse"
    rehashed: bool = False
    isolate: bool = False
    base: int = 0


@dataclasses.dataclass
class Base:
    """A real export to damage, with its exit values on `FuzzData.x`."""

    folder: pathlib.Path
    manifest: dict
    files: dict  # relative path -> bytes


# ------------------------------------------------------------ random values
_STRINGS = [
    "", "stage_1", "stage_2", "stage_3", "exit_1", "final", "image", "conv_1",
    "stages.tflite", "../stages.tflite", "/etc/passwd", "C:\\x", "a" * 300,
    "st\u0430ge_1", "\u00e9", "\U0001f600", "\x00", "\ud800", "\x7f", "null",
    "float32", "int8", "logits", "probabilities", "max_softmax", "entropy",
    "always", "probability_exits", "gates", "sub/stages.tflite", "x" * 5000,
]
_NUMBERS = [
    0, 1, -1, 2, 7, 255, 256, 2**31 - 1, 2**31, 2**53, 2**62, 2**63 - 1, 2**63,
    2**64, 10**30, 10**400, -(10**30), 0.0, -0.0, 0.5, 0.9, 1.0, 1.5, 1e-320,
    5e-9, 1e308, 1e300, -1e308, 3.4e38, float(2**63),
]


def _random_value(rng, depth=0):
    kind = rng.choice(["none", "bool", "number", "string", "list", "dict", "nest"])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "number":
        return rng.choice(_NUMBERS)
    if kind == "string":
        return rng.choice(_STRINGS)
    if depth > 2:
        return []
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == "dict":
        return {rng.choice(_STRINGS): _random_value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    value = rng.choice([0, "x", None])
    for _ in range(rng.choice([2, 31, 33, 200])):
        value = [value]
    return value


def _tweak_number(rng, value):
    return rng.choice([
        value + 1, value - 1, -value, value * 2, value * 1000, 0, 2**63, 10**400,
        float(value), float(value) + 1e-9, float(value) * (1 + 1e-6), str(value),
        bool(value), [value],
    ])


def _tweak_string(rng, value):
    return rng.choice([
        value + "_", value.upper(), "", value.replace("a", "\u0430"), value + "\x00",
        value + "\ud800", "../" + value, "/" + value, value * 40, value[:-1],
        value + "/" + value, None, 1, [value],
    ])


# ------------------------------------------------------------ JSON mutation
def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, prefix + (index,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _mutate_json(rng, manifest):
    """Applies 1-3 random structural mutations in place; returns a description."""
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = list(_paths(manifest))
        path = rng.choice(paths[1:])
        parent, key = _get(manifest, path[:-1]), path[-1]
        value = parent[key]
        op = rng.choice(["set", "delete", "insert", "duplicate", "swap", "rename", "tweak", "wrap"])
        if op == "set":
            parent[key] = _random_value(rng)
        elif op == "delete":
            del parent[key]
        elif op == "insert":
            if isinstance(value, dict):
                value[rng.choice(_STRINGS)] = _random_value(rng)
            elif isinstance(value, list):
                value.insert(rng.randint(0, len(value)), _random_value(rng))
            else:
                parent[key] = _random_value(rng)
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(value))
        elif op == "swap" and isinstance(parent, list) and len(parent) > 1:
            other = rng.randrange(len(parent))
            parent[key], parent[other] = parent[other], parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[rng.choice(_STRINGS)] = parent.pop(key)
        elif op == "tweak" and isinstance(value, (int, float)) and not isinstance(value, bool):
            parent[key] = _tweak_number(rng, value)
        elif op == "tweak" and isinstance(value, str):
            parent[key] = _tweak_string(rng, value)
        elif op == "wrap":
            parent[key] = rng.choice([[value], {"value": value}, str(value)])
        else:
            parent[key] = _random_value(rng)
            op = "set"
        done.append(f"{op} {'/'.join(map(str, path))}")
    return "; ".join(done)


def _dumps(rng, manifest):
    """JSON text in a random (valid) style; lone surrogates survive as escapes or raw."""
    text = json.dumps(
        manifest,
        indent=rng.choice([None, 0, 2, "\t"]),
        ensure_ascii=rng.random() < 0.5,
        sort_keys=rng.random() < 0.3,
        separators=rng.choice([None, (",", ":"), (" , ", " : ")]),
    )
    return text.encode("utf-8", "surrogatepass")


# ------------------------------------------------------------ text mutation
def _mutate_text(rng, manifest, data):
    """Returns (bytes, description, expect)."""
    op = rng.choice([
        "duplicate_key", "nan", "huge_int", "deep", "latin1", "bom", "flip",
        "truncate", "pad_over_limit", "whitespace", "garbage", "empty",
    ])
    text = data.decode("utf-8")
    if op == "duplicate_key":
        key = rng.choice(list(manifest))
        value = json.dumps(manifest[key] if rng.random() < 0.5 else _random_value(rng))
        return ("{" + json.dumps(key) + ": " + value + ", " + text[1:]).encode(), op, "refuse"
    if op == "nan":
        token = rng.choice(["NaN", "Infinity", "-Infinity"])
        return text.replace('"threshold": 0.9', f'"threshold": {token}', 1).replace(
            '"macs": ', f'"macs": {token}, "x": ', 1).encode(), f"{op} {token}", "refuse"
    if op == "huge_int":
        digits = rng.choice([1001, 5000, 100_000])
        return text.replace('"macs": ', f'"macs": {"9" * digits}, "y": ', 1).encode(), \
            f"{op} {digits}", "refuse"
    if op == "deep":
        depth = rng.choice([33, 1000, 200_000])
        return (text[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}").encode(), \
            f"{op} {depth}", "refuse"
    if op == "latin1":
        return json.dumps(dict(manifest, model={"name": "caf\u00e9"}), ensure_ascii=False
                          ).encode("latin-1"), op, "refuse"
    if op == "bom":
        return b"\xef\xbb\xbf" + data, op, "refuse"
    if op == "flip":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        return bytes(raw), op, "any"
    if op == "truncate":
        return data[: rng.randrange(len(data))], op, "any"
    if op == "pad_over_limit":
        return data + b" " * ((4 << 20) + 1 - len(data)), op, "refuse"
    if op == "whitespace":
        return ("\n  " + text.replace(",", " ,\n\t") + "\n\n").encode(), op, "any"
    if op == "garbage":
        at = rng.randrange(len(data))
        return data[:at] + bytes(rng.randrange(256) for _ in range(8)) + data[at:], op, "any"
    return b"", op, "refuse"


# ---------------------------------------------------------- folder mutation
def _mutate_fs(rng, folder, root, index, base):
    """Damages the folder in place; returns (description, expect, isolate)."""
    manifest_path = folder / "manifest.json"
    stage = folder / rng.choice(sorted(base.files))
    op = rng.choice([
        "manifest_link_inside", "manifest_link_outside", "manifest_dev_zero",
        "manifest_fifo", "manifest_dir", "manifest_missing", "stage_link_inside",
        "stage_link_outside", "stage_fifo", "stage_dir", "stage_missing",
        "stage_in_linked_dir", "stage_hard_link", "stray_files", "manifest_hard_link",
    ])
    outside = root / f"outside_{index}"
    outside.mkdir()
    if op in ("manifest_link_inside", "stage_link_inside"):
        target = manifest_path if op.startswith("manifest") else stage
        os.replace(target, folder / "copy")
        os.symlink("copy", target)
    elif op in ("manifest_link_outside", "stage_link_outside"):
        target = manifest_path if op.startswith("manifest") else stage
        os.replace(target, outside / "moved")
        os.symlink(outside / "moved", target)
    elif op == "manifest_dev_zero":
        os.remove(manifest_path)
        os.symlink("/dev/zero", manifest_path)
    elif op in ("manifest_fifo", "stage_fifo"):
        target = manifest_path if op.startswith("manifest") else stage
        os.remove(target)
        os.mkfifo(target)
    elif op in ("manifest_dir", "stage_dir"):
        target = manifest_path if op.startswith("manifest") else stage
        os.remove(target)
        target.mkdir()
    elif op in ("manifest_missing", "stage_missing"):
        os.remove(manifest_path if op.startswith("manifest") else stage)
    elif op == "stage_in_linked_dir":
        os.replace(stage, outside / stage.name)
        os.symlink(outside, folder / "sub")
        m = json.loads(manifest_path.read_text())
        for entry in m["files"]:
            if entry["path"] == stage.name:
                entry["path"] = "sub/" + stage.name
        for s in m["stages"]:
            if s["file"] == stage.name:
                s["file"] = "sub/" + stage.name
        manifest_path.write_text(json.dumps(m))
    elif op in ("stage_hard_link", "manifest_hard_link"):
        target = manifest_path if op.startswith("manifest") else stage
        os.replace(target, outside / "same")
        os.link(outside / "same", target)
        return op, "any", False
    else:
        (folder / "notes.txt").write_text("unrelated")
        (folder / ".hidden.tflite").write_bytes(b"\x00" * 100)
        return op, "any", False
    return op, "refuse", op in ("manifest_dev_zero", "manifest_fifo", "stage_fifo")


def _rehash(folder, relpath):
    import hashlib

    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    data = (folder / relpath).read_bytes()
    for entry in m["files"]:
        if entry["path"] == relpath:
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    path.write_text(json.dumps(m, indent=2))


def _mutate_tflite(rng, folder, base, other_model):
    """Damages one stage file; returns (description, expect, rehashed)."""
    relpath = rng.choice(sorted(base.files))
    data = bytearray(base.files[relpath])
    op = rng.choice(
        ["flip", "overwrite", "truncate", "extend", "zero_range", "swap", "strip_kernel"]
    )
    if op == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "overwrite":
        at = rng.randrange(len(data))
        data[at : at + 16] = bytes(rng.randrange(256) for _ in range(16))
    elif op == "truncate":
        data = data[: rng.randrange(len(data))]
    elif op == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif op == "zero_range":
        at = rng.randrange(len(data))
        data[at : at + rng.randint(1, 512)] = bytes(min(512, len(data) - at))
    elif op == "swap" and other_model is not None and relpath == "stages.tflite":
        data = bytearray(other_model)
    else:
        from runtime_fixtures import without_largest_constant

        data = bytearray(without_largest_constant(bytes(data)))
        op = "strip_kernel"
    (folder / relpath).write_bytes(bytes(data))
    changed = bytes(data) != base.files[relpath]
    if rng.random() < 0.5:
        _rehash(folder, relpath)
        # A model that cannot run must be refused even when rehashed.
        return f"{op} {relpath} rehashed", "refuse" if op == "strip_kernel" else "any", changed
    return f"{op} {relpath}", "refuse" if changed else "any", False


# -------------------------------------------------------------- generation
def make_case(bases, index, seed, root, other_model=None):
    """Builds case ``index`` of the stream ``seed`` under ``root`` (deterministic)."""
    rng = random.Random(seed * 1_000_003 + index)
    family = rng.choices(list(FAMILIES), weights=list(FAMILIES.values()))[0]
    base_index = rng.randrange(len(bases))
    base = bases[base_index]
    folder = root / f"case_{index}"
    shutil.copytree(base.folder, folder)
    case = Case(index, family, "", str(folder), base=base_index)
    if family == "json":
        manifest = copy.deepcopy(base.manifest)
        case.detail = _mutate_json(rng, manifest)
        (folder / "manifest.json").write_bytes(_dumps(rng, manifest))
    elif family == "text":
        data = (folder / "manifest.json").read_bytes()
        mutated, case.detail, case.expect = _mutate_text(rng, base.manifest, data)
        (folder / "manifest.json").write_bytes(mutated)
    elif family == "fs":
        case.detail, case.expect, case.isolate = _mutate_fs(rng, folder, root, index, base)
    else:
        case.detail, case.expect, case.rehashed = _mutate_tflite(rng, folder, base, other_model)
        case.isolate = case.rehashed or "rehashed" in case.detail
    return case


def load_base(folder):
    folder = pathlib.Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    return Base(folder, manifest, {f["path"]: (folder / f["path"]).read_bytes()
                                   for f in manifest["files"]})


def write_data(path, bases, x):
    """Saves the inputs and, per base, every exit tensor's values on them."""
    from keras_dynamic import runtime

    arrays = {"x": x}
    for b, base in enumerate(bases):
        with runtime.load(base.folder, num_threads=1) as chain:
            values = chain.run_all(x)
        for ex in base.manifest["exits"]:
            arrays[f"{b}:{ex['tensor']}"] = values[ex["name"]]
    np.savez(path, **arrays)


# ------------------------------------------------------------------ worker
def _replays(chain, x, values_by_tensor):
    """None if the chain computes exactly what its files and manifest say, else why not."""
    from keras_dynamic.runtime.policy import fires
    from keras_dynamic.runtime.policy import softmax

    values = chain.run_all(x)
    exits = {e["name"]: e for e in chain.manifest["exits"]}
    for name, got in values.items():
        tensor = exits[name]["tensor"]
        if tensor not in values_by_tensor or not np.array_equal(got, values_by_tensor[tensor]):
            return f"exit {name!r} (tensor {tensor!r}) values differ from the export's"
    stages = {s["name"]: s for s in chain.manifest["stages"]}
    cumulative = np.cumsum([stages[n]["macs"] for n in chain.stage_names])
    exit_macs = [int(cumulative[chain.stage_names.index(exits[n]["stage"])])
                 for n in chain.exit_names]
    rules = list(chain.policy.rules.values())
    gives_p = [v == "probabilities" for v in chain.exit_values]
    n = len(x)
    taken = np.full(n, len(rules) - 1)
    for slot in range(len(rules) - 2, -1, -1):
        fired = fires(rules[slot], values[chain.exit_names[slot]], gives_p[slot])
        taken[fired] = slot
    chosen = np.stack([values[chain.exit_names[s]][i] for i, s in enumerate(taken)]) \
        if n else np.zeros((0, chain.num_classes))
    probabilities = softmax(chosen)
    own = np.array(gives_p)[taken]
    probabilities[own] = chosen[own]
    for mode in ("batch", "sample"):
        result = chain.predict(x, mode=mode)
        if not np.array_equal(result.exit_index, taken):
            return f"{mode} mode: exits differ from the manifest's policies"
        if not np.array_equal(result.labels, probabilities.argmax(1)):
            return f"{mode} mode: labels differ"
        if not np.allclose(result.probabilities, probabilities, atol=1e-6):
            return f"{mode} mode: probabilities differ"
        if not np.array_equal(result.macs, np.array(exit_macs)[taken]):
            return f"{mode} mode: MACs differ from the manifest's"
    return None


def run_case(case, x, baseline):
    """Loads and runs one case; returns (outcome, detail)."""
    from keras_dynamic import runtime

    try:
        chain = runtime.load(case.folder, num_threads=1)
    except runtime.FileIntegrityError as e:
        return "refused_file", str(e)[:300]
    except runtime.ManifestError as e:
        return "refused_manifest", str(e)[:300]
    except Exception as e:  # noqa: BLE001 - the failure being looked for
        return "undocumented", f"load: {type(e).__name__}: {str(e)[:300]}"
    if case.expect == "refuse":
        chain.close()
        return "accepted_bad", "loaded where it must be refused"
    try:
        with chain:
            if case.rehashed:
                chain.run_all(x)
                for mode in ("batch", "sample"):
                    chain.predict(x, mode=mode)
                return "loaded_rehashed", ""
            why = _replays(chain, x, baseline)
    except runtime.InputError as e:
        if not case.rehashed:
            return "silent_change", f"the export's own model now raises: {str(e)[:300]}"
        return "input_error", str(e)[:300]
    except Exception as e:  # noqa: BLE001
        return "undocumented", f"run: {type(e).__name__}: {str(e)[:300]}"
    return ("silent_change", why) if why else ("loaded", "")


def worker_main():
    """Runs the cases of ``argv[1]`` (a JSON file) on ``argv[2]`` (an .npz), one line each."""
    cases = [Case(**c) for c in json.loads(pathlib.Path(sys.argv[1]).read_text())]
    data = np.load(sys.argv[2])
    x = data["x"]
    baselines = {}
    for key in data.files:
        if ":" in key:
            base, tensor = key.split(":", 1)
            baselines.setdefault(int(base), {})[tensor] = data[key]
    for case in cases:
        print(json.dumps({"start": case.index}), flush=True)
        outcome, detail = run_case(case, x, baselines[case.base])
        print(json.dumps({"end": case.index, "outcome": outcome, "detail": detail}), flush=True)


# ------------------------------------------------------------------ parent
def _limits(memory_limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()
    return apply


def _run_batch(cases, data_path, work, memory_limit, time_limit, results):
    """Runs ``cases`` in workers, replacing a worker that hangs or dies."""
    pending = list(cases)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(_HERE), str(_HERE.parent), os.environ.get("PYTHONPATH", "")]))
    while pending:
        spec = work / f"cases_{pending[0].index}.json"
        spec.write_text(json.dumps([dataclasses.asdict(c) for c in pending]))
        log = work / f"worker_{pending[0].index}.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-c", "import runtime_fuzz; runtime_fuzz.worker_main()",
                 str(spec), str(data_path)],
                stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=work,
                preexec_fn=_limits(memory_limit),
            )
        running, buffer, answered = None, b"", 0
        # Starting Python and importing the runtime is not the case's time.
        deadline = time.monotonic() + time_limit + 60
        while True:
            wait = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([process.stdout], [], [], wait)
            if not ready:
                os.killpg(process.pid, 9)
                process.wait()
                if running is not None:
                    results[running] = ("hang", f"no answer within {time_limit} s")
                break
            chunk = os.read(process.stdout.fileno(), 1 << 16)
            if not chunk:
                code = process.wait()
                if running is not None:
                    results[running] = ("crash", f"worker exited with {code}")
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "start" in message:
                    running = message["start"]
                    deadline = time.monotonic() + time_limit
                else:
                    results[message["end"]] = (message["outcome"], message["detail"])
                    running, answered = None, answered + 1
        process.stdout.close()
        if running is None and not answered:
            # The worker died before its first case: charge that case, so
            # that the loop always moves on.
            tail = log.read_text(errors="replace")[-300:]
            results[pending[0].index] = ("crash", f"worker failed to start: {tail}")
        done = set(results)
        pending = [c for c in pending if c.index not in done]


def run_fuzz(bases, x, *, cases, seed, first=0, other_model=None, memory_limit=MEMORY_LIMIT,
             time_limit=TIME_LIMIT, batch=BATCH, on_progress=None):
    """Generates and runs cases ``first`` to ``first + cases - 1`` of the stream ``seed``.

    Returns ``{index: (Case, outcome, detail)}``.
    """
    results, described = {}, {}
    with tempfile.TemporaryDirectory(prefix="kd_fuzz_") as tmp:
        work = pathlib.Path(tmp)
        data_path = work / "data.npz"
        write_data(data_path, bases, x)
        for start in range(first, first + cases, batch):
            root = work / f"batch_{start}"
            root.mkdir()
            made = [make_case(bases, i, seed, root, other_model)
                    for i in range(start, min(start + batch, first + cases))]
            described.update((c.index, c) for c in made)
            shared = [c for c in made if not c.isolate]
            if shared:
                _run_batch(shared, data_path, work, memory_limit, time_limit, results)
            for case in made:
                if case.isolate:
                    _run_batch([case], data_path, work, memory_limit, time_limit, results)
            shutil.rmtree(root, ignore_errors=True)
            if on_progress:
                on_progress(len(results))
    return {i: (described[i], *results[i]) for i in sorted(results)}


def tally(results):
    """Counts per outcome, and per family and outcome."""
    outcomes, families = {}, {}
    for case, outcome, _ in results.values():
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        key = (case.family, outcome)
        families[key] = families.get(key, 0) + 1
    return outcomes, families


def failures(results):
    return [(case, outcome, detail) for case, outcome, detail in results.values()
            if outcome in FAIL_OUTCOMES]
