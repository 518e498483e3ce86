"""The Keras side under the JAX and PyTorch backends, and JAX -> TensorFlow export.

The backend-agnostic test modules run again in a subprocess under each other
backend, in a venv that has that backend, Keras, numpy, pytest, scikit-learn
and this package but no TensorFlow (made once, kept as `.venv-jax` /
`.venv-torch`, remade when pyproject.toml or setup.py change). A model
trained on JAX is exported under TensorFlow by this process, from its
`.keras` file, as the README shows.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# torch is pinned: 2.13.0 is a CPU build that installs from a local wheel
# here, while an unpinned torch pulls gigabytes of CUDA wheels.
BACKENDS = {
    "jax": ["-e", ".[jax,test]"],
    "torch": ["torch==2.13.0", "-e", ".[torch,test]"],
}
# The layer and loss tests; test_every_layer also trains, saves and loads
# the model helpers (SelfDistillation, TemperatureScheduler).
AGNOSTIC_TESTS = [
    "tests/test_early_exit.py",
    "tests/test_dynamic_conv.py",
    "tests/test_losses.py",
    "tests/test_every_layer.py",
    "tests/test_quantization.py",
]


@contextlib.contextmanager
def _locked(path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def backend_python(backend):
    """The venv's python for `backend`, made once (under a lock: xdist)."""
    venv = REPO / f".venv-{backend}"
    packages = BACKENDS[backend]
    recipe = (REPO / "pyproject.toml").read_bytes() + (REPO / "setup.py").read_bytes()
    stamp = venv / f".installed-{hashlib.sha256(recipe + str(packages).encode()).hexdigest()[:16]}"
    python = venv / "bin" / "python"
    with _locked(REPO / f".venv-{backend}.lock"):
        if stamp.exists():
            return python
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *packages],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=REPO,
        )
        if install.returncode != 0:
            # Leave no half-made venv behind for the next run to trust.
            subprocess.run(["rm", "-rf", str(venv)], check=True)
            pytest.fail(f"could not install {packages}: {install.stderr[-2000:]}")
        for old in venv.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    return python


def _run(python, args, backend, timeout):
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            "PYTHONPATH": str(REPO / "tests"),
            "KERAS_BACKEND": backend,
        },
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_layer_tests_pass_on_backend(backend):
    python = backend_python(backend)
    done = _run(
        python,
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", *AGNOSTIC_TESTS],
        backend,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1]


_TRAIN_ON_JAX = """
import sys
import keras
import numpy as np
from test_every_layer import every_layer_model

assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 12, 12, 3)).astype("float32")
y = rng.integers(0, 4, 64)
model = every_layer_model()
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile("adam", loss=[loss, loss])
model.fit(x, (y, y), batch_size=16, epochs=2, verbose=0)
model.save(sys.argv[1])
np.save(sys.argv[2], x[:8])
np.save(sys.argv[3], model.predict(x[:8], verbose=0)[-1])
assert "tensorflow" not in sys.modules
"""


@pytest.mark.slow
def test_trained_on_jax_exports_under_tensorflow(tmp_path):
    import keras

    from keras_dynamic import converters
    from keras_dynamic import runtime

    python = backend_python("jax")
    paths = [str(tmp_path / name) for name in ("m.keras", "x.npy", "logits.npy")]
    done = _run(python, ["-c", textwrap.dedent(_TRAIN_ON_JAX), *paths], "jax", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert keras.backend.backend() == "tensorflow"
    model = keras.models.load_model(paths[0])
    x = np.load(paths[1])
    # export_stages checks the chained TFLite stages against this model.
    manifest = converters.export_stages(model, tmp_path / "out", parity_samples=x)
    assert [e["name"] for e in json.loads(open(manifest).read())["exits"]] == [
        "exit_1",
        "final",
    ]
    # And against the logits the JAX process computed.
    logits = runtime.load(os.path.dirname(manifest)).run_all(x)["final"]
    np.testing.assert_allclose(logits, np.load(paths[2]), rtol=1e-4, atol=1e-4)
