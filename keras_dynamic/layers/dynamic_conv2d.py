from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase


@keras.saving.register_keras_serializable(package="keras_dynamic")
class DynamicConv2D(DynamicConvBase):
    """Dynamic convolution: softmax attention over K convolution kernels.

    Per example, `a = softmax(FC(ReLU(FC(GAP(x)))) / temperature)` and the
    example is convolved with `sum_k a_k W_k` (bias `sum_k a_k b_k`). Unlike
    CondConv the attention sums to 1, which keeps the aggregated kernel in the
    convex hull of the experts. The paper trains with a high temperature first
    (near-uniform attention, so every expert learns) and anneals it linearly
    from 30 to 1 over the first 10 epochs: `temperature` is a non-trainable
    float32 variable so that `keras_dynamic.callbacks.TemperatureScheduler`
    can set it; its last value is saved with the weights and used at
    inference.

    Args:
        filters: int, number of output channels.
        kernel_size: int or pair of ints, the spatial size of each kernel.
        num_experts: int, number K of kernels (the paper uses 4).
        reduction: int, the attention MLP's hidden width is
            `max(channels // reduction, min_hidden_units)` (paper: 4).
        min_hidden_units: int, floor of that width, so that a thin input
            (RGB, 3 channels) still gets a usable attention MLP.
        temperature: float > 0, initial softmax temperature. The default 1.0
            is a plain softmax, right for a model trained without the
            scheduler; the scheduler overwrites it each epoch anyway.
        strides, padding, dilation_rate, activation, use_bias: as in
            `keras.layers.Conv2D`; `dilation_rate` > 1 only with `strides=1`.
        inference_form: `"mix_outputs"` (default), `"mix_kernels"` or
            `"patch_matmul"`; see `CondConv2D`.
        kernel_initializer, bias_initializer: initializers of each expert.
        kernel_regularizer, bias_regularizer: optional regularizers of the
            stacked `(K, ...)` tensors.
        kernel_constraint, bias_constraint: optional constraints on the same.

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.
        training: Python bool; truthy mixes kernels (one grouped
            convolution over the batch; the K expert outputs instead where
            XLA would run it on a CPU, see `_dynamic_conv_base`).

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, filters)`, sized like `Conv2D`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> layer = kd.layers.DynamicConv2D(8, 3, padding="same", temperature=30.0)
    >>> x = np.random.rand(2, 16, 16, 3).astype("float32")
    >>> tuple(layer(x).shape)
    (2, 16, 16, 8)
    >>> attention = layer.compute_routing(x)
    >>> bool(np.allclose(np.sum(attention, axis=1), 1.0))
    True

    Reference:
        Chen et al., "Dynamic Convolution: Attention over Convolution
        Kernels", CVPR 2020.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        reduction: int = 4,
        min_hidden_units: int = 4,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(kernel_size, **kwargs)
        for arg, value in (
            ("filters", filters),
            ("reduction", reduction),
            ("min_hidden_units", min_hidden_units),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"DynamicConv2D '{self.name}': `{arg}` must be a positive "
                    f"int. Received: {arg}={value!r}"
                )
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(
                f"DynamicConv2D '{self.name}': `temperature` must be a "
                f"positive number. Received: temperature={temperature!r}"
            )
        self.filters = filters
        self.reduction = reduction
        self.min_hidden_units = min_hidden_units
        self.initial_temperature = float(temperature)

    def _output_width(self, channels):
        return self.filters

    def _expert_kernel_shape(self, channels):
        return (*self.kernel_size, channels, self.filters)

    def _build_routing(self, channels):
        hidden = max(channels // self.reduction, self.min_hidden_units)
        shapes = {
            "attention_hidden_kernel": (channels, hidden),
            "attention_hidden_bias": (hidden,),
            "attention_kernel": (hidden, self.num_experts),
            "attention_bias": (self.num_experts,),
        }
        for name, shape in shapes.items():
            setattr(
                self,
                name,
                self.add_weight(
                    name=name,
                    shape=shape,
                    initializer="zeros" if len(shape) == 1 else "he_normal",
                    trainable=True,
                ),
            )
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            dtype="float32",
            trainable=False,
        )

    def _route(self, pooled, training):
        hidden = ops.relu(
            self._dense32(
                pooled, self.attention_hidden_kernel, self.attention_hidden_bias
            )
        )
        logits = self._dense32(hidden, self.attention_kernel, self.attention_bias)
        return ops.softmax(logits / ops.cast(self.temperature, "float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "reduction": self.reduction,
            "min_hidden_units": self.min_hidden_units,
            "temperature": self.initial_temperature,
        }
