"""Every keras-dynamic layer in one model: fit, save, reload, same outputs.

Backend-agnostic: `./run tests` runs this module under TensorFlow, JAX and
PyTorch (tests/test_backends.py). Also checks that `import keras_dynamic`
registers the layers with Keras, and that on the JAX and PyTorch backends
the Keras side does not import TensorFlow.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_dynamic as kd

REPO = pathlib.Path(__file__).resolve().parents[1]
SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def every_layer_model():
    """A two-exit model using every public keras-dynamic layer."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = kd.layers.CondConv2D(
        8, 3, padding="same", activation="relu", routing_dropout=0.2, seed=1, name="cond"
    )(x)
    exit_1 = kd.layers.EarlyExit(4, dropout=0.1, seed=2, name="exit_1")(x)
    x = kd.layers.DepthwiseCondConv2D(3, strides=2, padding="same", name="depthwise")(x)
    x = kd.layers.DynamicConv2D(
        8, 3, padding="same", activation="relu", temperature=30.0, name="dyconv"
    )(x)
    final = kd.layers.EarlyExit(
        4, pooling="avg", conv_filters=6, hidden_units=5, name="final"
    )(x)
    return keras.Model(inputs, [exit_1, final], name="every_layer")


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 12, 12, 3)).astype("float32")
    return x, rng.integers(0, 4, n)


def test_every_layer_fits_saves_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    base = every_layer_model()
    model = kd.models.SelfDistillation(base, temperature=2.0, weight=0.5)
    model.compile(
        keras.optimizers.Adam(1e-2),
        loss=[SCCE, SCCE],
        loss_weights=kd.losses.exit_loss_weights(2, "linear"),
    )
    x, y = _data()
    before = [v.numpy().copy() for v in base.trainable_variables]
    history = model.fit(
        x,
        (y, y),
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[kd.callbacks.TemperatureScheduler(30.0, 1.0, epochs=1)],
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["temperature"] == [30.0, 1.0]
    assert history.history["distillation_loss"][-1] > 0
    for variable, old in zip(base.trainable_variables, before):
        assert not np.allclose(variable.numpy(), old), variable.path

    expected = model.predict(x, verbose=0)
    for saved, name in ((model, "wrapped.keras"), (model.strip(), "base.keras")):
        saved.save(tmp_path / name)
        loaded = keras.models.load_model(tmp_path / name)
        assert type(loaded) is type(saved)
        for a, b in zip(expected, loaded.predict(x, verbose=0)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(loaded.get_layer("dyconv").temperature.numpy()) == 1.0


def _python(script, **env):
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_import_keras_dynamic_is_enough_to_load_a_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = every_layer_model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    x, _ = _data(4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0)[-1])
    wrapped = kd.models.SelfDistillation(every_layer_model())
    wrapped(x)
    wrapped.save(str(tmp_path / "wrapped.keras"))
    load = f"""
        import numpy as np
        model = keras.models.load_model({path!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)[-1]
        np.testing.assert_allclose(got, np.load({str(tmp_path / "y.npy")!r}), rtol=1e-5)
        wrapped = keras.models.load_model({str(tmp_path / "wrapped.keras")!r})
        assert type(wrapped).__name__ == "SelfDistillation"
        print("LOADED")
    """
    # Keras imported after keras_dynamic (the post-import hook), and before.
    for imports in ("import keras_dynamic\nimport keras", "import keras\nimport keras_dynamic"):
        assert "LOADED" in _python(imports + textwrap.dedent(load))


@pytest.mark.parametrize(
    "module",
    [
        "keras_dynamic.layers.early_exit",
        "keras_dynamic.losses.distillation",
        "keras_dynamic.models.self_distillation",
    ],
)
def test_any_first_import_registers_everything(module):
    # The first Keras import may come from any module of the package; the
    # registration hook then imports the others, which must all succeed
    # (keras_dynamic.losses did not before its __init__ imported Keras
    # first). On the JAX and PyTorch backends nothing imports TensorFlow.
    out = _python(
        f"""
        import sys
        import {module}
        import keras
        names = ["EarlyExit", "CondConv2D", "DepthwiseCondConv2D", "DynamicConv2D",
                 "DistillationLoss", "SelfDistillation"]
        missing = [n for n in names
                   if keras.saving.get_registered_object("keras_dynamic>" + n) is None]
        assert not missing, missing
        if keras.backend.backend() != "tensorflow":
            assert "tensorflow" not in sys.modules
        print("REGISTERED")
        """
    )
    assert "REGISTERED" in out



def test_runtime_import_leaves_keras_alone():
    # Where Keras is installed too: the registration hook waits for an import
    # of Keras that the runtime never makes.
    out = _python(
        """
        import sys
        import keras_dynamic
        import keras_dynamic.runtime
        print(sorted(m for m in sys.modules
                     if m.split(".")[0] in ("keras", "tensorflow", "jax", "torch")))
        """
    )
    assert out.strip().splitlines()[-1] == "[]"
