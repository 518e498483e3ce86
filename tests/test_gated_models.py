"""Model helpers: gated_residual, channel_gated_conv2d, gated_resnet and
gate_residual_blocks (gating an existing functional model).

Backend-agnostic: Keras 3 and NumPy only.
"""

import keras
import numpy as np
import pytest

from keras_dynamic.layers import BlockGate
from keras_dynamic.layers import ChannelGate
from keras_dynamic.layers import EarlyExit
from keras_dynamic.layers import GatedConcat
from keras_dynamic.layers import GatedResidual
from keras_dynamic.layers import RoutedSum
from keras_dynamic.layers import force_gates
from keras_dynamic.models import channel_gated_conv2d
from keras_dynamic.models import conditional_macs
from keras_dynamic.models import gate_residual_blocks
from keras_dynamic.models import gated_residual
from keras_dynamic.models import gated_resnet

RNG = np.random.default_rng(3)


def _conv(name=None):
    return keras.layers.Conv2D(4, 3, padding="same", name=name)


@pytest.mark.parametrize(
    "make_block",
    [
        lambda: [_conv(), keras.layers.BatchNormalization()],
        lambda: _conv(),
        lambda: lambda t: keras.layers.ReLU()(_conv()(t)),
        lambda: keras.Sequential([keras.Input((6, 6, 4)), _conv()]),
    ],
    ids=["list", "layer", "callable", "model"],
)
def test_gated_residual_accepts_any_block(make_block):
    inputs = keras.Input((6, 6, 4))
    y = gated_residual(inputs, make_block(), name="block")
    model = keras.Model(inputs, y)
    assert type(model.get_layer("block_gate")) is BlockGate
    assert model.get_layer("block").branch_conditions() == [(1, ("gate", 0))]
    x = RNG.normal(size=(3, 6, 6, 4)).astype("float32")
    with force_gates(model, "off"):
        np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_gated_residual_refuses_a_shape_change_and_a_wrong_gate():
    inputs = keras.Input((6, 6, 4))
    with pytest.raises(ValueError, match="'block2'.*add a projection"):
        gated_residual(inputs, keras.layers.Conv2D(8, 3, padding="same"), name="block2")
    with pytest.raises(TypeError, match="gate"):
        gated_residual(inputs, _conv(), gate=ChannelGate(1))
    with pytest.raises(TypeError, match="block"):
        gated_residual(inputs, [])


def test_channel_gated_conv2d_matches_its_groups():
    inputs = keras.Input((6, 6, 3))
    y = channel_gated_conv2d(
        inputs, 8, 3, groups=4, batch_norm=True, activation="relu", name="cg"
    )
    model = keras.Model(inputs, y)
    gate = model.get_layer("cg_gate")
    groups = [model.get_layer(f"cg_group{j}_act").output for j in range(1, 5)]
    probe = keras.Model(inputs, [gate.output, *groups])
    x = RNG.normal(size=(16, 6, 6, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    g, *parts = probe.predict(x, verbose=0)
    expected = np.concatenate(
        [g[:, j, None, None, None] * p for j, p in enumerate(parts)], axis=-1
    )
    np.testing.assert_array_equal(out, expected)
    assert [type(model.get_layer(n)) for n in ("cg_gate", "cg")] == [
        ChannelGate,
        GatedConcat,
    ]
    assert all(model.get_layer(f"cg_group{j}").filters == 2 for j in range(1, 5))


def test_channel_gated_conv2d_invalid():
    inputs = keras.Input((6, 6, 3))
    with pytest.raises(
        ValueError, match="'conv3'.*`groups` must be a positive int that divides"
    ):
        channel_gated_conv2d(inputs, 10, 3, groups=4, name="conv3")
    with pytest.raises(ValueError, match="groups=2"):
        channel_gated_conv2d(inputs, 8, 3, groups=2, gate=ChannelGate(4))


def _layer_types(model, cls):
    return sorted(layer.name for layer in model.layers if type(layer) is cls)


def test_gated_resnet_gates_only_blocks_that_keep_the_shape():
    model = gated_resnet(
        (16, 16, 3), num_classes=5, widths=(8, 16), blocks_per_stage=(2, 3)
    )
    assert _layer_types(model, GatedResidual) == [
        "stage1_block1",
        "stage1_block2",
        "stage2_block2",
        "stage2_block3",
    ]
    assert len(_layer_types(model, BlockGate)) == 4
    assert model.get_layer("stage2_block1_proj").strides == (2, 2)
    assert tuple(model.output.shape) == (None, 5)


def test_gated_resnet_channel_gating_moe_and_exits():
    model = gated_resnet(
        (16, 16, 3),
        num_classes=5,
        widths=(8, 16),
        blocks_per_stage=(1, 2),
        gating="channel",
        channel_groups=4,
        moe_experts=3,
        exits=True,
    )
    assert model.output_names == ["exit_1", "final"]
    assert isinstance(model.get_layer("exit_1"), EarlyExit)
    assert _layer_types(model, GatedConcat) == [
        "stage1_block1_1",
        "stage2_block1_1",
        "stage2_block2_1",
    ]
    assert not _layer_types(model, GatedResidual)
    assert type(model.get_layer("moe")) is RoutedSum
    macs = conditional_macs(model)
    assert [b.condition for b in macs.branches if b.merge == "moe"] == [
        ("route", 0),
        ("route", 1),
        ("route", 2),
    ]


@pytest.mark.slow
def test_gated_resnet_trains_and_round_trips(tmp_path):
    model = gated_resnet(
        (8, 8, 1),
        num_classes=3,
        widths=(4, 8),
        blocks_per_stage=(1, 2),
        target_rate=0.5,
        moe_experts=2,
        exits=True,
    )
    # Eager: tracing the training step of this many layers costs far more
    # than two steps; the traced path is covered by the layer tests.
    model.compile(
        "adam",
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2,
        run_eagerly=True,
    )
    x = RNG.normal(size=(16, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 3, size=16)
    history = model.fit(x, [y, y], epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = str(tmp_path / "gated_resnet.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.predict(x, verbose=0), loaded.predict(x, verbose=0)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"input_shape": (8, 8)}, "input_shape"),
        ({"widths": (8, 16), "blocks_per_stage": (2,)}, "blocks_per_stage"),
        ({"gating": "layer"}, "gating"),
        ({"gating": "channel", "channel_groups": 3}, "channel_groups"),
        ({"moe_experts": 1}, "moe_experts"),
        (
            {
                "input_shape": (2, 2, 1),
                "widths": (4, 4, 4),
                "blocks_per_stage": (1, 1, 1),
            },
            "too small",
        ),
    ],
)
def test_gated_resnet_invalid(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        gated_resnet(**kwargs)


def _resnet_like():
    """An identity block, a projection block and an identity block."""
    inputs = keras.Input((8, 8, 3), name="image")
    s = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", name="b1_conv1")(s)
    h = keras.layers.BatchNormalization(name="b1_bn")(h)
    h = keras.layers.ReLU(name="b1_relu")(h)
    h = keras.layers.Conv2D(4, 3, padding="same", name="b1_conv2")(h)
    x = keras.layers.Add(name="b1_add")([s, h])
    x = keras.layers.ReLU(name="b1_out")(x)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="b2_conv")(x)
    p = keras.layers.Conv2D(8, 1, strides=2, name="b2_proj")(x)
    x = keras.layers.Add(name="b2_add")([p, h])
    x = keras.layers.ReLU(name="b2_out")(x)
    h = keras.layers.Conv2D(8, 3, padding="same", name="b3_conv")(x)
    x = keras.layers.Add(name="b3_add")([h, x])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_gate_residual_blocks_replays_the_model():
    model = _resnet_like()
    gated = gate_residual_blocks(
        model,
        [("b1_conv1", "b1_conv2"), ("b3_conv", "b3_add")],
        gate_options={"target_rate": 0.5},
    )
    assert _layer_types(gated, GatedResidual) == ["b1_add_gated", "b3_add_gated"]
    assert gated.get_layer("b1_add_gate").target_rate == 0.5
    assert gated.get_layer("b1_conv1") is model.get_layer("b1_conv1")
    assert gated.get_layer("b3_add_gated").branch_conditions() == [(1, ("gate", 0))]
    x = RNG.normal(size=(4, 8, 8, 3)).astype("float32")
    with force_gates(gated, "on"):
        np.testing.assert_array_equal(
            gated.predict(x, verbose=0), model.predict(x, verbose=0)
        )
    # With every gate off, the two identity blocks pass their input through.
    layer = model.get_layer
    s = layer("stem").output
    h = layer("b2_add")(
        [layer("b2_proj")(layer("b1_out")(s)), layer("b2_conv")(layer("b1_out")(s))]
    )
    skipped = keras.Model(model.input, layer("head")(layer("pool")(layer("b2_out")(h))))
    with force_gates(gated, "off"):
        np.testing.assert_allclose(
            gated.predict(x, verbose=0), skipped.predict(x, verbose=0), rtol=1e-6
        )


@pytest.mark.parametrize(
    "blocks, match",
    [
        ([("b2_conv", "b2_conv")], "'b2_conv'..'b2_conv' is not an identity residual"),
        ([("b1_conv1", "missing")], "no layer 'missing'"),
        ([("b1_conv2", "b1_conv1")], "is not an identity residual"),
        ([("b1_conv1", "b1_conv2"), ("b1_conv1", "b1_add")], "listed twice"),
        ([("b1_conv1",)], "pairs"),
    ],
)
def test_gate_residual_blocks_refuses_bad_blocks(blocks, match):
    with pytest.raises(ValueError, match=match):
        gate_residual_blocks(_resnet_like(), blocks)


def test_gate_residual_blocks_refuses_a_block_that_feeds_outside():
    model = _resnet_like()
    aux = keras.layers.GlobalAveragePooling2D(name="aux")(
        model.get_layer("b1_bn").output
    )
    with_aux = keras.Model(model.input, [model.output, aux])
    with pytest.raises(
        ValueError, match="'b1_bn' inside the block also feeds layer 'aux'"
    ):
        gate_residual_blocks(with_aux, [("b1_conv1", "b1_conv2")])


def test_gate_residual_blocks_refuses_a_shared_layer():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(4, name="shared")
    x = keras.layers.Add(name="add1")([inputs, dense(inputs)])
    y = keras.layers.Add(name="add2")([x, dense(x)])
    with pytest.raises(ValueError, match="'shared' is called 2 times"):
        gate_residual_blocks(keras.Model(inputs, y), [("shared", "add1")])


@pytest.mark.slow
def test_gate_residual_blocks_on_resnet50():
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    gated = gate_residual_blocks(
        model,
        [
            ("conv2_block2_1_conv", "conv2_block2_3_bn"),
            ("conv3_block3_1_conv", "conv3_block3_add"),
        ],
    )
    assert _layer_types(gated, GatedResidual) == [
        "conv2_block2_add_gated",
        "conv3_block3_add_gated",
    ]
    # Bottleneck blocks: 1x1 (256->64), 3x3 (64->64), 1x1 (64->256) at 8x8;
    # the same shape at 4x4 with 512 and 128 channels.
    expected = [
        64 * (256 * 64 + 9 * 64 * 64 + 64 * 256),
        16 * (512 * 128 + 9 * 128 * 128 + 128 * 512),
    ]
    assert [b.macs for b in conditional_macs(gated).branches] == expected
    x = RNG.normal(size=(2, 32, 32, 3)).astype("float32")
    with force_gates(gated, "on"):
        np.testing.assert_array_equal(
            gated.predict(x, verbose=0), model.predict(x, verbose=0)
        )
