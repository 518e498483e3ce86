"""Manifest validation, file checks and signature checks of keras_dynamic.runtime."""

import copy
import json
import os

import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime import FileIntegrityError
from keras_dynamic.runtime import ManifestError
from keras_dynamic.runtime import validate_manifest


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def manifest(export):
    return json.loads((export.folder / "manifest.json").read_text())


def _stage(m, name):
    return next(s for s in m["stages"] if s["name"] == name)


def _set(path, value):
    def edit(m):
        *keys, last = path
        target = m
        for key in keys:
            # Stages are addressed by name, everything else by key or index.
            if isinstance(target, list) and isinstance(key, str):
                target = next(item for item in target if item["name"] == key)
            else:
                target = target[key]
        target[last] = value

    return edit


def _remove_final_exit(m):
    m["exits"] = [e for e in m["exits"] if e["name"] != "final"]


def _duplicate_tensor(m):
    _stage(m, "stage_2")["outputs"][0]["name"] = "conv_1"


def _input_from_later_stage(m):
    final = next(o for o in _stage(m, "stage_3")["outputs"] if o["name"] == "final")
    _stage(m, "stage_2")["inputs"].append(copy.deepcopy(final))


def _unproduced_input(m):
    _stage(m, "stage_3")["inputs"][0]["name"] = "nowhere"


def _cycle(m):
    _stage(m, "stage_3")["next"] = [{"stage": "stage_1", "when": "always"}]


def _missing_key(m):
    del m["entry"]


INVALID = {
    "format": (_set(["format"], "onnx.stages"), "'format' must be"),
    "version": (_set(["version"], 3), "unsupported version 3"),
    "feature_gates": (_set(["features"], ["exits", "gates"]), "'gates' needs version 2"),
    "feature_routes": (_set(["features"], ["exits", "routes"]), "'routes' needs version 2"),
    "unknown_feature": (_set(["features"], ["exits", "teleport"]), "['teleport']"),
    "missing_key": (_missing_key, "missing required key 'entry'"),
    "macs_type": (_set(["stages", "stage_1", "macs"], "many"), "'macs' must be of type int"),
    "duplicate_tensor": (_duplicate_tensor, "'conv_1' is already produced"),
    "unproduced_input": (_unproduced_input, "input 'nowhere': no model input or earlier stage"),
    "input_from_later_stage": (_input_from_later_stage, "stage 'stage_2' input 'final': no model input"),
    "entry": (_set(["entry"], "stage_9"), "entry 'stage_9'"),
    "next_target": (_set(["stages", "stage_1", "next"], [{"stage": "stage_9", "when": "always"}]), "unknown stage 'stage_9'"),
    "gated_edge": (_set(["stages", "stage_1", "next"], [{"stage": "stage_2", "when": {"gate": "g", "is": "on"}}]), "supports only \"when\": \"always\""),
    "cycle": (_cycle, "cycle"),
    "terminal_without_exit": (_remove_final_exit, "terminal stage 'stage_3' has no exit"),
    "absolute_path": (_set(["files", 0, "path"], "/etc/stages.tflite"), "must be relative"),
    "dotdot_path": (_set(["files", 0, "path"], "../stages.tflite"), "'..'"),
    "bad_sha": (_set(["files", 0, "sha256"], "abc"), "sha256 must be 64"),
    "batch_dim": (_set(["inputs", 0, "shape"], [2, 8, 8, 1]), "must start with the batch dimension"),
    "dtype": (_set(["inputs", 0, "dtype"], "complex64"), "unsupported dtype 'complex64'"),
    "exit_tensor": (_set(["exits", 0, "tensor"], "conv_1"), "exit 'exit_1': a classifier exit must output"),
    "policy_kind": (_set(["exits", 0, "policy"], {"kind": "margin", "threshold": 0.5}), "unknown policy kind 'margin'"),
    "policy_threshold": (_set(["exits", 0, "policy"], {"kind": "entropy", "threshold": "low"}), "finite number"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_manifest_is_refused_naming_the_fault(manifest, case):
    edit, message = INVALID[case]
    broken = copy.deepcopy(manifest)
    edit(broken)
    with pytest.raises(ManifestError) as info:
        validate_manifest(broken)
    assert message in str(info.value)


def test_valid_manifest_round_trips_through_dumps(manifest):
    assert json.loads(runtime.dumps_manifest(manifest)) == manifest


def _rewrite(folder, edit):
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))


def test_load_error_names_the_manifest_file(export, tmp_path):
    folder = export.copy_to(tmp_path)
    _rewrite(folder, _set(["version"], 7))
    with pytest.raises(ManifestError, match=r"manifest\.json: manifest: unsupported version 7"):
        runtime.load(folder)


def test_missing_file(export, tmp_path):
    folder = export.copy_to(tmp_path)
    os.remove(folder / "stages.tflite")
    with pytest.raises(FileIntegrityError, match="'stages.tflite' is missing"):
        runtime.load(folder / "manifest.json")


def test_tampered_file_fails_the_hash(export, tmp_path):
    folder = export.copy_to(tmp_path)
    data = bytearray((folder / "stages.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "stages.tflite").write_bytes(bytes(data))
    with pytest.raises(FileIntegrityError, match="'stages.tflite': sha256 does not match"):
        runtime.load(folder)


def test_truncated_file_fails_the_size_check(export, tmp_path):
    folder = export.copy_to(tmp_path)
    data = (folder / "stages.tflite").read_bytes()
    (folder / "stages.tflite").write_bytes(data[:-10])
    with pytest.raises(FileIntegrityError, match="size is"):
        runtime.load(folder)


def test_symlink_out_of_the_folder_is_refused(export, tmp_path):
    folder = export.copy_to(tmp_path)
    outside = tmp_path / "elsewhere.tflite"
    os.replace(folder / "stages.tflite", outside)
    os.symlink(outside, folder / "stages.tflite")
    with pytest.raises(FileIntegrityError, match="symbolic link"):
        runtime.load(folder)


def test_path_resolving_outside_is_refused(export, tmp_path):
    # A symlinked directory inside the folder leading out of it.
    folder = export.copy_to(tmp_path)
    (tmp_path / "outside").mkdir()
    os.replace(folder / "stages.tflite", tmp_path / "outside" / "stages.tflite")
    os.symlink(tmp_path / "outside", folder / "sub")
    _rewrite(folder, lambda m: [
        f.update(path="sub/stages.tflite") for f in m["files"]
    ] + [s.update(file="sub/stages.tflite") for s in m["stages"]])
    with pytest.raises(FileIntegrityError, match="'sub/stages.tflite' goes through a symbolic link"):
        runtime.load(folder)


def _change_image_shape(m):
    for spec in m["inputs"] + _stage(m, "stage_1")["inputs"]:
        spec["shape"] = [None, 8, 8, 2]


def _change_image_dtype(m):
    for spec in m["inputs"] + _stage(m, "stage_1")["inputs"]:
        spec["dtype"] = "float16"


def _rename_conv_1(m):
    for stage in m["stages"]:
        for spec in stage["inputs"] + stage["outputs"]:
            if spec["name"] == "conv_1":
                spec["name"] = "conv_1_renamed"


SIGNATURE_MISMATCH = {
    "shape": (_change_image_shape, "input 'image' has shape [-1, 8, 8, 1] in the model file"),
    "dtype": (_change_image_dtype, "input 'image' is float32 in the model file but the manifest says float16"),
    "signature": (_set(["stages", "stage_2", "signature"], "nope"), "signature 'nope' is not in the model file"),
    "output_keys": (_rename_conv_1, "signature outputs are"),
}


@pytest.mark.parametrize("case", sorted(SIGNATURE_MISMATCH))
def test_manifest_disagreeing_with_the_signature_is_refused(export, tmp_path, case):
    edit, message = SIGNATURE_MISMATCH[case]
    folder = export.copy_to(tmp_path)
    _rewrite(folder, edit)
    with pytest.raises(ManifestError) as info:
        runtime.load(folder)
    assert message in str(info.value)
    assert "stage 'stage_" in str(info.value)


def test_verify_false_skips_only_the_hash(export, tmp_path):
    folder = export.copy_to(tmp_path)
    _rewrite(folder, _set(["files", 0, "sha256"], "0" * 64))
    with pytest.raises(FileIntegrityError, match="sha256 does not match"):
        runtime.load(folder)
    chain = runtime.load(folder, verify=False)
    assert chain.predict(export.x_val[:3]).labels.shape == (3,)
    os.remove(folder / "stages.tflite")
    with pytest.raises(FileIntegrityError, match="is missing"):
        runtime.load(folder, verify=False)
