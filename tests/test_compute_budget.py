"""Analytic MAC counts per branch and the ComputeBudget training wrapper.

Backend-agnostic: Keras 3 and NumPy only.
"""

import keras
import numpy as np
import pytest

from keras_dynamic.layers import BlockGate
from keras_dynamic.layers import ChannelGate
from keras_dynamic.layers import CondConv2D
from keras_dynamic.layers import DynamicConv2D
from keras_dynamic.layers import EarlyExit
from keras_dynamic.layers import GatedConcat
from keras_dynamic.layers import GatedResidual
from keras_dynamic.layers import RoutedSum
from keras_dynamic.layers import Router
from keras_dynamic.layers import force_gates
from keras_dynamic.losses import compute_budget_loss
from keras_dynamic.losses import executed_fraction
from keras_dynamic.models import ComputeBudget
from keras_dynamic.models import analytic_macs
from keras_dynamic.models import conditional_macs
from keras_dynamic.models import gated_resnet

RNG = np.random.default_rng(2)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _macs_of(input_shape, layer):
    inputs = keras.Input(input_shape)
    return analytic_macs(keras.Model(inputs, layer(inputs)))


@pytest.mark.parametrize(
    "input_shape, layer, expected",
    [
        # 4x4 outputs, 3x3 kernel, 8 inputs in 2 groups, 6 filters.
        ((9, 9, 8), keras.layers.Conv2D(6, 3, strides=2, groups=2), 16 * 9 * 4 * 6),
        (
            (8, 8, 4),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
            64 * 9 * 4 * 2,
        ),
        ((10, 4), keras.layers.Conv1D(5, 3), 8 * 3 * 4 * 5),
        ((5, 7), keras.layers.Dense(3), 5 * 7 * 3),
        ((6, 6, 3), keras.layers.BatchNormalization(), 0),
        ((6, 6, 3), keras.layers.MaxPooling2D(), 0),
        ((6, 6, 3), keras.layers.LayerNormalization(), 0),
        ((6, 6, 8), BlockGate(hidden_units=4), 8 * 4 + 4 * 2),
        ((6, 6, 8), ChannelGate(3, hidden_units=4, batch_norm=False), 8 * 4 + 4 * 6),
        ((6, 6, 8), Router(4), 8 * 4),
        ((6, 6, 8), EarlyExit(10, pooling="avg", conv_filters=None, hidden_units=5), 8 * 5 + 5 * 10),
        # The default head: a stride-2 3x3 conv to 3x3x32, flattened.
        ((6, 6, 8), EarlyExit(10), 3 * 3 * (3 * 3 * 8 * 32) + 3 * 3 * 32 * 10),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else None,
)
def test_layer_macs(input_shape, layer, expected):
    assert _macs_of(input_shape, layer) == expected


@pytest.mark.parametrize("form", ["mix_outputs", "mix_kernels", "patch_matmul"])
def test_dynamic_convolution_macs_follow_the_inference_form(form):
    # 6x6 outputs, 3 experts, 3x3 kernels from 4 to 5 channels.
    conv = 36 * 9 * 4 * 5
    routing_and_bias = 4 * 3 + 3 * 5
    cond = CondConv2D(5, 3, num_experts=3, padding="same", inference_form=form)
    mixing = 3 * 36 * 5 if form == "mix_outputs" else 3 * 9 * 4 * 5
    experts = 3 if form == "mix_outputs" else 1
    assert _macs_of((6, 6, 4), cond) == experts * conv + mixing + routing_and_bias
    dy = DynamicConv2D(5, 3, num_experts=3, padding="same", inference_form=form)
    attention = 4 * 4 + 4 * 3  # hidden width max(4 // 4, 4) = 4
    assert _macs_of((6, 6, 4), dy) == experts * conv + mixing + attention + 3 * 5


def test_nested_models_are_counted_through():
    inner = keras.Sequential(
        [keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 1), keras.layers.Dense(2)]
    )
    inputs = keras.Input((4, 4, 2))
    sub_in = keras.Input((4, 4, 2))
    functional = keras.Model(sub_in, keras.layers.Conv2D(2, 1)(sub_in))
    y = keras.layers.Add()([inner(inputs), functional(inputs)])
    assert analytic_macs(keras.Model(inputs, y)) == 16 * (2 * 3 + 3 * 2) + 16 * 2 * 2


@pytest.mark.parametrize(
    "layer, input_shape, match",
    [
        (
            keras.layers.SeparableConv2D(4, 3, name="sep"),
            (6, 6, 3),
            "'sep'.*SeparableConv2D",
        ),
        (
            keras.layers.Conv2DTranspose(4, 3, name="up"),
            (6, 6, 3),
            "'up'.*Conv2DTranspose",
        ),
        (
            keras.layers.Conv2D(4, 3, name="open"),
            (None, None, 3),
            "'open'.*not fully known",
        ),
    ],
)
def test_uncountable_layers_are_refused_by_name(layer, input_shape, match):
    with pytest.raises(ValueError, match=match):
        _macs_of(input_shape, layer)


def _conditional_model():
    """A gated block, two channel groups and two experts, with known MACs."""
    inputs = keras.Input((4, 4, 2), name="image")
    stem = keras.layers.Conv2D(4, 1, name="stem")(inputs)  # 16*2*4 = 128
    gate = BlockGate(hidden_units=2, name="gate")(stem)  # 4*2 + 2*2 = 12
    body = keras.layers.Conv2D(4, 3, padding="same", name="body")(stem)  # 2304
    x = GatedResidual(name="res")([stem, body, gate])
    cg = ChannelGate(2, hidden_units=2, name="cgate")(x)  # 4*2 + 2*4 = 16
    g1 = keras.layers.Conv2D(1, 1, name="g1")(x)  # 64
    g2 = keras.layers.Conv2D(3, 1, name="g2")(x)  # 192
    x = GatedConcat(name="cat")([cg, g1, g2])
    r = Router(2, name="router")(x)  # 8
    e1 = keras.layers.Conv2D(4, 1, name="e1")(x)  # 256
    e2 = keras.layers.Conv2D(4, 3, padding="same", name="e2")(x)  # 2304
    y = RoutedSum(name="moe")([r, e1, e2])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(y))


def test_conditional_macs_split():
    macs = conditional_macs(_conditional_model())
    assert [(b.merge, b.input_index, b.condition, b.macs) for b in macs.branches] == [
        ("res", 1, ("gate", 0), 2304),
        ("cat", 1, ("gate", 0), 64),
        ("cat", 2, ("gate", 1), 192),
        ("moe", 1, ("route", 0), 256),
        ("moe", 2, ("route", 1), 2304),
    ]
    assert macs.fixed == 128 + 12 + 16 + 8
    assert macs.full == macs.fixed + 2304 + 64 + 192 + 2304


def test_branches_that_share_a_layer_are_refused():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, name="shared")(inputs)
    h2 = keras.layers.ReLU()(h)
    g = ChannelGate(2)(inputs)
    y = GatedConcat(name="cat")([g, h, h2])
    with pytest.raises(ValueError, match="'shared' belongs to two conditional"):
        conditional_macs(keras.Model(inputs, y))


def test_merges_inside_nested_models_are_refused():
    inner_in = keras.Input((4,))
    g = ChannelGate(1)(inner_in)
    inner = keras.Model(inner_in, GatedConcat()([g, inner_in]), name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(inputs))
    with pytest.raises(ValueError, match="calls model 'inner'.*top-level"):
        conditional_macs(model)


def test_budget_loss_and_fraction_match_numpy():
    rates = np.array([0.5, 1.0, 0.25], "float32")
    macs = [100.0, 300.0, 200.0]
    fraction = (50.0 + 50 + 300 + 50) / 650.0
    np.testing.assert_allclose(
        _np(executed_fraction(rates, macs, fixed_macs=50.0)), fraction, rtol=1e-6
    )
    np.testing.assert_allclose(
        _np(compute_budget_loss(rates, macs, 0.5, fixed_macs=50.0, total_macs=700.0)),
        (450.0 / 700.0 - 0.5) ** 2,
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": 0.0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"budget": 0.5, "macs": [1.0, -1.0, 1.0]}, "macs"),
        ({"budget": 0.5, "macs": [1.0, 1.0]}, "one entry per branch"),
        ({"budget": 0.5, "fixed_macs": -1.0}, "fixed_macs"),
        ({"budget": 0.5, "fixed_macs": 10.0, "total_macs": 5.0}, "total_macs"),
    ],
)
def test_budget_loss_invalid(kwargs, match):
    args = {"rates": np.ones(3, "float32"), "macs": [1.0, 2.0, 3.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        compute_budget_loss(**args)


def _tiny_resnet(**kwargs):
    return gated_resnet(
        (8, 8, 1), num_classes=3, widths=(8,), blocks_per_stage=(2,), **kwargs
    )


@pytest.mark.parametrize("value", ["on", "off"])
def test_budget_term_is_added_in_training(value):
    base = _tiny_resnet(moe_experts=2)
    wrapper = ComputeBudget(base, budget=0.5, weight=3.0)
    macs = conditional_macs(base)
    routed = [b.macs for b in macs.branches if b.condition[0] == "route"]
    assert routed[0] == routed[1]  # equal experts: one always counts
    gated = sum(b.macs for b in macs.branches if b.condition[0] == "gate")
    executed = macs.fixed + routed[0] + (gated if value == "on" else 0)
    x = RNG.normal(size=(4, 8, 8, 1)).astype("float32")
    with force_gates(base, value):
        wrapper(x, training=True)
        budget_terms = [
            loss for loss in wrapper.losses if not _is_router_loss(loss, base)
        ]
        np.testing.assert_allclose(
            _np(budget_terms[-1]),
            3.0 * (executed / macs.full - 0.5) ** 2,
            rtol=1e-5,
        )
        assert wrapper.executed_fraction(x) == pytest.approx(executed / macs.full)
    wrapper(x, training=False)
    assert not wrapper.losses


def _is_router_loss(loss, base):
    router = base.get_layer("moe_router")
    return any(loss is other for other in router.losses)


def _training_fraction(base, x, draws=8):
    """The MACs-weighted share the Gumbel samples execute, as the loss sees it."""
    macs = conditional_macs(base)
    gates = [base.get_layer(f"{b.merge}_gate").output for b in macs.branches]
    probe = keras.Model(base.input, gates)
    rates = np.mean(
        [[_np(g).mean() for g in probe(x, training=True)] for _ in range(draws)],
        axis=0,
    )
    return _np(
        executed_fraction(
            rates,
            [b.macs for b in macs.branches],
            fixed_macs=macs.fixed,
            total_macs=macs.full,
        )
    )


@pytest.mark.slow
def test_fit_pulls_the_executed_fraction_toward_the_budget():
    keras.utils.set_random_seed(0)
    base = _tiny_resnet()
    model = ComputeBudget(base, budget=0.4, weight=5.0)
    x = RNG.normal(size=(128, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 3, size=128)
    assert model.executed_fraction(x) > 0.95
    assert _training_fraction(base, x) > 0.65
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    # The loss acts on the training samples. With random labels nothing
    # makes the gates confident, so the inference share (on > off) is not
    # asserted here; it is exact in test_budget_term_is_added_in_training.
    assert abs(_training_fraction(base, x) - 0.4) < 0.12
    assert model.strip() is base
    assert model.output_names == base.output_names
    np.testing.assert_array_equal(
        model.predict(x[:4], verbose=0), base.predict(x[:4], verbose=0)
    )


def test_given_macs_are_used():
    base = _tiny_resnet()
    names = [b.merge for b in conditional_macs(base).branches]
    wrapper = ComputeBudget(
        base, budget=0.5, branch_macs={n: [100] for n in names}, fixed_macs=100
    )
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    with force_gates(base, "off"):
        assert wrapper.executed_fraction(x) == pytest.approx(100 / 300)


def test_wrapper_save_load_round_trip(tmp_path):
    base = _tiny_resnet()
    model = ComputeBudget(base, budget=0.6, weight=2.0)
    x = RNG.normal(size=(2, 8, 8, 1)).astype("float32")
    path = str(tmp_path / "budget.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, ComputeBudget)
    assert (loaded.budget, loaded.weight) == (0.6, 2.0)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_wrapper_invalid_arguments():
    base = _tiny_resnet()
    names = [b.merge for b in conditional_macs(base).branches]
    plain = gated_resnet((8, 8, 1), 3, widths=(4,), blocks_per_stage=(1,), gating=None)
    cases = [
        ({"model": plain}, "no GatedResidual"),
        (
            {"model": keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])},
            "not a functional",
        ),
        ({"budget": 0.0}, "budget"),
        ({"weight": -1.0}, "weight"),
        ({"budget": 0.01}, "cannot be met"),
        ({"fixed_macs": 5}, "together"),
        ({"branch_macs": {"nope": [1]}, "fixed_macs": 5}, "one entry per merge"),
        ({"branch_macs": {n: [1, 2] for n in names}, "fixed_macs": 5}, "must list 1"),
    ]
    for kwargs, match in cases:
        model = kwargs.pop("model", base)
        with pytest.raises(ValueError, match=match):
            ComputeBudget(model, **kwargs)
    with pytest.raises(TypeError, match="keras.Model"):
        ComputeBudget("model")
