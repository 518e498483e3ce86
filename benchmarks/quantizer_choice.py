"""Which int8 quantizer for the stages: the TFLite converter's, or Google's ai-edge-quantizer.

Takes the exports `benchmarks/quantized_chains.py --keep DIR` wrote (the
float32 chain, the converter's int8 chain, and the data splits), quantizes
the float32 stages with ai-edge-quantizer's full-integer recipe
(`static_wi8_ai8`: int8 weights and activations), calibrated per signature
on the activations the float32 stages really produce on the same 200
calibration images the converter used, writes that as a third export, and
compares the two int8 chains: which ops they hold and how many XNNPACK
takes, their interfaces, file size, accuracy per exit and of the calibrated
chain on the test split, and batch-1 latency per sample (interleaved).

It needs no TensorFlow, only ai-edge-quantizer (which pins ai-edge-litert):

    PYTHONPATH=. .venv/bin/python benchmarks/quantized_chains.py --data mnist --keep /tmp/qc
    python -m venv /tmp/aeq && /tmp/aeq/bin/pip install ai-edge-quantizer
    PYTHONPATH=. /tmp/aeq/bin/python benchmarks/quantizer_choice.py /tmp/qc
"""

import argparse
import collections
import json
import os
import shutil
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from keras_dynamic import runtime
from keras_dynamic.runtime.files import sha256_file
from keras_dynamic.runtime.xnnpack import interpreter_coverage


def stage_inputs(folder, x):
    """``{signature: [{input name: (1, ...) array}]}``: each stage's real inputs on ``x``."""
    manifest = json.loads(open(os.path.join(folder, "manifest.json")).read())
    interpreters = {}
    board = {manifest["inputs"][0]["name"]: x}
    found = {}
    for stage in manifest["stages"]:
        path = os.path.join(folder, stage["file"])
        interpreters.setdefault(path, Interpreter(model_path=path))
        runner = interpreters[path].get_signature_runner(stage["signature"])
        names = [spec["name"] for spec in stage["inputs"]]
        found[stage["signature"]] = [
            {name: board[name][i : i + 1] for name in names} for i in range(len(x))
        ]
        rows = [runner(**{n: board[n][i : i + 1] for n in names}) for i in range(len(x))]
        for spec in stage["outputs"]:
            board[spec["name"]] = np.concatenate([r[spec["name"]] for r in rows])
    return found


def quantize_with_aeq(float_folder, out_folder, calibration):
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe

    if os.path.exists(out_folder):
        shutil.rmtree(out_folder)
    shutil.copytree(float_folder, out_folder)
    manifest = json.loads(open(os.path.join(out_folder, "manifest.json")).read())
    for stage in manifest["stages"]:  # one file per stage (layout="files")
        qt = quantizer.Quantizer(os.path.join(float_folder, stage["file"]),
                                 recipe.static_wi8_ai8())
        result = qt.calibrate({stage["signature"]: calibration[stage["signature"]]})
        qt.quantize(result).export_model(os.path.join(out_folder, stage["file"]),
                                         overwrite=True)
    # The manifest's tensor specs from the quantized files (dtype, scale, zero point).
    first_reader = {}
    for stage in manifest["stages"]:
        runner = Interpreter(
            model_path=os.path.join(out_folder, stage["file"])
        ).get_signature_runner(stage["signature"])
        files = {**runner.get_input_details(), **runner.get_output_details()}
        for spec in stage["inputs"] + stage["outputs"]:
            detail = files[spec["name"]]
            scale, zero_point = detail["quantization"]
            spec["dtype"] = np.dtype(detail["dtype"]).name
            spec["quantization"] = (
                {"scale": float(scale), "zero_point": int(zero_point)} if scale else None
            )
            first_reader.setdefault(spec["name"], spec)
    for spec in manifest["inputs"]:
        spec["dtype"] = first_reader[spec["name"]]["dtype"]
        spec["quantization"] = first_reader[spec["name"]]["quantization"]
    for entry in manifest["files"]:
        full = os.path.join(out_folder, entry["path"])
        entry["sha256"], entry["bytes"] = sha256_file(full), os.path.getsize(full)
    manifest["quantization"] = "int8"
    runtime.write_manifest(manifest, out_folder)


def describe_ops(folder):
    """(op counts, (ops XNNPACK took, ops), stage interface dtypes) over a chain's stages."""
    manifest = json.loads(open(os.path.join(folder, "manifest.json")).read())
    counts, taken, total, dtypes = collections.Counter(), 0, 0, set()
    for path in sorted({s["file"] for s in manifest["stages"]}):
        interpreter = Interpreter(model_path=os.path.join(folder, path))
        interpreter.allocate_tensors()
        for key in interpreter.get_signature_list():
            runner = interpreter.get_signature_runner(key)
            for detail in [*runner.get_input_details().values(),
                           *runner.get_output_details().values()]:
                dtypes.add(np.dtype(detail["dtype"]).name)
        counts.update(
            n["op_name"] for n in interpreter._get_ops_details() if n["op_name"] != "DELEGATE"
        )
        coverage = interpreter_coverage(interpreter)
        taken, total = taken + coverage.taken, total + coverage.total
    return counts, (taken, total), sorted(dtypes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the --keep folder of quantized_chains.py")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = np.load(os.path.join(args.folder, "splits.npz"))
    float_folder = os.path.join(args.folder, "float32")
    aeq_folder = os.path.join(args.folder, "int8_ai_edge_quantizer")
    start = time.perf_counter()
    quantize_with_aeq(float_folder, aeq_folder,
                      stage_inputs(float_folder, data["x_calibration"]))
    print(f"ai-edge-quantizer static_wi8_ai8: {time.perf_counter() - start:.0f} s", flush=True)

    folders = {
        "float32": float_folder,
        "int8, TFLite converter": os.path.join(args.folder, "int8"),
        "int8, ai-edge-quantizer": aeq_folder,
    }
    chains, times, results = {}, {name: [] for name in folders}, {}
    for name, folder in folders.items():
        chains[name] = runtime.load(folder, num_threads=1)
        chains[name].calibrate(data["x_val"], data["y_val"],
                               max_accuracy_drop=args.max_accuracy_drop)
    x_test, y_test = data["x_test"], data["y_test"]
    for _ in range(args.rounds):
        for name, chain in chains.items():
            begin = time.perf_counter()
            results[name] = chain.predict(x_test, mode="sample")
            times[name].append((time.perf_counter() - begin) / len(x_test))
    print("\n| export | ops (counts) | ops on XNNPACK | stage interfaces | stage files "
          "| accuracy per exit | calibrated chain | chain, per sample |")
    print("|---|---|---|---|---|---|---|---|")
    for name, chain in chains.items():
        counts, (taken, total), dtypes = describe_ops(folders[name])
        values = chain.run_all(x_test)
        per_exit = " / ".join(
            f"{(values[e].argmax(1) == y_test).mean():.4f}" for e in chain.exit_names
        )
        size = sum(os.path.getsize(os.path.join(folders[name], f))
                   for f in os.listdir(folders[name]) if f.endswith(".tflite"))
        ops = ", ".join(f"{op} {n}" for op, n in sorted(counts.items()))
        print(
            f"| {name} | {ops} | {taken} of {total} | {', '.join(dtypes)} | "
            f"{size / 1024:.0f} KiB | {per_exit} | "
            f"{(results[name].labels == y_test).mean():.4f} | "
            f"{np.median(times[name]) * 1e6:.0f} us |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
