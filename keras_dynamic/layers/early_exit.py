"""`EarlyExit`: a classifier head that also marks a stage boundary."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

POOLINGS = ("grid", "avg", "max", "flatten", None)
GRID_POOL_FORMS = ("average_pool", "depthwise_conv")


def depthwise_average(x, pool, strides):
    """A VALID average pool of channels-last `x`, as a depthwise convolution.

    Its weights are all 1 / pool area: a VALID window holds no padding to
    leave out, so the values are the pool's. XNNPACK runs this in int8, not
    an int8 AVERAGE_POOL_2D.
    """
    kernel = ops.full((*pool, x.shape[-1], 1), 1.0 / math.prod(pool), dtype=x.dtype)
    return ops.depthwise_conv(x, kernel, strides=strides, padding="valid")


@keras.saving.register_keras_serializable(package="keras_dynamic")
class EarlyExit(keras.layers.Layer):
    """An exit head that also marks a stage boundary for export.

    The head applies a small 3x3 convolution (to a 2-D feature map), pools,
    optionally applies one hidden dense layer, and returns class logits (no
    softmax: train with ``SparseCategoricalCrossentropy(from_logits=True)``).
    Its input tensor is where `keras_dynamic.converters.export_stages` cuts
    the network: everything needed to compute this exit runs in one stage,
    and the runtime may stop there when the exit is confident.

    The default head is the strongest of those measured on MNIST with the
    README's network (BENCHMARKS.md, "Early-exit heads"): a 3x3 convolution
    with 32 filters and stride 2 (as in BranchyNet and MSDNet heads), average
    pooling to a grid of about 4x4 cells (as in SDN) and a classifier on the
    flattened grid. A shallow block's features are local: global average
    pooling (`pooling="avg"`, the plain head) throws away where in the image
    each feature fired, and there the first exit of that network reached 35%
    test accuracy against 98% with the default head.

    Args:
        num_classes: int, number of classes (logits width).
        pooling: how the feature map becomes a vector: `"grid"` (the
            default: average pooling with a pool of `height // grid_size` by
            `width // grid_size`, or `steps // grid_size` for a sequence,
            then flatten), `"avg"` or `"max"` (global
            pooling), `"flatten"`, or `None` when the input is already a
            vector.
        grid_size: int, the grid side of `pooling="grid"`. The pool size is
            an integer, so a map whose side is not a multiple keeps a few
            more cells (a 7x7 map stays 7x7 for `grid_size=4`).
        conv_filters: int or None; a 3x3 convolution with this many filters
            and a ReLU before the pooling of a 2-D feature map (default 32),
            or None for none. Vectors and sequences are pooled as they are.
        conv_strides: int, strides of that convolution (default 2).
        hidden_units: optional int; a hidden dense layer before the
            classifier.
        hidden_activation: activation of the hidden layer.
        dropout: float in [0, 1), dropout before the classifier in training.
        kernel_initializer, bias_initializer: initializers of the dense
            layers and the convolution.
        kernel_regularizer: optional regularizer of their kernels.
        seed: optional int, seed of the dropout.

    Attributes:
        grid_pool_form: how the grid pooling is computed, read when the
            layer is called (a traced function keeps the form it was traced
            with): `"average_pool"` (the default) or `"depthwise_conv"`, the
            same average as a depthwise convolution with constant weights
            `1 / pool area`. Both give the same values; int8 exports take
            the convolution (`export_stages` sets it for the export),
            because XNNPACK runs an int8 DEPTHWISE_CONV_2D but not an int8
            AVERAGE_POOL_2D, which would run on TFLite's reference kernel
            and split the stage's delegate partition.

    Call arguments:
        inputs: a `(batch, ..., channels)` feature map or a `(batch,
            features)` vector when `pooling=None`.
        training: whether dropout is active.

    Input shape:
        `(batch, height, width, channels)` or `(batch, steps, channels)`
        (with known sizes for `"grid"` and `"flatten"`), or `(batch,
        features)` with `pooling=None`.

    Output shape:
        `(batch, num_classes)` logits.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> exit_1 = kd.layers.EarlyExit(10, name="exit_1")(x)
    >>> tuple(exit_1.shape)
    (None, 10)
    >>> plain = kd.layers.EarlyExit(10, pooling="avg", conv_filters=None)(x)

    Reference:
        Teerapittayanon et al., "BranchyNet: Fast Inference via Early Exiting
        from Deep Neural Networks", ICPR 2016.
        Kaya et al., "Shallow-Deep Networks: Understanding and Mitigating
        Network Overthinking", ICML 2019.
    """

    def __init__(
        self,
        num_classes: int,
        pooling: str | None = "grid",
        grid_size: int = 4,
        conv_filters: int | None = 32,
        conv_strides: int = 2,
        hidden_units: int | None = None,
        hidden_activation: Any = "relu",
        dropout: float = 0.0,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for arg, value, optional in (
            ("num_classes", num_classes, False),
            ("grid_size", grid_size, False),
            ("conv_filters", conv_filters, True),
            ("conv_strides", conv_strides, False),
            ("hidden_units", hidden_units, True),
        ):
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                kind = "None or a positive int" if optional else "a positive int"
                raise ValueError(
                    f"EarlyExit '{self.name}': `{arg}` must be {kind}. "
                    f"Received: {arg}={value!r}"
                )
        if pooling not in POOLINGS:
            raise ValueError(
                f"EarlyExit '{self.name}': `pooling` must be one of "
                f"{POOLINGS}. Received: pooling={pooling!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"EarlyExit '{self.name}': `dropout` must be in [0, 1). "
                f"Received: dropout={dropout!r}"
            )
        self.num_classes = num_classes
        self.pooling = pooling
        self.grid_size = grid_size
        self.conv_filters = conv_filters
        self.conv_strides = conv_strides
        self.hidden_units = hidden_units
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.seed = seed
        # Made in `build`: only a 2-D feature map gets the convolution.
        self.conv = None
        self.dropout_layer = keras.layers.Dropout(
            dropout, seed=seed, dtype=self.dtype_policy, name="dropout"
        )
        self.grid_pool = None
        self.grid_pool_form = "average_pool"

    def _check_input_shape(self, input_shape: tuple) -> None:
        rank = len(input_shape)
        needs = None
        if self.pooling is None and rank != 2:
            needs = "a (batch, features) input"
        elif self.pooling is not None and rank < 3:
            needs = "a feature map of rank >= 3"
        elif self.pooling == "grid" and rank not in (3, 4):
            needs = (
                "a (batch, height, width, channels) or (batch, steps, "
                "channels) input"
            )
        elif self.pooling in ("grid", "flatten") and None in input_shape[1:]:
            needs = "a fully known feature shape"
        if needs is not None:
            raise ValueError(
                f"EarlyExit '{self.name}' with pooling={self.pooling!r} "
                f"expects {needs}. Received: shape={input_shape}"
            )

    def build(self, input_shape: tuple) -> None:
        input_shape = tuple(input_shape)
        self._check_input_shape(input_shape)
        shape = input_shape
        if self.conv_filters is not None and len(shape) == 4:
            self.conv = keras.layers.Conv2D(
                self.conv_filters,
                3,
                strides=self.conv_strides,
                padding="same",
                activation="relu",
                kernel_initializer=self.kernel_initializer,
                bias_initializer=self.bias_initializer,
                kernel_regularizer=self.kernel_regularizer,
                dtype=self.dtype_policy,
                name="conv",
            )
            self.conv.build(shape)
            shape = self.conv.compute_output_shape(shape)
        if self.pooling == "grid":
            pool = tuple(max(1, side // self.grid_size) for side in shape[1:-1])
            pooling_layer = (
                keras.layers.AveragePooling2D
                if len(pool) == 2
                else keras.layers.AveragePooling1D
            )
            # A pool of 1 is an identity: leave it out of the exported graph.
            if pool != (1,) * len(pool):
                self.grid_pool = pooling_layer(
                    pool, dtype=self.dtype_policy, name="grid_pool"
                )
                self.grid_pool.build(shape)
                shape = self.grid_pool.compute_output_shape(shape)
        if self.pooling in ("grid", "flatten"):
            width = 1
            for dim in shape[1:]:
                width *= dim
        else:
            width = shape[-1]
        self._flat_width = width
        if self.hidden_units is not None:
            self.hidden_kernel, self.hidden_bias = self._dense_weights(
                "hidden", width, self.hidden_units
            )
            width = self.hidden_units
        self.kernel, self.bias = self._dense_weights(
            "logits", width, self.num_classes
        )

    def _dense_weights(self, name: str, fan_in: int, units: int) -> tuple:
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(fan_in, units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        bias = self.add_weight(
            name=f"{name}_bias", shape=(units,), initializer=self.bias_initializer
        )
        return kernel, bias

    def _pool(self, x):
        if self.pooling in ("avg", "max"):
            reduce = ops.mean if self.pooling == "avg" else ops.max
            return reduce(x, axis=tuple(range(1, len(x.shape) - 1)))
        if self.pooling in ("grid", "flatten"):
            if self.grid_pool is not None:
                x = self._grid_pooled(x)
            return ops.reshape(x, (-1, self._flat_width))
        return x

    def _grid_pooled(self, x):
        if self.grid_pool_form not in GRID_POOL_FORMS:
            raise ValueError(
                f"EarlyExit '{self.name}': `grid_pool_form` must be one of "
                f"{GRID_POOL_FORMS}. Received: grid_pool_form="
                f"{self.grid_pool_form!r}"
            )
        if self.grid_pool_form == "average_pool":
            return self.grid_pool(x)
        return depthwise_average(
            x, tuple(self.grid_pool.pool_size), tuple(self.grid_pool.strides)
        )

    def call(self, inputs, training=None):
        x = inputs if self.conv is None else self.conv(inputs)
        x = self._pool(x)
        if self.hidden_units is not None:
            x = self.hidden_activation(
                ops.matmul(x, self.hidden_kernel) + self.hidden_bias
            )
        x = self.dropout_layer(x, training=training)
        return ops.matmul(x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
            "grid_size": self.grid_size,
            "conv_filters": self.conv_filters,
            "conv_strides": self.conv_strides,
            "hidden_units": self.hidden_units,
            "hidden_activation": keras.activations.serialize(
                self.hidden_activation
            ),
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "seed": self.seed,
        }
