from __future__ import annotations

from typing import Any

import keras

from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers._dynamic_conv_base import SigmoidRouting


@keras.saving.register_keras_serializable(package="keras_dynamic")
class CondConv2D(SigmoidRouting, DynamicConvBase):
    """Conditionally parameterized 2D convolution (CondConv).

    The layer holds `num_experts` kernels `W_k` and computes, per example,
    `r = sigmoid(GAP(x) @ W_r + b_r)` and convolves the example with
    `sum_k r_k W_k` (bias `sum_k r_k b_k`). The routing weights are
    independent sigmoids, so several experts can be fully on at once. A CondConv
    layer with K experts costs about one convolution plus a tiny routing FC,
    while its capacity grows with K.

    Args:
        filters: int, number of output channels.
        kernel_size: int or pair of ints, the spatial size of each kernel.
        num_experts: int, number K of expert kernels (the paper uses 4-32).
        strides: int or pair of ints.
        padding: `"valid"` or `"same"`.
        dilation_rate: int or pair of ints; > 1 only with `strides=1`.
        activation: activation applied to the output.
        use_bias: whether each expert has a bias (mixed like the kernels).
        inference_form: how the layer computes when `training` is falsy:
            `"mix_outputs"` (default: the K expert convolutions with static
            weights, outputs mixed by the routing weights; K times the
            convolution MACs, but every filter is a constant, so TFLite's
            XNNPACK and delegates run it, and it converts at any batch size)
            or `"mix_kernels"` (one convolution with a per-example mixed
            kernel; fewest MACs, but TFLite runs a runtime filter on its
            slower builtin kernel, and it converts with builtins only for a
            static batch of 1), or `"patch_matmul"` (the mixed kernel
            times the input's image patches, built from builtin slices, in
            one batched matmul, which XNNPACK runs with a runtime operand;
            the MACs of one convolution, any batch; the fastest of the
            three at batch 1 on a CPU, see BENCHMARKS.md). All compute the
            same function. This is the form of Keras calls (`predict`);
            the converters pick their own per layer by default
            (`dynamic_conv_form="auto"`). Switch it for a whole model with
            `keras_dynamic.layers.inference_form(model, form)`.
        routing_dropout: float in [0, 1), dropout on the pooled features that
            feed the routing FC, in training only.
        seed: optional int, seed of the routing dropout.
        kernel_initializer: initializer of each expert kernel (each expert is
            initialized on its own, with the fan of one ordinary kernel).
        bias_initializer: initializer of the expert biases.
        kernel_regularizer, bias_regularizer: optional regularizers; they see
            the stacked `(K, ...)` tensors.
        kernel_constraint, bias_constraint: optional constraints on the same.

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.
        training: Python bool; truthy mixes kernels (one grouped
            convolution over the batch, the cheapest to train; the K expert
            outputs instead where XLA would run the grouped convolution on
            a CPU, see `_dynamic_conv_base`) and enables routing dropout.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, filters)`, sized like `Conv2D`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> layer = kd.layers.CondConv2D(8, 3, num_experts=4, padding="same")
    >>> y = layer(np.zeros((2, 16, 16, 3), "float32"))
    >>> tuple(y.shape)
    (2, 16, 16, 8)
    >>> tuple(layer.compute_routing(np.zeros((2, 16, 16, 3), "float32")).shape)
    (2, 4)

    Reference:
        Yang et al., "CondConv: Conditionally Parameterized Convolutions for
        Efficient Inference", NeurIPS 2019.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        routing_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(kernel_size, **kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(
                f"CondConv2D '{self.name}': `filters` must be a positive int. "
                f"Received: filters={filters!r}"
            )
        self.filters = filters
        self._init_routing_dropout(routing_dropout, seed)

    def _output_width(self, channels):
        return self.filters

    def _expert_kernel_shape(self, channels):
        return (*self.kernel_size, channels, self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
        }
