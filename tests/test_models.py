"""Tests of the model builders, SelfDistillation and kd.data; backend-agnostic."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_losses import numpy_distillation

from keras_dynamic.data import load_digits_splits
from keras_dynamic.layers import EarlyExit
from keras_dynamic.losses import exit_loss_weights
from keras_dynamic.models import SelfDistillation
from keras_dynamic.models import multi_exit_cnn
from keras_dynamic.models import strip_self_distillation

SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TINY = dict(input_shape=(8, 8, 1), num_classes=10, widths=(4, 8, 8), depths=(1, 1, 1))


@pytest.fixture(scope="module")
def digits():
    return load_digits_splits(image_size=8)


# ---- data ------------------------------------------------------------------


def test_digits_splits():
    splits = load_digits_splits(image_size=12, val_size=0.2, test_size=540, seed=3)
    sizes = [len(splits.y_train), len(splits.y_val), len(splits.y_test)]
    assert sizes == [1797 - 359 - 540, 359, 540]
    for x, y in [
        (splits.x_train, splits.y_train),
        (splits.x_val, splits.y_val),
        (splits.x_test, splits.y_test),
    ]:
        assert x.shape[1:] == (12, 12, 1) and x.dtype == np.float32
        assert y.dtype == np.int32
        assert 0.0 <= x.min() and x.max() <= 1.0
        # Stratified: every class in every split, in nearly equal numbers.
        counts = np.bincount(y, minlength=10)
        assert counts.min() >= 0.8 * counts.max()


def test_digits_upsampling_is_nearest_neighbour():
    small = load_digits_splits(image_size=8)
    large = load_digits_splits(image_size=32)
    np.testing.assert_array_equal(small.y_test, large.y_test)
    np.testing.assert_array_equal(
        large.x_test[:, ::4, ::4], small.x_test
    )
    np.testing.assert_array_equal(large.x_test[:, 3::4, 3::4], small.x_test)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"image_size": 4}, "image_size"),
        ({"val_size": 0}, "val_size"),
        ({"test_size": 1.5}, "test_size"),
        ({"val_size": 1000, "test_size": 900}, "val_size"),
    ],
)
def test_digits_invalid(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        load_digits_splits(**kwargs)


def test_data_without_scikit_learn_names_the_extra():
    script = (
        "import sys\n"
        "sys.modules['sklearn'] = None  # makes `import sklearn` raise\n"
        "try:\n"
        "    import keras_dynamic.data\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'pip install "keras-dynamic[demo]"' in done.stdout
    assert "scikit-learn" in done.stdout


# ---- multi_exit_cnn ----------------------------------------------------------


def _conv_macs(model, upto=None):
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            total += h * w * c_out * k_h * k_w * c_in
        if layer.name == upto:
            break
    return total


def test_builds_with_named_ordered_exits():
    model = multi_exit_cnn()
    assert model.output_names == ["exit_1", "exit_2", "final"]
    assert [tuple(o.shape) for o in model.outputs] == [(None, 10)] * 3
    assert all(
        isinstance(model.get_layer(n), EarlyExit) for n in model.output_names
    )
    # Exits read blocks of decreasing resolution: shallow -> final.
    for exit_name, block in [("exit_1", "block1"), ("exit_2", "block2"), ("final", "block3")]:
        assert model.get_layer(exit_name).input is model.get_layer(f"{block}_out").output


@pytest.mark.parametrize(
    "exit_head, pooling, grid",
    [(None, "grid", 4), ({"grid_size": 2}, "grid", 2), ({"pooling": "avg"}, "avg", 4)],
)
def test_early_exit_head(exit_head, pooling, grid):
    model = multi_exit_cnn((16, 16, 1), widths=(32, 8, 8), exit_head=exit_head)
    head = model.get_layer("exit_1")
    assert (head.pooling, head.grid_size) == (pooling, grid)
    defaults = EarlyExit(10).get_config()
    assert head.conv_filters == (exit_head or {}).get("conv_filters", defaults["conv_filters"])
    assert model.get_layer("final").pooling == "avg"
    assert model.get_layer("final").conv_filters is None


def test_first_exit_is_cheap():
    model = multi_exit_cnn((32, 32, 1))
    # Layers are in topological order; block 1 ends before block 2's pool.
    first = _conv_macs(model, upto="block1_out")
    assert first * 10 < _conv_macs(model)


def test_exits_subset():
    model = multi_exit_cnn(**TINY, exits=(False, True, True))
    assert model.output_names == ["exit_1", "final"]
    assert model.get_layer("exit_1").input is model.get_layer("block2_out").output


def test_exit_head_options():
    model = multi_exit_cnn(**TINY, exit_head={"hidden_units": 6}, exit_dropout=0.2)
    assert model.get_layer("exit_1").hidden_units == 6
    assert model.get_layer("final").hidden_units is None
    assert model.get_layer("final").dropout == 0.2


def test_plain_blocks_without_residual():
    model = multi_exit_cnn(**TINY, residual=False)
    assert not any(isinstance(l, keras.layers.Add) for l in model.layers)


def test_cross_exit_skip_reads_block_1_and_feeds_last_block():
    model = multi_exit_cnn(**TINY, cross_exit_skip=True)
    pool = model.get_layer("cross_exit_skip_pool")
    assert pool.input is model.get_layer("block1_out").output
    add = model.get_layer("cross_exit_skip_add")
    assert add.output is model.get_layer("block3_1_conv").input
    assert tuple(add.output.shape) == (None, 2, 2, 8)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"input_shape": (8, 8)}, "input_shape"),
        ({"input_shape": (2, 2, 1)}, "input_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"exit_head": {"grid_size": 0}}, "grid_size"),
        ({"exit_head": {"name": "head"}}, "exit_head"),
        ({"widths": ()}, "widths"),
        ({"widths": (4, 8), "depths": (1, 1, 1)}, "depths"),
        ({"exits": (True, True, False)}, "exits"),
        ({"exits": (True, True)}, "exits"),
        ({"widths": (4, 8), "depths": (1, 1), "cross_exit_skip": True}, "cross_exit_skip"),
    ],
)
def test_builder_invalid(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        multi_exit_cnn(**{**TINY, **kwargs})


def test_fit_and_save_load_round_trip(tmp_path, digits):
    model = multi_exit_cnn(**TINY, cross_exit_skip=True)
    model.compile(
        "adam",
        loss=[SCCE] * 3,
        loss_weights=exit_loss_weights(3, "linear"),
        metrics={"final": "accuracy"},
    )
    y = digits.y_train[:64]
    history = model.fit(digits.x_train[:64], [y, y, y], batch_size=64, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "final_accuracy" in history.history
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.output_names == model.output_names
    x = digits.x_test[:16]
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)


# ---- SelfDistillation -------------------------------------------------------


def _wrapped(temperature=3.0, weight=0.5, **kwargs):
    base = multi_exit_cnn(**TINY)
    return base, SelfDistillation(
        base, temperature=temperature, weight=weight, **kwargs
    )


def test_distillation_term_matches_numpy():
    rng = np.random.default_rng(2)
    logits = [rng.normal(size=(5, 10)).astype("float32") * 2 for _ in range(3)]
    _, model = _wrapped(temperature=2.5, weight=0.3)
    expected = 0.3 * sum(
        numpy_distillation(logits[2], student, 2.5).mean() for student in logits[:2]
    )
    got = float(model.distillation_term(logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    # A named teacher: exit_2 teaches exit_1 and the final exit.
    _, model = _wrapped(temperature=2.5, weight=0.3, teacher="exit_2")
    expected = 0.3 * sum(
        numpy_distillation(logits[1], logits[i], 2.5).mean() for i in (0, 2)
    )
    np.testing.assert_allclose(float(model.distillation_term(logits)), expected, rtol=1e-5)

    sample_weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5], "float32")
    _, model = _wrapped(temperature=2.5, weight=0.3)
    expected = 0.3 * sum(
        (numpy_distillation(logits[2], s, 2.5) * sample_weight).mean()
        for s in logits[:2]
    )
    np.testing.assert_allclose(
        float(model.distillation_term(logits, sample_weight)), expected, rtol=1e-5
    )


def test_reported_loss_includes_the_distillation_term(digits):
    base, model = _wrapped(weight=0.7)
    model.compile("adam", loss=[SCCE] * 3, loss_weights=[0.2, 0.3, 0.5])
    base.compile("adam", loss=[SCCE] * 3, loss_weights=[0.2, 0.3, 0.5])
    x, y = digits.x_val[:32], digits.y_val[:32]
    logits = base.predict(x, verbose=0)
    term = 0.7 * sum(
        numpy_distillation(logits[2], s, 3.0).mean() for s in logits[:2]
    )
    plain = base.evaluate(x, [y, y, y], batch_size=32, verbose=0, return_dict=True)
    wrapped = model.evaluate(x, [y, y, y], batch_size=32, verbose=0, return_dict=True)
    assert term > 1e-3
    np.testing.assert_allclose(wrapped["loss"], plain["loss"] + term, rtol=1e-4)
    np.testing.assert_allclose(wrapped["distillation_loss"], term, rtol=1e-4)


def test_fit_with_distillation_trains_on_digits(digits):
    keras.utils.set_random_seed(0)
    base, model = _wrapped()
    model.compile(
        keras.optimizers.Adam(3e-3),
        loss=[SCCE] * 3,
        loss_weights=exit_loss_weights(3),
        metrics={"final": "accuracy", "exit_1": "accuracy"},
    )
    y, yv = digits.y_train, digits.y_val
    history = model.fit(
        digits.x_train,
        (y, y, y),
        batch_size=64,
        validation_data=(digits.x_val, (yv, yv, yv)),
        epochs=6,
        verbose=0,
    )
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert history.history["distillation_loss"][-1] > 0
    assert history.history["final_accuracy"][-1] > 0.4
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert "val_exit_1_accuracy" in history.history
    assert "val_distillation_loss" in history.history

    stripped = model.strip()
    assert stripped is base
    assert strip_self_distillation(model) is base
    assert strip_self_distillation(base) is base
    assert stripped.output_names == ["exit_1", "exit_2", "final"]
    assert {id(v) for v in stripped.weights} == {id(v) for v in model.weights}
    x = digits.x_test[:32]
    for a, b in zip(model.predict(x, verbose=0), stripped.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_wrapper_save_load_round_trip(tmp_path):
    base, model = _wrapped(temperature=2.0, weight=0.25, teacher="final")
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype="float32")
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "wrapped.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SelfDistillation)
    assert (loaded.temperature, loaded.weight, loaded.teacher) == (2.0, 0.25, "final")
    for a, b in zip(expected, loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)


def test_wrapper_invalid_arguments():
    base = multi_exit_cnn(**TINY)
    for kwargs, argument in [
        ({"temperature": 0.0}, "temperature"),
        ({"weight": -1.0}, "weight"),
        ({"teacher": "exit_9"}, "teacher"),
        ({"teacher": 3}, "teacher"),
    ]:
        with pytest.raises(ValueError, match=argument):
            SelfDistillation(base, **kwargs)
    single = keras.Model(base.inputs, base.outputs[-1])
    with pytest.raises(ValueError, match="two outputs"):
        SelfDistillation(single)
    with pytest.raises(TypeError, match="model"):
        SelfDistillation("not a model")
