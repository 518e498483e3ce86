"""Gates (BlockGate, ChannelGate) and the gate merges (GatedResidual, GatedConcat).

Backend-agnostic: Keras 3 and NumPy only, so the file runs under the
TensorFlow, JAX and PyTorch backends.
"""

import keras
import numpy as np
import pytest

from keras_dynamic.callbacks import TemperatureScheduler
from keras_dynamic.layers import BlockGate
from keras_dynamic.layers import ChannelGate
from keras_dynamic.layers import GatedConcat
from keras_dynamic.layers import GatedResidual
from keras_dynamic.layers import force_gates
from keras_dynamic.losses import target_rate_loss

RNG = np.random.default_rng(0)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _numpy_logits(gate, x):
    """The gate's (off, on) logits at inference, from its weights."""
    h = x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
    h = h @ gate.hidden.kernel.numpy()
    if gate.batch_norm:
        bn = gate.norm
        h = (h - bn.moving_mean.numpy()) / np.sqrt(
            bn.moving_variance.numpy() + bn.epsilon
        ) * bn.gamma.numpy() + bn.beta.numpy()
    else:
        h = h + gate.hidden.bias.numpy()
    logits = np.maximum(h, 0) @ gate.logits.kernel.numpy() + gate.logits.bias.numpy()
    return logits[:, : gate.groups], logits[:, gate.groups :]


def _randomize_batch_norm(gate):
    bn = gate.norm
    for variable, low, high in (
        (bn.moving_mean, -0.5, 0.5),
        (bn.moving_variance, 0.5, 2.0),
        (bn.gamma, 0.5, 1.5),
        (bn.beta, -0.5, 0.5),
    ):
        variable.assign(RNG.uniform(low, high, variable.shape).astype("float32"))


@pytest.mark.parametrize("batch_norm", [True, False])
@pytest.mark.parametrize(
    "make_gate, shape",
    [
        (lambda **kw: BlockGate(hidden_units=5, **kw), (64, 6, 6, 7)),
        (lambda **kw: ChannelGate(3, hidden_units=5, **kw), (64, 6, 6, 7)),
        (lambda **kw: ChannelGate(4, **kw), (64, 9)),
        (lambda **kw: BlockGate(**kw), (64, 5, 7)),
    ],
)
def test_inference_matches_numpy_and_is_hard(make_gate, shape, batch_norm):
    gate = make_gate(batch_norm=batch_norm, initial_bias=(0.0, 0.0))
    x = RNG.normal(size=shape).astype("float32")
    gate.build(shape)
    if batch_norm:
        _randomize_batch_norm(gate)
    # Centre each group's logit difference on the median sample, so that
    # both decisions occur.
    ref_off, ref_on = _numpy_logits(gate, x)
    gate.logits.bias.assign(
        np.concatenate(
            [np.zeros(gate.groups), -np.median(ref_on - ref_off, axis=0)]
        ).astype("float32")
    )
    off, on = (_np(t) for t in gate.gate_logits(x, training=False))
    ref_off, ref_on = _numpy_logits(gate, x)
    np.testing.assert_allclose(off, ref_off, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(on, ref_on, rtol=1e-4, atol=1e-5)
    g = _np(gate(x, training=False))
    assert g.shape == (shape[0], gate.groups) and g.dtype == np.float32
    assert set(np.unique(g)) <= {0.0, 1.0}
    clear = np.abs(ref_on - ref_off) > 1e-4
    np.testing.assert_array_equal(g[clear], (ref_on > ref_off)[clear])
    assert np.all((0 < g.mean(axis=0)) & (g.mean(axis=0) < 1))


def test_training_samples_are_hard_with_the_gumbel_rate():
    # With a zero kernel the logit difference is the bias difference d for
    # every sample; the straight-through sample is 1 with probability
    # sigmoid(d) (two-class Gumbel-softmax), whatever the temperature.
    d = 1.0
    gate = ChannelGate(
        2, batch_norm=False, temperature=0.3, initial_bias=(0.0, d), seed=3
    )
    x = np.ones((4000, 3), "float32")
    gate.build(x.shape)
    gate.logits.kernel.assign(np.zeros(gate.logits.kernel.shape, "float32"))
    g = _np(gate(x, training=True))
    assert set(np.unique(g)) == {0.0, 1.0}
    np.testing.assert_allclose(g.mean(axis=0), [1 / (1 + np.exp(-d))] * 2, atol=0.03)
    # At inference the same gate is deterministically on (d > 0).
    np.testing.assert_array_equal(_np(gate(x[:5])), np.ones((5, 2)))


def test_default_bias_starts_gates_mostly_open():
    keras.utils.set_random_seed(0)
    gate = BlockGate(seed=0)
    x = RNG.normal(size=(2000, 4, 4, 8)).astype("float32")
    # In training the hidden BN normalizes with batch statistics, so the
    # random kernel spreads the logits; most samples still run the block.
    train_rate = _np(gate(x, training=True)).mean()
    assert 0.6 < train_rate < 0.97, train_rate
    assert _np(gate(x, training=False)).mean() > 0.9


def _gated_model(gate):
    inputs = keras.Input((4, 4, 3))
    fx = keras.layers.Conv2D(3, 3, padding="same", name="body")(inputs)
    g = gate(inputs)
    return keras.Model(inputs, GatedResidual(name="merge")([inputs, fx, g]))


def test_straight_through_gradient_reaches_the_gate_in_fit():
    gate = BlockGate(hidden_units=4, seed=1, name="gate")
    model = _gated_model(gate)
    # Plain SGD: a weight moves by exactly -lr * gradient, so a weight that
    # moves had a non-zero gradient. The hard forward value alone has none.
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = RNG.normal(size=(32, 4, 4, 3)).astype("float32")
    y = RNG.normal(size=(32, 4, 4, 3)).astype("float32")
    before = {w.path: w.numpy().copy() for w in gate.weights}
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    for w in (gate.hidden.kernel, gate.logits.kernel, gate.logits.bias):
        assert not np.allclose(w.numpy(), before[w.path]), w.path
    assert gate.temperature.numpy() == before[gate.temperature.path]


def test_temperature_is_annealed_by_the_scheduler():
    gate = BlockGate(temperature=5.0, seed=0, name="gate")
    model = _gated_model(gate)
    model.compile("sgd", "mse")
    x = RNG.normal(size=(8, 4, 4, 3)).astype("float32")
    history = model.fit(
        x,
        x,
        epochs=3,
        verbose=0,
        callbacks=[TemperatureScheduler(4.0, 1.0, epochs=2)],
    )
    assert history.history["temperature"] == [4.0, 2.5, 1.0]
    assert float(gate.temperature.numpy()) == 1.0
    assert gate.temperature.dtype == "float32" and not gate.temperature.trainable


@pytest.mark.filterwarnings("ignore:Gradients do not exist")
def test_target_rate_loss_pulls_the_rate_to_the_target():
    keras.utils.set_random_seed(2)
    gate = BlockGate(target_rate=0.3, rate_loss_weight=1.0, seed=2, name="gate")
    model = _gated_model(gate)
    x = RNG.normal(size=(128, 4, 4, 3)).astype("float32")

    def training_rate():
        return np.mean([_np(gate(x, training=True)).mean() for _ in range(10)])

    assert training_rate() > 0.55
    # No compiled loss: the gate's own add_loss is the whole objective.
    model.compile(keras.optimizers.Adam(0.01))
    model.fit(x, epochs=15, batch_size=32, verbose=0)
    assert abs(training_rate() - 0.3) < 0.08


def test_rate_loss_only_in_training_and_when_asked():
    x = RNG.normal(size=(16, 5)).astype("float32")
    gate = BlockGate(target_rate=0.0, rate_loss_weight=2.0, seed=0)
    g = gate(x, training=True)
    assert len(gate.losses) == 1
    np.testing.assert_allclose(
        _np(gate.losses[0]), 2.0 * np.mean(_np(g)) ** 2, rtol=1e-6
    )
    gate(x, training=False)
    assert not gate.losses
    plain = BlockGate(seed=0)
    plain(x, training=True)
    assert not plain.losses


def test_force_gates_sets_and_restores():
    gate = BlockGate(name="gate", force=None)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, gate(inputs))
    x = RNG.normal(size=(4, 3)).astype("float32")
    with force_gates(model, "on") as gates:
        assert gates == [gate]
        np.testing.assert_array_equal(model.predict(x, verbose=0), np.ones((4, 1)))
        np.testing.assert_array_equal(_np(gate(x, training=True)), np.ones((4, 1)))
    with force_gates(model, "off"):
        np.testing.assert_array_equal(model.predict(x, verbose=0), np.zeros((4, 1)))
    assert gate.force is None
    with pytest.raises(ValueError, match="value"):
        with force_gates(model, "maybe"):
            pass
    with pytest.raises(ValueError, match="force"):
        gate.force = 1


@pytest.mark.parametrize(
    "layer",
    [
        BlockGate(
            hidden_units=8,
            batch_norm=False,
            temperature=2.0,
            initial_bias=(0.5, 1.5),
            target_rate=0.4,
            rate_loss_weight=3.0,
            force="off",
            seed=7,
            kernel_regularizer="l2",
            name="g",
        ),
        ChannelGate(6, hidden_units=4, name="cg"),
        GatedResidual(name="m"),
        GatedConcat(name="c"),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_save_load_round_trip(tmp_path):
    inputs = keras.Input((6, 6, 4), name="image")
    fx = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    g = BlockGate(temperature=3.0, name="gate")(inputs)
    x = GatedResidual(name="merge")([inputs, fx, g])
    groups = [keras.layers.Conv2D(2, 1)(x) for _ in range(2)]
    cg = ChannelGate(2, name="channel_gate")(x)
    y = GatedConcat(name="concat")([cg, *groups])
    model = keras.Model(inputs, [y, g, cg])
    model.get_layer("gate").temperature.assign(1.5)
    data = RNG.normal(size=(8, 6, 6, 4)).astype("float32")
    path = str(tmp_path / "gated.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for name, cls in (
        ("gate", BlockGate),
        ("merge", GatedResidual),
        ("channel_gate", ChannelGate),
        ("concat", GatedConcat),
    ):
        assert type(loaded.get_layer(name)) is cls
    assert float(loaded.get_layer("gate").temperature.numpy()) == 1.5
    for a, b in zip(model.predict(data, verbose=0), loaded.predict(data, verbose=0)):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_layer("concat").branch_conditions() == [
        (1, ("gate", 0)),
        (2, ("gate", 1)),
    ]


@pytest.mark.parametrize("binary", [True, False])
def test_gated_residual_matches_numpy(binary):
    x = RNG.normal(size=(5, 3, 4, 2)).astype("float32")
    fx = RNG.normal(size=x.shape).astype("float32")
    g = RNG.uniform(size=(5, 1)).astype("float32")
    if binary:
        g = (g > 0.5).astype("float32")
    out = _np(GatedResidual()([x, fx, g]))
    np.testing.assert_allclose(out, x + g[:, :, None, None] * fx, rtol=1e-6)
    if binary:
        # A skipped block leaves x bit for bit; a run block gives x + fx.
        np.testing.assert_array_equal(out[g[:, 0] == 0], x[g[:, 0] == 0])
        np.testing.assert_array_equal(out[g[:, 0] == 1], (x + fx)[g[:, 0] == 1])


def test_gated_concat_matches_numpy():
    g = (RNG.uniform(size=(6, 3)) > 0.5).astype("float32")
    groups = [RNG.normal(size=(6, 4, 4, c)).astype("float32") for c in (1, 2, 3)]
    out = _np(GatedConcat()([g, *groups]))
    expected = np.concatenate(
        [g[:, j, None, None, None] * c for j, c in enumerate(groups)], axis=-1
    )
    np.testing.assert_array_equal(out, expected)
    assert GatedConcat().compute_output_shape(
        [(None, 3), (None, 4, 4, 1), (None, 4, 4, 2), (None, 4, 4, 3)]
    ) == (None, 4, 4, 6)


def test_branch_conditions_and_decision_index():
    inputs = keras.Input((4, 4, 2))
    g = BlockGate()(inputs)
    residual = GatedResidual(name="res")
    residual([inputs, inputs, g])
    assert residual.decision_index == 2
    assert residual.unconditional_indices == (0,)
    assert residual.branch_conditions() == [(1, ("gate", 0))]
    concat = GatedConcat(name="cat")
    concat([ChannelGate(3)(inputs), inputs, inputs, inputs])
    assert concat.decision_index == 0
    assert concat.branch_conditions() == [
        (1, ("gate", 0)),
        (2, ("gate", 1)),
        (3, ("gate", 2)),
    ]
    with pytest.raises(ValueError, match="'fresh' has not been called"):
        GatedConcat(name="fresh").branch_conditions()


def test_gated_residual_refuses_a_shape_change_naming_itself():
    inputs = keras.Input((8, 8, 4))
    fx = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    g = BlockGate()(inputs)
    with pytest.raises(
        ValueError, match="GatedResidual 'block3'.*changes the shape; add a projection"
    ):
        GatedResidual(name="block3")([inputs, fx, g])


@pytest.mark.parametrize(
    "layer, shapes, match",
    [
        (GatedResidual(name="r"), [(None, 4), (None, 4), (None, 2)], "'r'.*decision"),
        (
            GatedResidual(name="r"),
            [(None, 4), (None, 4), (None, 1, 1)],
            "'r'.*decision",
        ),
        (GatedResidual(name="r"), [(None, 4), (None, 4)], "'r'"),
        (
            GatedResidual(name="r"),
            [(None, 4), (None, 4), (None, 4), (None, 1)],
            "'r'.*exactly",
        ),
        (
            GatedConcat(name="c"),
            [(None, 3), (None, 4, 2), (None, 4, 2)],
            "'c'.*decision",
        ),
        (
            GatedConcat(name="c"),
            [(None, 2), (None, 4, 2), (None, 5, 2)],
            "'c'.*same shape except",
        ),
        (GatedConcat(name="c"), [(None, 1)], "'c'.*at least 2"),
    ],
)
def test_merges_refuse_bad_shapes(layer, shapes, match):
    tensors = [keras.Input(s[1:]) for s in shapes]
    with pytest.raises(ValueError, match=match):
        layer(tensors)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"groups": 0}, "groups"),
        ({"groups": True}, "groups"),
        ({"groups": 2, "hidden_units": 0}, "hidden_units"),
        ({"groups": 2, "temperature": 0.0}, "temperature"),
        ({"groups": 2, "initial_bias": (1.0,)}, "initial_bias"),
        ({"groups": 2, "initial_bias": (1.0, float("nan"))}, "initial_bias"),
        ({"groups": 2, "target_rate": 1.5}, "target_rate"),
        ({"groups": 2, "rate_loss_weight": -1.0}, "rate_loss_weight"),
        ({"groups": 2, "force": "always"}, "force"),
    ],
)
def test_gate_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"ChannelGate 'named'.*{argument}"):
        ChannelGate(name="named", **kwargs)


def test_gate_refuses_unknown_channels():
    with pytest.raises(ValueError, match="BlockGate 'g'.*known channels"):
        BlockGate(name="g").build((None, 4, None))


def test_target_rate_loss_matches_numpy():
    g = (RNG.uniform(size=(10, 3)) > 0.3).astype("float32")
    expected = np.mean((g.mean(axis=0) - 0.25) ** 2)
    np.testing.assert_allclose(_np(target_rate_loss(g, 0.25)), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="target"):
        target_rate_loss(g, 1.2)
    with pytest.raises(ValueError, match="gate_values"):
        target_rate_loss(g[:, 0], 0.5)
