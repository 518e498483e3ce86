"""What an export shows the user: one line per step, no TensorFlow log, a progress bar, clear refusals."""

import importlib.util
import io
import os
import subprocess
import sys

import keras
import pytest

from keras_dynamic import converters
from export_models import chain_model

STEP_LINES = (
    "Partitioned model", "Counted MACs", "Converted", "XNNPACK runs", "Parity on", "Exported to"
)

SCRIPT = """
import sys
from keras_dynamic import converters
import keras
sys.path.insert(0, {tests!r})
from export_models import chain_model

model = chain_model(2)
converters.export_stages(model, sys.argv[1])
converters.export_static(model, sys.argv[2])
"""


def test_an_export_prints_one_line_per_step_and_no_tensorflow_log(tmp_path):
    script = tmp_path / "export_script.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out"), str(tmp_path / "m.tflite")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    # TensorFlow's import banner, the converter's and the interpreter's logs.
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == len(STEP_LINES) + 1, result.stdout
    for line, start in zip(lines, STEP_LINES):
        assert line.startswith(start), line
    assert lines[-1].startswith("Converted output 'final' of model 'chain_2'")


def test_verbose_0_prints_nothing_and_2_adds_details(tmp_path, capfd):
    converters.export_stages(chain_model(2), tmp_path / "quiet", verbose=0)
    converters.export_static(chain_model(2), tmp_path / "quiet.tflite", verbose=0)
    assert capfd.readouterr() == ("", "")
    converters.export_stages(chain_model(2), tmp_path / "loud", verbose=2)
    out = capfd.readouterr().out
    assert "  stage_1: inputs image -> outputs exit_1, conv_1b" in out
    assert "  final: " in out
    with pytest.raises(ValueError, match="verbose"):
        converters.export_stages(chain_model(2), tmp_path / "x", verbose=3)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_progress_bar(tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    converters.export_stages(chain_model(2), tmp_path / "out")
    shown = terminal.getvalue()
    # tqdm redraws the bar in place with carriage returns.
    assert "\rexport: " in shown and "/5 " in shown
    for start in STEP_LINES:
        assert start in shown


def test_exporting_on_another_keras_backend_says_how(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for export, target in (
        (converters.export_stages, tmp_path / "out"),
        (converters.export_static, tmp_path / "m.tflite"),
    ):
        with pytest.raises(
            RuntimeError,
            match=r"needs the TensorFlow backend.*'jax'.*model\.save\('model\.keras'\).*KERAS_BACKEND=tensorflow",
        ):
            export(chain_model(2), target, verbose=0)
    assert os.listdir(tmp_path) == []


OTHER_BACKEND = next(
    (name for name in ("jax", "torch") if importlib.util.find_spec(name)), None
)


@pytest.mark.skipif(OTHER_BACKEND is None, reason="neither jax nor torch is installed")
def test_exporting_under_a_real_other_backend_says_how(tmp_path):
    code = (
        "import keras\n"
        "from keras_dynamic import converters\n"
        "inputs = keras.Input((4,))\n"
        "model = keras.Model(inputs, keras.layers.Dense(2)(inputs))\n"
        "converters.export_stages(model, 'out')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": OTHER_BACKEND},
        timeout=600,
    )
    assert "RuntimeError: export_stages needs the TensorFlow backend" in result.stderr
    assert os.listdir(tmp_path) == []


def test_captures_in_several_threads_give_descriptor_2_back(capfd):
    import threading

    from keras_dynamic.converters.logs import captured_stderr

    def export_like():
        for _ in range(200):
            with captured_stderr() as log:
                os.write(2, b"hidden\n")
            assert "hidden" in log.text()

    threads = [threading.Thread(target=export_like) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"
