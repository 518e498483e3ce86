"""Where an export goes: what overwrite=True may replace, staging folders, names, modes."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic.converters import folders
from export_models import chain_model

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and renames")


@pytest.fixture(scope="module")
def previous_export(tmp_path_factory):
    """A finished export of chain_model(2), to copy where a test needs one."""
    out = tmp_path_factory.mktemp("previous") / "export"
    converters.export_stages(chain_model(2), out, verbose=0)
    return out


def _copy(previous_export, folder):
    shutil.copytree(previous_export, folder)
    return folder


def _contents(folder):
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))}


# ------------------------------------------------- overwrite=True replaces only an export


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no manifest.json written by keras_dynamic"):
        converters.export_stages(chain_model(2), out, overwrite=True, verbose=0)
    assert _contents(out) == {"notes.txt": b"mine"}


def test_overwrite_refuses_a_folder_with_someone_elses_manifest(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": "other.tool", "files": []}))
    with pytest.raises(FileExistsError, match="no manifest.json written by keras_dynamic"):
        converters.export_stages(chain_model(2), out, overwrite=True, verbose=0)
    assert os.listdir(out) == ["manifest.json"]


def test_overwrite_refuses_a_regular_file(tmp_path):
    out = tmp_path / "out"
    out.write_bytes(b"data")
    with pytest.raises(FileExistsError, match="is a file"):
        converters.export_stages(chain_model(2), out, overwrite=True, verbose=0)
    assert out.read_bytes() == b"data"


def test_overwrite_refuses_an_export_holding_other_files(tmp_path, previous_export):
    out = _copy(previous_export, tmp_path / "out")
    (out / "results.csv").write_text("keep me")
    before = _contents(out)
    with pytest.raises(FileExistsError, match=r"holds files its manifest does not list \('results.csv'\)"):
        converters.export_stages(chain_model(3), out, overwrite=True, verbose=0)
    assert _contents(out) == before


def test_overwrite_refuses_a_link_and_the_current_directory(tmp_path, previous_export, monkeypatch):
    real = _copy(previous_export, tmp_path / "real")
    before = _contents(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="symbolic link"):
        converters.export_stages(chain_model(3), link, overwrite=True, verbose=0)
    monkeypatch.chdir(real)
    with pytest.raises(FileExistsError, match="current directory"):
        converters.export_stages(chain_model(3), ".", overwrite=True, verbose=0)
    assert _contents(real) == before and link.is_symlink()


def test_overwrite_replaces_a_previous_export_and_its_write_temporaries(tmp_path, previous_export):
    out = _copy(previous_export, tmp_path / "out")
    # What a save_policy() killed mid-write leaves: part of the export.
    (out / ".tmp-0123456789abcdef").write_text("{")
    converters.export_stages(chain_model(3), out, overwrite=True, verbose=0)
    assert sorted(os.listdir(out)) == ["manifest.json", "stages.tflite"]
    assert len(json.loads((out / "manifest.json").read_text())["stages"]) == 3
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_out_dir_is_a_complete_export_at_every_rename(tmp_path, previous_export, monkeypatch):
    out = _copy(previous_export, tmp_path / "out")
    missing = []
    real_rename = os.rename

    def watched_rename(source, target):
        real_rename(source, target)
        if not (out / "manifest.json").is_file():
            missing.append((source, target))

    monkeypatch.setattr(os, "rename", watched_rename)
    converters.export_stages(chain_model(3), out, overwrite=True, verbose=0)
    assert missing == []
    assert len(json.loads((out / "manifest.json").read_text())["stages"]) == 3


# ------------------------------------------------- staging folders


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_export_removes_what_killed_exports_left(tmp_path):
    host = folders._host()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = _dead_pid()
        names = {
            "dead_partial": f".keras_dynamic-partial-{host}-{dead}-0000aaaa",
            "dead_old": f".keras_dynamic-old-{host}-{dead}-0000bbbb",
            "live": f".keras_dynamic-partial-{host}-{sleeper.pid}-0000cccc",
            "other_host_recent": f".keras_dynamic-partial-00000000-{dead}-0000dddd",
            "other_host_old": f".keras_dynamic-partial-00000000-{dead}-0000eeee",
            "not_ours": ".keras_dynamic-partial-notes",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "stages.tflite").write_bytes(b"partial")
        two_days = time.time() - 2 * 24 * 3600
        os.utime(tmp_path / names["other_host_old"], (two_days, two_days))
        # A file with such a name is not a staging folder.
        (tmp_path / f".keras_dynamic-partial-{host}-{dead}-0000ffff").write_text("x")
        converters.export_stages(chain_model(2), tmp_path / "out", verbose=0)
        left = set(os.listdir(tmp_path))
        assert names["dead_partial"] not in left
        assert names["dead_old"] not in left
        assert names["other_host_old"] not in left
        assert {names["live"], names["other_host_recent"], names["not_ours"], "out"} <= left
        assert f".keras_dynamic-partial-{host}-{dead}-0000ffff" in left
    finally:
        sleeper.kill()
        sleeper.wait()


def test_savedmodel_temporaries_stay_inside_the_staging_folder(tmp_path, monkeypatch):
    from keras_dynamic.converters import tflite

    system_temp = tmp_path / "system_temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    converted = []
    convert = tflite.convert_signatures

    def recording_convert(saved_model_dir, *args, **kwargs):
        converted.append(os.path.dirname(saved_model_dir))
        return convert(saved_model_dir, *args, **kwargs)

    monkeypatch.setattr(tflite, "convert_signatures", recording_convert)
    exports = tmp_path / "exports"
    converters.export_stages(chain_model(2), exports / "out", verbose=0)
    converters.export_static(chain_model(2), exports / "static.tflite", verbose=0)
    assert len(converted) == 2
    for folder in converted:
        # A killed export leaves its SavedModel where the next export cleans up.
        assert os.path.dirname(folder) == str(exports)
        assert os.path.basename(folder).startswith(".keras_dynamic-partial-")
    # TensorFlow's autograph leaves its generated sources there, not ours.
    ours = [p for p in system_temp.iterdir() if not p.name.startswith("__autograph_generated")]
    assert ours == []
    assert sorted(os.listdir(exports)) == ["out", "static.tflite"]


def test_a_basename_of_250_characters_works(tmp_path):
    name = "e" * 250
    path = converters.export_stages(chain_model(2), tmp_path / name, verbose=0)
    kd.runtime.load(os.path.dirname(path))
    static = converters.export_static(chain_model(2), tmp_path / (name[:243] + ".tflite"), verbose=0)
    assert os.path.getsize(static) > 0
    assert sorted(os.listdir(tmp_path)) == sorted([name, name[:243] + ".tflite"])


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_folders_and_files_get_the_umask_modes(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = converters.export_stages(chain_model(2), tmp_path / "out", verbose=0)
        static = converters.export_static(chain_model(2), tmp_path / "m.tflite", verbose=0)
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    folder = os.path.dirname(path)
    assert mode(folder) == 0o777 & ~umask
    for name in os.listdir(folder):
        assert mode(os.path.join(folder, name)) == 0o666 & ~umask, name
    assert mode(static) == 0o666 & ~umask


def test_atomic_write_keeps_a_replaced_files_mode(tmp_path):
    from keras_dynamic.runtime.files import atomic_write_bytes

    target = tmp_path / "policy.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    atomic_write_bytes(target, b'{"a": 1}')
    assert target.read_bytes() == b'{"a": 1}'
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["policy.json"]
    missing = tmp_path / "missing" / "x.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"Cannot write {missing}")):
        atomic_write_bytes(missing, b"")

