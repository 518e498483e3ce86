"""Top-1 routing: Router, RoutedSum, the load-balancing loss, mixture_of_experts.

Backend-agnostic: Keras 3 and NumPy only.
"""

import keras
import numpy as np
import pytest

from keras_dynamic.layers import RoutedSum
from keras_dynamic.layers import Router
from keras_dynamic.losses import load_balancing_loss
from keras_dynamic.models import mixture_of_experts

RNG = np.random.default_rng(1)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_probs(router, x):
    pooled = x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
    kernel = router.projection.kernel.numpy()
    return _softmax(pooled @ kernel + router.projection.bias.numpy())


@pytest.mark.parametrize("shape", [(32, 5, 5, 6), (32, 6), (32, 7, 6)])
@pytest.mark.parametrize("training", [False, True])
def test_dispatch_matches_numpy(shape, training):
    router = Router(4, kernel_initializer="glorot_uniform")
    x = RNG.normal(size=shape).astype("float32") * 3
    r = _np(router(x, training=training))
    probs = _numpy_probs(router, x)
    chosen = probs.argmax(axis=-1)
    expected = np.zeros_like(probs)
    expected[np.arange(len(x)), chosen] = probs[np.arange(len(x)), chosen]
    np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-6)
    assert ((r > 0).sum(axis=1) == 1).all()
    assert len(set(chosen)) > 1


def test_default_initialization_is_small():
    # Switch Transformer: a tenth of the usual fan-in variance, so the
    # router starts close to uniform.
    router = Router(4)
    router.build((None, 256))
    kernel = router.projection.kernel.numpy()
    np.testing.assert_allclose(kernel.std(), np.sqrt(0.1 / 256), rtol=0.15)
    assert np.all(router.projection.bias.numpy() == 0)


def test_load_balancing_loss_matches_numpy():
    probs = _softmax(RNG.normal(size=(12, 3)).astype("float32"))
    index = RNG.integers(0, 3, size=12)
    f = np.bincount(index, minlength=3) / 12
    expected = 3 * np.sum(f * probs.mean(axis=0))
    np.testing.assert_allclose(
        _np(load_balancing_loss(probs, index)), expected, rtol=1e-6
    )
    with pytest.raises(ValueError, match="dispatch_probs"):
        load_balancing_loss(probs[0], index)
    with pytest.raises(ValueError, match="expert_index"):
        load_balancing_loss(probs, index[:, None])


def test_router_adds_the_load_balancing_loss_in_training_only():
    x = RNG.normal(size=(16, 5)).astype("float32")
    router = Router(3, load_balance_weight=0.5)
    router(x, training=True)
    probs = _numpy_probs(router, x)
    expected = 0.5 * _np(load_balancing_loss(probs, probs.argmax(axis=-1)))
    assert len(router.losses) == 1
    np.testing.assert_allclose(_np(router.losses[0]), expected, rtol=1e-5)
    router(x, training=False)
    assert not router.losses
    silent = Router(3)
    silent(x, training=True)
    assert not silent.losses


def _moe_model(num_experts, load_balance_weight=0.0):
    inputs = keras.Input((8,))
    router = Router(num_experts, load_balance_weight=load_balance_weight, name="router")
    experts = [keras.layers.Dense(3, name=f"expert{k}") for k in range(num_experts)]
    y = mixture_of_experts(inputs, experts, router=router, name="moe")
    return keras.Model(inputs, y), keras.Model(inputs, router.output)


def test_load_balancing_loss_balances_a_collapsed_router():
    model, probe = _moe_model(4, load_balance_weight=1.0)
    router = model.get_layer("router")
    # Every sample starts on expert 0.
    router.projection.bias.assign(np.array([3.0, 0.0, 0.0, 0.0], "float32"))
    x = RNG.normal(size=(256, 8)).astype("float32")

    def load():
        chosen = probe.predict(x, verbose=0).argmax(axis=-1)
        return np.bincount(chosen, minlength=4) / len(x)

    assert load()[0] == 1.0
    # A task loss with zero weight keeps every expert in the graph of the
    # objective; the balancing term is what trains the router.
    model.compile(keras.optimizers.Adam(0.05), "mse", loss_weights=[0.0])
    model.fit(x, np.zeros((256, 3)), epochs=12, batch_size=64, verbose=0)
    assert load().max() < 0.4, load()


def test_router_learns_through_the_dispatch_probability():
    model, _ = _moe_model(2)
    router = model.get_layer("router")
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = RNG.normal(size=(32, 8)).astype("float32")
    before = router.projection.kernel.numpy().copy()
    model.fit(x, RNG.normal(size=(32, 3)), epochs=1, batch_size=32, verbose=0)
    assert not np.allclose(router.projection.kernel.numpy(), before)


def test_routed_sum_matches_numpy_and_reads_zeros_for_other_experts():
    probs = _softmax(RNG.normal(size=(6, 3)))
    r = np.zeros_like(probs, dtype="float32")
    chosen = probs.argmax(axis=-1)
    r[np.arange(6), chosen] = probs[np.arange(6), chosen]
    experts = [RNG.normal(size=(6, 2, 2, 4)).astype("float32") for _ in range(3)]
    out = _np(RoutedSum()([r, *experts]))
    expected = sum(r[:, k, None, None, None] * e for k, e in enumerate(experts))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # What the exported chain computes: the chosen expert, zeros elsewhere.
    zeroed = [
        np.where((chosen == k)[:, None, None, None], e, 0.0).astype("float32")
        for k, e in enumerate(experts)
    ]
    np.testing.assert_array_equal(_np(RoutedSum()([r, *zeroed])), out)


def test_routed_sum_branch_conditions():
    inputs = keras.Input((4,))
    merge = RoutedSum(name="route")
    merge([Router(3)(inputs), inputs, inputs, inputs])
    assert merge.decision_index == 0
    assert merge.branch_conditions() == [
        (1, ("route", 0)),
        (2, ("route", 1)),
        (3, ("route", 2)),
    ]


@pytest.mark.parametrize(
    "shapes, match",
    [
        ([(None, 2), (None, 4), (None, 5)], "RoutedSum 'rs'.*differ in shape"),
        ([(None, 3), (None, 4), (None, 4)], "RoutedSum 'rs'.*decision"),
        ([(None, 1), (None, 4)], "RoutedSum 'rs'.*at least 3"),
    ],
)
def test_routed_sum_refuses_bad_shapes(shapes, match):
    with pytest.raises(ValueError, match=match):
        RoutedSum(name="rs")([keras.Input(s[1:]) for s in shapes])


def test_mixture_of_experts_refuses_experts_of_different_shapes():
    inputs = keras.Input((6, 6, 4))
    experts = [
        keras.layers.Conv2D(4, 3, padding="same"),
        keras.layers.Conv2D(8, 3, padding="same"),
    ]
    with pytest.raises(ValueError, match="RoutedSum 'moe'.*differ in shape"):
        mixture_of_experts(inputs, experts, name="moe")


@pytest.mark.parametrize(
    "experts, router, match",
    [
        ("one", None, "at least 2"),
        ([keras.layers.Dense(2)], None, "at least 2"),
        (None, None, "distinct"),
        ([keras.layers.Dense(2), keras.layers.Dense(2)], Router(3), "num_experts=2"),
        ([keras.layers.Dense(2), 5], None, "expert"),
    ],
)
def test_mixture_of_experts_invalid(experts, router, match):
    if experts is None:
        shared = keras.layers.Dense(2)
        experts = [shared, shared]
    with pytest.raises((ValueError, TypeError), match=match):
        mixture_of_experts(keras.Input((4,)), experts, router=router)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"num_experts": 1}, "num_experts"),
        ({"num_experts": 2.0}, "num_experts"),
        ({"num_experts": 2, "load_balance_weight": -0.1}, "load_balance_weight"),
    ],
)
def test_router_invalid_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"Router 'r'.*{argument}"):
        Router(name="r", **kwargs)


def test_config_and_save_round_trip(tmp_path):
    router = Router(3, load_balance_weight=0.01, kernel_regularizer="l2", name="r")
    assert Router.from_config(router.get_config()).get_config() == router.get_config()
    assert RoutedSum.from_config(RoutedSum().get_config()).get_config()
    inputs = keras.Input((5, 5, 2))
    experts = [[keras.layers.Conv2D(2, 3, padding="same")] for _ in range(3)]
    y = mixture_of_experts(inputs, experts, router=router, name="moe")
    model = keras.Model(inputs, y)
    x = RNG.normal(size=(4, 5, 5, 2)).astype("float32")
    path = str(tmp_path / "moe.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("r")) is Router
    assert type(loaded.get_layer("moe")) is RoutedSum
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
