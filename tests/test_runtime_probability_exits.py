"""Exits that give probabilities (a softmax-activated classifier), read from the manifest.

The model's early exit ends in a softmax and its final classifier is
``Dense(softmax)`` (the keras.applications default). The exporter detects the
``Dense(softmax)`` but not a softmax inside a custom layer's ``call``; the
fixture strips what it wrote, leaving the manifest an older writer would
have made, and each test sets the field by hand.
"""

import json

import numpy as np
import pytest
from runtime_fixtures import NUM_TRAIN
from runtime_fixtures import digits

from keras_dynamic import runtime
from keras_dynamic.runtime import ManifestError
from keras_dynamic.runtime.policy import softmax


def _model():
    import keras

    import keras_dynamic as kd

    class SoftmaxExit(kd.layers.EarlyExit):
        def call(self, inputs, training=None):
            return keras.ops.softmax(super().call(inputs, training=training))

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(inputs)
    exit_1 = SoftmaxExit(10, name="exit_1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    final = keras.layers.Dense(10, activation="softmax", name="final")(x)
    return keras.Model(inputs, [exit_1, final], name="softmax_exits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import keras

    from keras_dynamic import converters

    x, y = digits()
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=["sparse_categorical_crossentropy"] * 2)
    model.fit(x[:NUM_TRAIN], [y[:NUM_TRAIN]] * 2, epochs=6, batch_size=64, verbose=0)
    x_val, y_val = x[NUM_TRAIN:], y[NUM_TRAIN:]
    keras_probabilities = dict(zip(model.output_names, model.predict(x_val, verbose=0)))
    folder = tmp_path_factory.mktemp("softmax") / "export"
    converters.export_stages(model, folder)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    written = {ex["name"]: ex.pop("values", "logits") for ex in manifest["exits"]}
    assert written == {"exit_1": "logits", "final": "probabilities"}
    manifest["features"].remove("probability_exits")
    path.write_text(json.dumps(manifest))
    return folder, x_val, y_val, keras_probabilities


def _mark(folder, exits=("exit_1", "final"), *, feature=True, values="probabilities"):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for ex in manifest["exits"]:
        if ex["name"] in exits:
            ex["values"] = values
    if feature:
        manifest["features"].append("probability_exits")
    path.write_text(json.dumps(manifest))


@pytest.fixture
def folder(trained, tmp_path):
    import shutil

    dest = tmp_path / "export"
    shutil.copytree(trained[0], dest)
    return dest


def test_probabilities_are_the_models_own(trained, folder):
    _, x_val, _, keras_probabilities = trained
    unmarked = runtime.load(folder)
    _mark(folder)
    chain = runtime.load(folder)
    assert chain.exit_values == ("probabilities", "probabilities")
    values = chain.run_all(x_val)
    for name, expected in keras_probabilities.items():
        np.testing.assert_allclose(values[name], expected, atol=1e-5, err_msg=name)
    for mode in ("batch", "sample"):
        result = chain.predict(x_val, mode=mode)
        # The default policy (max_softmax >= 0.9) reads exit_1's values as
        # probabilities as they are, with no second softmax.
        early = values["exit_1"].max(1) >= 0.9
        assert 0 < early.sum() < len(early)
        np.testing.assert_array_equal(result.exit_index, np.where(early, 0, 1))
        chosen = np.where(early[:, None], values["exit_1"], values["final"])
        np.testing.assert_allclose(result.probabilities, chosen, atol=0)
        np.testing.assert_array_equal(result.labels, chosen.argmax(1))
    # Read as logits (what an export without the field means), the same
    # tensor gives softmax-of-softmax: flattened, a different answer.
    flattened = unmarked.predict(x_val).probabilities
    np.testing.assert_allclose(flattened, softmax(values["final"]), atol=1e-6)
    assert np.abs(flattened - values["final"]).max() > 0.3


@pytest.mark.parametrize("kind", ["max_softmax", "entropy"])
@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_policies_read_probabilities_as_they_are(trained, folder, kind, mode):
    _, x_val, _, _ = trained
    _mark(folder)
    chain = runtime.load(folder)
    p = chain.run_all(x_val)["exit_1"].astype(np.float64)
    score = p.max(1) if kind == "max_softmax" else (p * np.log(np.maximum(p, 1e-300))).sum(1)
    threshold = float(np.median(score))
    if kind == "entropy":
        threshold = -threshold
    result = chain.predict(
        x_val, mode=mode, policy={"exit_1": {"kind": kind, "threshold": threshold}}
    )
    leaves = score >= threshold if kind == "max_softmax" else -score <= threshold
    np.testing.assert_array_equal(result.exit_index == 0, leaves)
    assert 0 < leaves.sum() < len(leaves)
    np.testing.assert_array_equal(result.probabilities[leaves], p[leaves].astype(np.float32))


def test_calibration_uses_probabilities(trained, folder):
    _, x_val, y_val, _ = trained
    _mark(folder)
    chain = runtime.load(folder)
    drop = 0.02
    chain.calibrate(x_val, y_val, max_accuracy_drop=drop)
    threshold = chain.policy.rules["exit_1"].threshold
    top = chain.run_all(x_val)["exit_1"].max(1).astype(np.float64)
    # The candidates are midpoints between observed top probabilities (and
    # the two bounds), not between softmax-of-probability scores.
    levels = np.concatenate([[2.0], np.unique(top)[::-1], [0.0]])
    assert threshold in (levels[:-1] + levels[1:]) / 2
    final_accuracy = (chain.run_all(x_val)["final"].argmax(1) == y_val).mean()
    for mode in ("batch", "sample"):
        result = chain.predict(x_val, mode=mode)
        np.testing.assert_array_equal(result.exit_index == 0, top >= threshold)
        assert (result.labels == y_val).mean() >= final_accuracy - drop - 1e-12


def test_probability_exits_need_the_feature(folder):
    _mark(folder, feature=False)
    with pytest.raises(ManifestError, match="exit 'exit_1': gives probabilities but 'features' "
                                             "does not list 'probability_exits'"):
        runtime.load(folder)


def test_unknown_values_are_refused(folder):
    _mark(folder, values="odds")
    message = r"'values' must be one of \('logits', 'probabilities'\)"
    with pytest.raises(ManifestError, match=message):
        runtime.load(folder)


def test_explicit_logits_and_an_unused_feature_load(trained, folder):
    _, x_val, _, _ = trained
    plain = runtime.load(folder).predict(x_val)
    _mark(folder, values="logits")
    chain = runtime.load(folder)
    assert chain.exit_values == ("logits", "logits")
    np.testing.assert_array_equal(chain.predict(x_val).probabilities, plain.probabilities)
