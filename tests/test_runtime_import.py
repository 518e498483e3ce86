"""keras_dynamic.runtime must load and predict where only an edge stack is installed."""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime

REPO = pathlib.Path(__file__).resolve().parents[1]
EDGE_VENV = REPO / ".venv-edge"
# The last tflite-runtime release; it needs numpy < 2 and has wheels up to CPython 3.11.
EDGE_PACKAGES = ["tflite-runtime==2.14.0", "numpy<2"]


def _predict_in_subprocess(python, export, x_path, blocked, expected_backend):
    script = textwrap.dedent(
        f"""
        import sys
        # None in sys.modules makes any import of these raise ImportError.
        for name in {tuple(blocked)!r}:
            sys.modules[name] = None
        import numpy as np
        import keras_dynamic.runtime as rt

        chain = rt.load({str(export.folder)!r})
        x = np.load({str(x_path)!r})
        result = chain.predict(x, mode="sample")
        batch = chain.predict(x)
        assert (result.labels == batch.labels).all()
        assert chain.backend == {expected_backend!r}, chain.backend
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") and sys.modules[m] is not None)
        assert not loaded, loaded
        print("labels", " ".join(map(str, result.labels)))
        """
    )
    done = subprocess.run(
        [str(python), "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [int(v) for v in done.stdout.split("labels", 1)[1].split()]


def test_runtime_runs_without_tensorflow_or_keras(tmp_path_factory, tmp_path):
    export = digits_export(tmp_path_factory)
    np.save(tmp_path / "x.npy", export.x_val[:16])
    labels = _predict_in_subprocess(
        sys.executable,
        export,
        tmp_path / "x.npy",
        blocked=("tensorflow", "keras", "tf_keras"),
        expected_backend="ai_edge_litert",
    )
    expected = runtime.load(export.folder).predict(export.x_val[:16]).labels
    assert labels == expected.tolist()


def _edge_python():
    """A venv with only tflite-runtime and numpy 1.x, made once and kept."""
    python = EDGE_VENV / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(EDGE_VENV)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *EDGE_PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        # Leave no half-made venv behind for the next run to trust.
        subprocess.run(["rm", "-rf", str(EDGE_VENV)], check=True)
        pytest.fail(f"could not install {EDGE_PACKAGES}: {install.stderr[-2000:]}")
    return python


@pytest.mark.skipif(
    sys.version_info[:2] > (3, 11), reason="tflite-runtime has no wheel past CPython 3.11"
)
def test_runtime_falls_back_to_tflite_runtime_on_numpy_1(tmp_path_factory, tmp_path):
    export = digits_export(tmp_path_factory)
    np.save(tmp_path / "x.npy", export.x_val[:16])
    labels = _predict_in_subprocess(
        _edge_python(),
        export,
        tmp_path / "x.npy",
        blocked=("tensorflow", "keras", "tf_keras", "ai_edge_litert"),
        expected_backend="tflite_runtime",
    )
    expected = runtime.load(export.folder).predict(export.x_val[:16]).labels
    assert labels == expected.tolist()
