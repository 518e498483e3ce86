from __future__ import annotations

from typing import Any

import keras

from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers._dynamic_conv_base import SigmoidRouting


@keras.saving.register_keras_serializable(package="keras_dynamic")
class DepthwiseCondConv2D(SigmoidRouting, DynamicConvBase):
    """Depthwise 2D convolution with CondConv routing over expert kernels.

    The depthwise counterpart of `CondConv2D`, as used in the inverted
    residual blocks of CondConv-EfficientNet: `r = sigmoid(GAP(x) @ W_r + b_r)`
    and each example is convolved depthwise with `sum_k r_k W_k`.

    Args:
        kernel_size: int or pair of ints, the spatial size of each kernel.
        depth_multiplier: int, output channels per input channel.
        num_experts: int, number K of expert kernels.
        strides: int or pair of equal ints (TensorFlow's depthwise convolution
            takes no others, so the layer refuses them on every backend).
        padding: `"valid"` or `"same"`.
        dilation_rate: int or pair of ints; > 1 only with `strides=1`.
        activation: activation applied to the output.
        use_bias: whether each expert has a bias (mixed like the kernels).
        inference_form: `"mix_outputs"` (default), `"mix_kernels"` or
            `"patch_matmul"` (per-channel scaled tap views, summed); see
            `CondConv2D`. For a depthwise layer the K-fold MACs of
            `"mix_outputs"` are small in absolute terms, and it is the
            form the converters pick by default (BENCHMARKS.md).
        routing_dropout: float in [0, 1), dropout on the pooled features that
            feed the routing FC, in training only.
        seed: optional int, seed of the routing dropout.
        kernel_initializer, bias_initializer: initializers of each expert.
        kernel_regularizer, bias_regularizer: optional regularizers of the
            stacked `(K, ...)` tensors.
        kernel_constraint, bias_constraint: optional constraints on the same.

    Call arguments:
        inputs: a 4D tensor `(batch, height, width, channels)`.
        training: Python bool; truthy mixes kernels (the K expert outputs
            instead on JAX without an accelerator, see `_dynamic_conv_base`)
            and enables routing dropout.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, new_height, new_width, channels * depth_multiplier)`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> layer = kd.layers.DepthwiseCondConv2D(3, num_experts=4, padding="same")
    >>> tuple(layer(np.zeros((2, 16, 16, 8), "float32")).shape)
    (2, 16, 16, 8)

    Reference:
        Yang et al., "CondConv: Conditionally Parameterized Convolutions for
        Efficient Inference", NeurIPS 2019.
    """

    _depthwise = True

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        depth_multiplier: int = 1,
        routing_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(kernel_size, **kwargs)
        if not isinstance(depth_multiplier, int) or depth_multiplier < 1:
            raise ValueError(
                f"DepthwiseCondConv2D '{self.name}': `depth_multiplier` must "
                f"be a positive int. Received: "
                f"depth_multiplier={depth_multiplier!r}"
            )
        if self.strides[0] != self.strides[1]:
            raise ValueError(
                f"DepthwiseCondConv2D '{self.name}': `strides` must be equal "
                f"along height and width. Received: strides={self.strides}"
            )
        self.depth_multiplier = depth_multiplier
        self._init_routing_dropout(routing_dropout, seed)

    def _output_width(self, channels):
        return channels * self.depth_multiplier

    def _expert_kernel_shape(self, channels):
        return (*self.kernel_size, channels, self.depth_multiplier)

    def get_config(self):
        return {**super().get_config(), "depth_multiplier": self.depth_multiplier}
