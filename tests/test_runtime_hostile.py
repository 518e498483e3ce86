"""Hostile export folders and bad arguments: every one is a documented, bounded error.

Each case here was once an undocumented exception, a hang, a silent change
or an unverified model run; `load` must refuse it with a `ManifestError` /
`FileIntegrityError` naming the file (and key), or a `TypeError` /
`ValueError` naming the argument.
"""

import json
import os
import threading

import numpy as np
import pytest
from runtime_fixtures import digits_export
from runtime_fixtures import rehash
from runtime_fixtures import untrained_digits_export
from runtime_fixtures import signature_using_largest_constant, without_largest_constant

from keras_dynamic import runtime
from keras_dynamic.runtime import FileIntegrityError
from keras_dynamic.runtime import InputError
from keras_dynamic.runtime import ManifestError
from keras_dynamic.runtime import files
from keras_dynamic.runtime import validate_manifest

# No message may embed a whole received value.
MAX_MESSAGE = 1000


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture
def folder(export, tmp_path):
    return export.copy_to(tmp_path)


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _write_text(folder, text):
    (folder / "manifest.json").write_text(text, encoding="utf-8")


def _edit(folder, edit):
    m = _manifest(folder)
    edit(m)
    _write_text(folder, json.dumps(m))


def _refused(folder, error=ManifestError, match=None):
    with pytest.raises(error, match=match) as info:
        runtime.load(folder)
    message = str(info.value)
    assert len(message) < MAX_MESSAGE, message[:300]
    return message


# ------------------------------------------------------------ manifest text
def test_deep_nesting_is_refused(folder):
    text = json.dumps(_manifest(folder))
    depth = 100_000
    _write_text(folder, text[:-1] + ', "producer": ' + "[" * depth + "]" * depth + "}")
    assert "manifest.json" in _refused(folder, match="nested")


def test_moderate_nesting_beyond_the_limit_is_refused(folder):
    nested = json.loads("[" * 40 + "]" * 40)
    manifest = dict(_manifest(folder), model={"name": "m", "extra": nested})
    _write_text(folder, json.dumps(manifest))
    _refused(folder, match="nested more than 32 levels")


def test_number_over_the_digit_limit_is_refused(folder):
    text = json.dumps(dict(_manifest(folder), entry="__NUMBER__"))
    _write_text(folder, text.replace('"__NUMBER__"', "9" * 5000))
    assert "manifest.json" in _refused(folder, match="an integer of 5000 digits")


def test_non_utf8_manifest_is_refused(folder):
    text = json.dumps(dict(_manifest(folder), model={"name": "\u00e9"}), ensure_ascii=False)
    (folder / "manifest.json").write_bytes(text.encode("latin-1"))
    _refused(folder, match=r"manifest\.json: not UTF-8 text")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_constants_are_refused(folder, constant):
    m = _manifest(folder)
    m["exits"][0]["policy"]["threshold"] = "__X__"
    _write_text(folder, json.dumps(m).replace('"__X__"', constant))
    _refused(folder, match=f"{constant} is not valid JSON")


def test_duplicate_keys_are_refused(folder):
    text = json.dumps(_manifest(folder))
    # A JVM reader keeping the first "entry" would start at another stage.
    _write_text(folder, '{"entry": "stage_2", ' + text[1:])
    assert "manifest.json" in _refused(folder, match="the key 'entry' appears twice")


def test_oversized_manifest_is_refused_without_reading_it(folder):
    _write_text(folder, json.dumps(_manifest(folder)) + " " * (5 << 20))
    _refused(folder, FileIntegrityError, match="more than the 4194304 bytes allowed")


# ------------------------------------------------------- special manifests
def test_manifest_fifo_is_refused_without_blocking(folder):
    os.remove(folder / "manifest.json")
    os.mkfifo(folder / "manifest.json")
    outcome = []
    worker = threading.Thread(
        target=lambda: outcome.append(pytest.raises(FileIntegrityError, runtime.load, folder)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader before failing
        with open(folder / "manifest.json", "w"):
            pass
        pytest.fail("load() blocked on a FIFO manifest")
    assert "is not a regular file" in str(outcome[0].value)


@pytest.mark.parametrize("target", ["/dev/zero", "outside"])
def test_manifest_symlink_is_refused(folder, tmp_path, target):
    if target == "outside":
        target = tmp_path / "elsewhere.json"
        os.replace(folder / "manifest.json", target)
    else:
        os.remove(folder / "manifest.json")
    os.symlink(target, folder / "manifest.json")
    _refused(folder, FileIntegrityError, match="'manifest.json' goes through a symbolic link")
    _refused(folder / "manifest.json", FileIntegrityError, match="symbolic link")


def test_tflite_path_is_refused_as_not_a_manifest(folder):
    _refused(folder / "stages.tflite", match="is a TFLite model, not a manifest")


@pytest.mark.parametrize("path", [None, 3, b"\xff"])
def test_path_of_the_wrong_type_is_a_type_error_naming_it(path):
    with pytest.raises(TypeError, match="`path` must be an export folder"):
        runtime.load(path)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(FileIntegrityError, match="No export folder or manifest at"):
        runtime.load(tmp_path / "nowhere")


# ----------------------------------------------------------- file entries
def _set_file_path(path):
    def edit(m):
        m["files"][0]["path"] = path
        for stage in m["stages"]:
            stage["file"] = path
    return edit


@pytest.mark.parametrize(
    "path, message",
    [
        ("x" * 300 + ".tflite", "component longer than 255 bytes"),
        ("stages\x00.tflite", "contains a control character"),
        ("stages\ud800.tflite", "not valid Unicode"),
        ("sub/" * 2000 + "stages.tflite", "longer than 4096 bytes"),
    ],
    ids=["long_component", "nul", "lone_surrogate", "long_path"],
)
def test_unusable_file_paths_are_refused(folder, path, message):
    _edit(folder, _set_file_path(path))
    assert "manifest.json: manifest: file" in _refused(folder, FileIntegrityError, match=message)


def test_stage_file_fifo_is_refused_without_blocking(folder):
    os.remove(folder / "stages.tflite")
    os.mkfifo(folder / "stages.tflite")
    # Its listed size differs too; a fitting size must still not block.
    _refused(folder, FileIntegrityError, match="'stages.tflite' is not a regular file")


def test_unused_file_is_refused_before_it_is_read(folder):
    # A sparse 8 GiB file: hashing it would take minutes.
    with open(folder / "big.bin", "wb") as f:
        f.truncate(8 << 30)
    _edit(folder, lambda m: m["files"].append(
        {"path": "big.bin", "sha256": "0" * 64, "bytes": 8 << 30}))
    _refused(folder, match=r"file\(s\) \['big.bin'\] are listed in 'files' but no stage uses them")


def test_wrong_size_is_refused_before_the_file_is_read(folder):
    with open(folder / "stages.tflite", "r+b") as f:
        f.truncate(8 << 30)
    _refused(folder, FileIntegrityError, match="size is 8589934592 bytes")


# ------------------------------------------------------------------ numbers
def test_huge_threshold_is_refused_naming_it(folder):
    _edit(folder, lambda m: m["exits"][0]["policy"].update(threshold=10**400))
    message = _refused(folder, match="the threshold must be a finite number")
    assert "exit 'exit_1'" in message and "<int of" in message


def test_huge_macs_are_refused_naming_them(folder):
    _edit(folder, lambda m: m["stages"][0].update(macs=10**30))
    _refused(folder, match=r"stage 'stage_1': 'macs' must lie in \[0, 9223372036854775807\]")


def test_total_macs_cannot_wrap_around(folder):
    def edit(m):
        for stage in m["stages"]:
            stage["macs"] = 2**62
    _edit(folder, edit)
    _refused(folder, match="sum to more than 9223372036854775807")


def test_quantization_scale_that_overflows_is_refused(export):
    m = _manifest(export.folder)
    for spec in m["inputs"] + m["stages"][0]["inputs"]:
        spec.update(dtype="int8", quantization={"scale": 10**400, "zero_point": 0})
    with pytest.raises(ManifestError, match="'scale' must be a positive finite number"):
        validate_manifest(m)


def test_near_zero_scale_on_a_float_exit_is_refused(folder):
    # The file says float (scale 0); a manifest scale of 5e-9 would multiply
    # the exit's logits by 5e-9 and send every sample to the end.
    def edit(m):
        for spec in m["stages"][0]["outputs"]:
            if spec["name"] == "exit_1":
                spec["quantization"] = {"scale": 5e-9, "zero_point": 0}
    _edit(folder, edit)
    _refused(folder, match="tensor 'exit_1': a float32 tensor cannot have quantization")


def test_quantization_scale_is_compared_relatively():
    tf = pytest.importorskip("tensorflow")
    import keras

    from keras_dynamic.runtime.interpreter import _check_details
    from keras_dynamic.runtime.interpreter import interpreter_class

    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(3, name="y")(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.random((1, 4), dtype=np.float32)] for _ in range(16)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = interpreter_class()[0](model_content=converter.convert())
    runner = interpreter.get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    scale, zero_point = detail["quantization"]

    def spec(s):
        return [{"name": name, "shape": [None, 4], "dtype": "int8",
                 "quantization": {"scale": s, "zero_point": int(zero_point)}}]

    _check_details(runner.get_input_details(), spec(scale), "input", "stage 's'")
    _check_details(runner.get_input_details(), spec(scale * (1 + 1e-7)), "input", "stage 's'")
    # 5e-9 apart: within an absolute 1e-8, but 1e-6 relative to a scale of ~4e-3.
    with pytest.raises(ManifestError, match="has quantization"):
        _check_details(runner.get_input_details(), spec(scale + 5e-9), "input", "stage 's'")


# ------------------------------------------------------- stage file content
def test_hashed_bytes_are_the_bytes_that_run(export, tmp_path_factory, tmp_path, monkeypatch):
    """Swapping the file right after it is opened cannot get an unverified model run."""
    folder = export.copy_to(tmp_path)
    other = untrained_digits_export(tmp_path_factory) / "stages.tflite"
    swap = tmp_path / "swap.tflite"
    stage_file = str(folder / "stages.tflite")
    swapped = []

    def swap_after_open():
        if not swapped:
            swapped.append(True)
            swap.write_bytes(other.read_bytes())
            os.replace(swap, stage_file)

    real_os_open, real_open = os.open, open

    def hooked_os_open(path, *args, **kwargs):
        fd = real_os_open(path, *args, **kwargs)
        if os.fspath(path) in (stage_file, "stages.tflite"):
            swap_after_open()
        return fd

    def hooked_open(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if os.fspath(path) == stage_file:
            swap_after_open()
        return f

    monkeypatch.setattr(os, "open", hooked_os_open)
    monkeypatch.setattr(files, "open", hooked_open, raising=False)
    chain = runtime.load(folder)
    monkeypatch.undo()
    assert swapped
    expected = runtime.load(export.folder).run_all(export.x_val)
    for name, values in chain.run_all(export.x_val).items():
        np.testing.assert_array_equal(values, expected[name], err_msg=name)


def test_corrupt_but_rehashed_file_is_refused_at_load(folder):
    path = folder / "stages.tflite"
    content = path.read_bytes()
    damaged_stage = signature_using_largest_constant(content)
    path.write_bytes(without_largest_constant(content))
    rehash(folder)
    message = _refused(folder, FileIntegrityError, match="cannot run this stage")
    assert f"stage '{damaged_stage}' (file 'stages.tflite')" in message


def test_garbage_stage_file_is_refused(folder):
    (folder / "stages.tflite").write_bytes(b"\x00" * 1000)
    rehash(folder)
    _refused(folder, FileIntegrityError, match="'stages.tflite' is not a loadable TFLite model")


def test_confinement_without_openat(folder, tmp_path, monkeypatch):
    """Where `os.open` cannot take a folder descriptor, paths are checked first."""
    monkeypatch.setattr(files, "_OPENAT", False)
    assert runtime.load(folder).predict(np.zeros((1, 8, 8, 1), np.float32)).labels.shape == (1,)
    outside = tmp_path / "elsewhere.tflite"
    os.replace(folder / "stages.tflite", outside)
    os.symlink(outside, folder / "stages.tflite")
    _refused(folder, FileIntegrityError, match="symbolic link")
    os.remove(folder / "stages.tflite")
    _refused(folder, FileIntegrityError, match="'stages.tflite' is missing")


# ------------------------------------------------------- load's arguments
@pytest.mark.parametrize("num_threads", [0, 10**5, True, 1.5])
def test_num_threads_is_bounded(export, num_threads):
    with pytest.raises(ValueError, match=r"`num_threads` must be None or an int in \[1, 1024\]"):
        runtime.load(export.folder, num_threads=num_threads)


@pytest.mark.parametrize("delegate", ["gpu", ["gpu"], object()])
def test_delegate_must_be_a_loaded_delegate(export, delegate):
    with pytest.raises(TypeError, match="`delegate` must be a delegate loaded with"):
        runtime.load(export.folder, delegate=delegate)


def test_expected_manifest_hash(export, folder):
    chain = runtime.load(export.folder)
    assert len(chain.manifest_sha256) == 64
    runtime.load(folder, expected_sha256=chain.manifest_sha256.upper())
    _edit(folder, lambda m: m["exits"][0]["policy"].update(threshold=0.5))
    with pytest.raises(FileIntegrityError, match="is not the expected"):
        runtime.load(folder, expected_sha256=chain.manifest_sha256)
    with pytest.raises(ValueError, match="`expected_sha256` must be None or 64 hex digits"):
        runtime.load(folder, expected_sha256="abc")


def test_save_policy_into_a_missing_folder_names_the_target(export, tmp_path):
    chain = runtime.load(export.folder)
    target = tmp_path / "missing" / "policy.json"
    with pytest.raises(FileNotFoundError) as info:
        chain.save_policy(target)
    assert str(target) in str(info.value) and ".policy.json." not in str(info.value)


# ----------------------------------------------------- predict's arguments
def test_batch_size_in_sample_mode_is_refused(export):
    chain = runtime.load(export.folder)
    with pytest.raises(ValueError, match="`batch_size` applies to mode='batch' only"):
        chain.predict(export.x_val[:4], mode="sample", batch_size=2)


def test_masked_values_are_refused(export):
    chain = runtime.load(export.folder)
    x = np.ma.masked_array(export.x_val[:4], mask=np.zeros(export.x_val[:4].shape, bool))
    expected = chain.predict(export.x_val[:4]).labels
    np.testing.assert_array_equal(chain.predict(x).labels, expected)  # nothing masked
    x.mask[1, 2, 3, 0] = True
    with pytest.raises(InputError, match="input 'image': a masked array with masked values"):
        chain.predict(x)


def test_messages_do_not_embed_huge_values(export):
    chain = runtime.load(export.folder)
    huge = "x" * 15_000
    cases = [
        lambda: chain.predict(
            export.x_val[:1], policy={"exit_1": {"kind": huge, "threshold": 0.5}}),
        lambda: chain.predict(export.x_val[:1], policy={huge: None}),
        lambda: chain.predict(export.x_val[:1], policy=[huge]),
        lambda: chain.predict({"image": export.x_val[:1], huge: 1}),
        lambda: chain.predict(export.x_val[:1], mode=huge),
        lambda: runtime.Policy({"e": {"kind": "entropy", "threshold": [huge] * 1000}}),
        lambda: validate_manifest({"format": huge}),
    ]
    for case in cases:
        with pytest.raises(ValueError) as info:
            case()
        assert len(str(info.value)) < MAX_MESSAGE, str(info.value)[:300]


def test_long_strings_in_the_manifest_are_refused_briefly(folder):
    _edit(folder, lambda m: m["stages"][0].update(name="s" * 15_000))
    _refused(folder, match="'name' is longer than 256 characters")
