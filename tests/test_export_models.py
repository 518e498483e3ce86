"""Models export_stages once failed on, or exported wrongly: each must now export right or be refused by name."""

import json
import os

import keras
import numpy as np
import pytest

import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic.converters import PartitionError
from keras_dynamic.converters import partition
from keras_dynamic.converters.partition import exit_names
from keras_dynamic.runtime.manifest import SUPPORTED_FEATURES

RNG = np.random.default_rng(3)


def _two_exit_model(inputs, trunk, name=None, final=None):
    """`inputs` -> `trunk` -> exit_1, then one more conv block -> final."""
    e1 = kd.layers.EarlyExit(4, name="exit_1")(trunk)
    deeper = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(trunk)
    final = final or kd.layers.EarlyExit(4, name="final")
    return keras.Model(inputs, [e1, final(deeper)], name=name)


def _chain_matches_keras(path, model, x, rtol=1e-4, atol=1e-5):
    chain = kd.runtime.load(os.path.dirname(path))
    names = [t._keras_history[0].name for t in model.inputs]
    args = [x[n] for n in names] if isinstance(x, dict) else x
    expected = keras.tree.flatten(model(args, training=False))
    lite = chain.run_all(x)
    for name, value in zip(exit_names(model), expected):
        np.testing.assert_allclose(lite[name], np.asarray(value), rtol=rtol, atol=atol, err_msg=name)
    return chain


# ---------------------------------------------------------------- item 9


def test_uint8_image_input_exports_with_samples_in_its_own_range(tmp_path):
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    model = _two_exit_model(inputs, x)
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    manifest = json.loads(open(path).read())
    assert manifest["inputs"][0]["dtype"] == "uint8"
    _chain_matches_keras(path, model, RNG.integers(0, 256, (5, 8, 8, 1)).astype(np.uint8))


def test_uint8_image_input_calibrates_int8_on_uint8_samples(tmp_path):
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    model = _two_exit_model(inputs, x)
    # Whole-number floats are accepted for an integer input and cast.
    data = RNG.integers(0, 256, (16, 8, 8, 1)).astype(np.float32)
    path = converters.export_stages(
        model, tmp_path / "out", quantize="int8", representative_data=data, verbose=0
    )
    assert json.loads(open(path).read())["inputs"][0]["dtype"] == "uint8"


def test_int32_token_ids_into_an_embedding_export(tmp_path):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8, name="embed")(tokens)
    e1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    y = keras.layers.Dense(8, activation="relu", name="mix")(x)
    model = keras.Model(tokens, [e1, kd.layers.EarlyExit(3, name="final")(y)])
    # Random parity ids must stay below input_dim=50, or Keras and TFLite
    # would each do their own thing with out-of-range rows.
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    assert json.loads(open(path).read())["inputs"][0]["dtype"] == "int32"
    _chain_matches_keras(path, model, RNG.integers(0, 50, (7, 6)).astype(np.int32))


def test_integer_input_refuses_samples_its_dtype_cannot_hold(tmp_path):
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = _two_exit_model(inputs, x)
    with pytest.raises(ValueError, match="parity_samples.*'image'.*whole numbers"):
        converters.export_stages(
            model, tmp_path / "a", parity_samples=np.full((2, 8, 8, 1), 0.5), verbose=0
        )
    with pytest.raises(ValueError, match="parity_samples.*'image'.*do not fit.*uint8"):
        converters.export_stages(
            model, tmp_path / "b", parity_samples=np.full((2, 8, 8, 1), 300.0), verbose=0
        )
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- item 10


def test_a_layer_called_on_both_sides_of_a_cut_serves_both_stages(tmp_path):
    inputs = keras.Input((8, 8, 4), name="image")
    shared = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="shared_conv")
    first = shared(inputs)
    e1 = kd.layers.EarlyExit(3, name="exit_1")(first)
    final = kd.layers.EarlyExit(3, name="final")(shared(first))
    model = keras.Model(inputs, [e1, final])
    plans = partition(model)
    assert "shared_conv" in plans[0].layer_names and "shared_conv" in plans[1].layer_names
    # One layer, one set of weights, in both stage models.
    assert plans[0].model.get_layer("shared_conv") is plans[1].model.get_layer("shared_conv")
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    _chain_matches_keras(path, model, RNG.standard_normal((5, 8, 8, 4)).astype(np.float32))


# ---------------------------------------------------------------- item 11


def test_dict_outputs_export_with_their_keys_as_exit_names(tmp_path):
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    e1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    y = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    model = keras.Model(inputs, {"early": e1, "late": kd.layers.EarlyExit(3, name="final")(y)})
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    chain = _chain_matches_keras(path, model, RNG.standard_normal((5, 8, 8, 2)).astype(np.float32))
    assert chain.exit_names == ("early", "late")
    static = converters.export_static(model, tmp_path / "static.tflite", output="early", verbose=0)
    assert os.path.getsize(static) > 0


# ---------------------------------------------------------------- item 12


def _softmax_final(kind):
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    e1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if kind == "dense":
        final = keras.layers.Dense(3, activation="softmax", name="final")(pooled)
    elif kind == "activation":
        final = keras.layers.Activation("softmax", name="final")(keras.layers.Dense(3)(pooled))
    elif kind == "softmax_layer":
        final = keras.layers.Softmax(name="final")(keras.layers.Dense(3)(pooled))
    elif kind == "ops_softmax":
        final = keras.ops.softmax(keras.layers.Dense(3)(pooled))
    elif kind == "log_softmax":
        final = keras.layers.Dense(3, activation="log_softmax", name="final")(pooled)
    elif kind == "softmax_over_batch":
        final = keras.layers.Softmax(axis=0, name="final")(keras.layers.Dense(3)(pooled))
    else:
        final = keras.layers.Dense(3, name="final")(pooled)
    return keras.Model(inputs, [e1, final])


@pytest.mark.parametrize(
    "kind, values",
    [
        ("dense", "probabilities"),
        ("activation", "probabilities"),
        ("softmax_layer", "probabilities"),
        ("ops_softmax", "probabilities"),
        # log-probabilities are logits: softmax(log_softmax(z)) == softmax(z).
        ("log_softmax", "logits"),
        ("softmax_over_batch", "logits"),
        ("plain", "logits"),
    ],
)
def test_softmax_activated_final_output_is_detected(kind, values):
    plans = partition(_softmax_final(kind))
    assert [p.exit_values for p in plans] == ["logits", values]


def test_logit_exits_keep_the_manifest_readable_by_older_runtimes(tmp_path):
    path = converters.export_stages(_softmax_final("plain"), tmp_path / "out", verbose=0)
    manifest = json.loads(open(path).read())
    assert manifest["features"] == ["exits"]
    assert [e["values"] for e in manifest["exits"]] == ["logits", "logits"]


@pytest.mark.skipif(
    "probability_exits" not in SUPPORTED_FEATURES,
    reason="the runtime does not read probability exits yet",
)
def test_softmax_final_output_is_exported_as_probabilities(tmp_path):
    model = _softmax_final("dense")
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    manifest = json.loads(open(path).read())
    assert "probability_exits" in manifest["features"]
    assert [e["values"] for e in manifest["exits"]] == ["logits", "probabilities"]
    x = RNG.standard_normal((6, 8, 8, 2)).astype(np.float32)
    chain = kd.runtime.load(os.path.dirname(path))
    keras_probabilities = np.asarray(model(x, training=False)[1])
    # Every sample at the final exit: its probabilities are the model's own,
    # not a softmax of them.
    result = chain.predict(x, policy={"exit_1": None})
    np.testing.assert_allclose(result.probabilities, keras_probabilities, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- item 13


def test_layers_and_inputs_named_with_python_keywords_export(tmp_path):
    inputs = keras.Input((8, 8, 2), name="None")
    x = keras.layers.Lambda(lambda t: t * 2.0, name="lambda")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="class")(x)
    model = _two_exit_model(inputs, x)
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    manifest = json.loads(open(path).read())
    assert manifest["inputs"][0]["name"] == "None_"
    assert {t["name"] for t in manifest["stages"][1]["inputs"]} == {"class_"}
    x = RNG.standard_normal((4, 8, 8, 2)).astype(np.float32)
    chain = kd.runtime.load(os.path.dirname(path))
    lite = chain.run_all({"None_": x})
    np.testing.assert_allclose(lite["final"], np.asarray(model(x)[1]), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- item 14


def test_a_stage_that_mixes_the_samples_of_a_batch_is_refused(tmp_path):
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    centred = keras.layers.Lambda(
        lambda t: t - keras.ops.mean(t, axis=0, keepdims=True), name="batch_centre"
    )(x)
    model = _two_exit_model(inputs, centred)
    with pytest.raises(PartitionError, match=r"Stage 'stage_1' \(layers: .*batch_centre.*not a per-sample"):
        converters.export_stages(model, tmp_path / "out", verbose=0)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- item 15


def test_a_mixed_float16_model_is_exported_in_float32(tmp_path):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((8, 8, 2), name="image")
        model = _two_exit_model(inputs, keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs))
    finally:
        keras.config.set_dtype_policy(previous)
    path = converters.export_stages(model, tmp_path / "out", verbose=0)
    manifest = json.loads(open(path).read())
    assert {t["dtype"] for s in manifest["stages"] for t in s["outputs"]} == {"float32"}
    x = RNG.standard_normal((5, 8, 8, 2)).astype(np.float32)
    lite = kd.runtime.load(os.path.dirname(path)).run_all(x)
    # The export computes in float32; the model in float16.
    for name, value in zip(("exit_1", "final"), model(x, training=False)):
        np.testing.assert_allclose(lite[name], np.asarray(value, np.float32), rtol=2e-2, atol=2e-2)
    # The user's model and the global policy are untouched.
    assert model.get_layer("conv_a").dtype_policy.name == "mixed_float16"
    assert keras.config.dtype_policy().name == previous.name


def test_an_input_without_fixed_spatial_sizes_is_named(tmp_path):
    inputs = keras.Input((None, None, 3), name="photo")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    # Global pooling heads build on any size; the grid head would refuse first.
    e1 = kd.layers.EarlyExit(4, pooling="avg", name="exit_1")(x)
    y = keras.layers.Conv2D(4, 3, padding="same")(x)
    model = keras.Model(inputs, [e1, kd.layers.EarlyExit(4, pooling="avg", name="final")(y)])
    with pytest.raises(PartitionError, match=r"Input 'photo'.*\(None, None, None, 3\).*fixed size"):
        converters.export_stages(model, tmp_path / "out", verbose=0)
    assert os.listdir(tmp_path) == []


class _Counter(keras.layers.Layer):
    """Counts its calls in a variable: a stateful layer."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


def test_a_stateful_layer_is_named(tmp_path):
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    model = _two_exit_model(inputs, _Counter(name="call_counter")(x))
    with pytest.raises(PartitionError, match=r"Stage 'stage_1': layer\(s\) 'call_counter' assign variables"):
        converters.export_stages(model, tmp_path / "out", verbose=0)
    assert os.listdir(tmp_path) == []


def test_empty_parity_samples_are_named(tmp_path):
    inputs = keras.Input((8, 8, 2), name="image")
    model = _two_exit_model(inputs, keras.layers.Conv2D(4, 3, padding="same")(inputs))
    with pytest.raises(ValueError, match="`parity_samples` input 'image' is empty"):
        converters.export_stages(
            model, tmp_path / "out", parity_samples=np.zeros((0, 8, 8, 2), np.float32), verbose=0
        )


# ---------------------------------------------------------------- item 16


class _ChangedWhenTraced(keras.layers.Layer):
    """`x` when Keras runs eagerly, `x * scale + offset` in a traced graph.

    The converter sees the traced graph, so the export computes something
    other than the Keras model: what the parity check is there to catch.
    """

    def __init__(self, scale=1.0, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset

    def call(self, x):
        import tensorflow as tf

        if tf.executing_eagerly():
            return x
        return x * self.scale + tf.constant(self.offset, x.dtype)


def _tiny_logit_model(changed):
    inputs = keras.Input((4,), name="features")
    e1 = kd.layers.EarlyExit(3, pooling=None, name="exit_1")(inputs)
    tiny = keras.layers.Dense(
        3, name="tiny", kernel_initializer=keras.initializers.RandomNormal(stddev=1e-9, seed=1)
    )(inputs)
    final = _ChangedWhenTraced(scale=1.5 if changed else 1.0, name="final")(tiny)
    return keras.Model(inputs, [e1, final])


def test_tiny_logits_are_checked_at_their_own_scale(tmp_path):
    x = RNG.standard_normal((8, 4)).astype(np.float32)
    # A correct export of 1e-9 logits passes ...
    converters.export_stages(_tiny_logit_model(False), tmp_path / "right", parity_samples=x, verbose=0)
    # ... and a stage off by 50% of them fails, where max(1, |logit|) saw 1e-9.
    with pytest.raises(converters.ParityError, match=r"Exit 'final'.*differs from Keras by 0\.5"):
        converters.export_stages(_tiny_logit_model(True), tmp_path / "wrong", parity_samples=x, verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["right"]


def test_a_label_flip_on_a_small_sample_is_caught(tmp_path):
    inputs = keras.Input((2,), name="features")
    e1 = kd.layers.EarlyExit(2, pooling=None, name="exit_1")(inputs)
    final = _ChangedWhenTraced(offset=[0.0, 5e-3], name="final")(inputs)
    model = keras.Model(inputs, [e1, final])
    # Sample 0 sets the exit's scale (100): 5e-3 is within its tolerance.
    # Sample 1's classes differ by 5e-4, far from a tie at its scale, and the
    # offset flips its label.
    x = np.array([[100.0, 0.0], [1e-3, 5e-4]], np.float32)
    with pytest.raises(converters.ParityError, match=r"Exit 'final'.*different class.*1 sample\(s\) \(first: sample 1\)"):
        converters.export_stages(model, tmp_path / "out", parity_samples=x, verbose=0)
