"""Shared math of the gate layers (`BlockGate`, `ChannelGate`).

A gate reads globally pooled features and emits one decision per group:

    logits = Dense(2G)(ReLU(BN(Dense(hidden)(GAP(x)))))  # [off_1..G, on_1..G]

* Inference: `g_j = float(on_j > off_j)`, exact 0.0 / 1.0.
* Training: a straight-through Gumbel-softmax sample over (off_j, on_j). For
  two classes the difference of the two Gumbel noises is logistic, so the
  soft sample is `sigmoid((on_j - off_j + L) / temperature)` with
  `L = log(u) - log(1 - u)`; the forward value is its rounding (0 or 1) and
  the gradient is the soft sample's.

The logits are laid out `[off..., on...]` so that the decision splits them
in two halves: picking `logits[..., 1]` from a `(B, G, 2)` tensor would be a
STRIDED_SLICE with shrink_axis_mask in TFLite, which GPU delegates refuse.

`feature_channels` and `global_pool` serve every decision layer (`Router`
too): they all read globally pooled features.
"""

import keras
import numpy as np

from keras_dynamic.losses.gates import target_rate_loss

FORCE_VALUES = (None, "on", "off")
_EPSILON = 1e-6


class GateBase(keras.layers.Layer):
    """Base of the gate layers; `BlockGate` is the case `groups=1`.

    Subclasses pass `groups` and keep the public constructor arguments.
    """

    def __init__(
        self,
        groups,
        hidden_units=16,
        batch_norm=True,
        temperature=1.0,
        initial_bias=(0.1, 2.0),
        target_rate=None,
        rate_loss_weight=1.0,
        force=None,
        seed=None,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        described = self._describe()
        for arg, value in (("groups", groups), ("hidden_units", hidden_units)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"{described}: `{arg}` must be a positive int. "
                    f"Received: {arg}={value!r}"
                )
        if not _positive_number(temperature):
            raise ValueError(
                f"{described}: `temperature` must be a positive number. "
                f"Received: temperature={temperature!r}"
            )
        initial_bias = (
            tuple(initial_bias)
            if isinstance(initial_bias, (list, tuple))
            else initial_bias
        )
        if not (
            isinstance(initial_bias, tuple)
            and len(initial_bias) == 2
            and all(_finite_number(b) for b in initial_bias)
        ):
            raise ValueError(
                f"{described}: `initial_bias` must be a pair of numbers "
                f"(off, on). Received: initial_bias={initial_bias!r}"
            )
        if target_rate is not None and not (
            _finite_number(target_rate) and 0.0 <= target_rate <= 1.0
        ):
            raise ValueError(
                f"{described}: `target_rate` must be None or a number in "
                f"[0, 1]. Received: target_rate={target_rate!r}"
            )
        if not (_finite_number(rate_loss_weight) and rate_loss_weight >= 0):
            raise ValueError(
                f"{described}: `rate_loss_weight` must be a non-negative "
                f"number. Received: rate_loss_weight={rate_loss_weight!r}"
            )
        self.groups = groups
        self.hidden_units = hidden_units
        self.batch_norm = bool(batch_norm)
        self.initial_temperature = float(temperature)
        self.initial_bias = tuple(float(b) for b in initial_bias)
        self.target_rate = None if target_rate is None else float(target_rate)
        self.rate_loss_weight = float(rate_loss_weight)
        self.force = force
        self.seed = seed
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.seed_generator = keras.random.SeedGenerator(seed)
        dense = dict(
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
        )
        # Without BN the hidden layer needs its own bias; with BN it would
        # be redundant with BN's offset.
        self.hidden = keras.layers.Dense(
            hidden_units, use_bias=not self.batch_norm, name="hidden", **dense
        )
        self.norm = (
            keras.layers.BatchNormalization(name="hidden_bn", dtype=self.dtype_policy)
            if self.batch_norm
            else None
        )
        self.logits = keras.layers.Dense(2 * groups, name="logits", **dense)

    def _describe(self):
        return f"{type(self).__name__} '{self.name}'"

    @property
    def force(self):
        """`None` (decide), `"on"` or `"off"` (every sample, every group)."""
        return self._force

    @force.setter
    def force(self, value):
        # A setter, so `force_gates(model, ...)` and users assigning the
        # attribute get the constructor's validation.
        if value not in FORCE_VALUES:
            raise ValueError(
                f"{self._describe()}: `force` must be one of {FORCE_VALUES}. "
                f"Received: force={value!r}"
            )
        self._force = value

    def build(self, input_shape):
        self.hidden.build((None, feature_channels(self, input_shape)))
        if self.norm is not None:
            self.norm.build((None, self.hidden_units))
        self.logits.build((None, self.hidden_units))
        off, on = self.initial_bias
        self.logits.bias.assign(np.repeat(np.array([off, on], "float32"), self.groups))
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            dtype="float32",
            trainable=False,
        )

    def gate_logits(self, features, training=None):
        """`(off, on)`: two float32 `(batch, groups)` logit tensors."""
        hidden = self.hidden(global_pool(features))
        if self.norm is not None:
            hidden = self.norm(hidden, training=training)
        logits = keras.ops.cast(self.logits(keras.ops.relu(hidden)), "float32")
        off, on = keras.ops.split(logits, 2, axis=-1)
        return off, on

    def call(self, inputs, training=None):
        off, on = self.gate_logits(inputs, training=training)
        if self.force is not None:
            value = 1.0 if self.force == "on" else 0.0
            return keras.ops.full_like(on, value)
        if not training:
            return keras.ops.cast(keras.ops.greater(on, off), "float32")
        uniform = keras.random.uniform(
            keras.ops.shape(on),
            minval=_EPSILON,
            maxval=1.0 - _EPSILON,
            seed=self.seed_generator,
        )
        noisy = on - off + keras.ops.log(uniform) - keras.ops.log1p(-uniform)
        soft = keras.ops.sigmoid(noisy / self.temperature)
        hard = keras.ops.cast(keras.ops.greater(noisy, 0.0), "float32")
        # `soft - stop_gradient(soft)` is exactly 0 forward, so the value
        # is exactly `hard`; `soft + stop_gradient(hard - soft)` would round.
        gates = hard + (soft - keras.ops.stop_gradient(soft))
        if self.target_rate is not None and self.rate_loss_weight > 0:
            self.add_loss(
                self.rate_loss_weight * target_rate_loss(gates, self.target_rate)
            )
        return gates

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.groups)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "batch_norm": self.batch_norm,
            "temperature": self.initial_temperature,
            "initial_bias": self.initial_bias,
            "target_rate": self.target_rate,
            "rate_loss_weight": self.rate_loss_weight,
            "force": self.force,
            "seed": self.seed,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


def feature_channels(layer, input_shape):
    """The channels of a `(batch, ..., channels)` input a decision layer reads."""
    input_shape = tuple(input_shape)
    if len(input_shape) < 2 or input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects features of shape "
            "(batch, ..., channels) with known channels. Received: "
            f"shape={input_shape}"
        )
    return input_shape[-1]


def global_pool(features):
    """Averages `(batch, ..., channels)` over every axis but the first and last."""
    rank = len(features.shape)
    if rank == 2:
        return features
    return keras.ops.mean(features, axis=tuple(range(1, rank - 1)))


def _finite_number(value):
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and bool(np.isfinite(value))
    )


def _positive_number(value):
    return _finite_number(value) and value > 0
