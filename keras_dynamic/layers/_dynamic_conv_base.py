"""Shared math of the dynamic-convolution layers (CondConv, DyConv).

A dynamic convolution keeps `K` expert kernels `W_k` (and biases `b_k`) and a
routing function `r(x)` of shape `(batch, K)`. Its output is

    y = act( (sum_k r_k W_k) * x + sum_k r_k b_k )          (mix kernels)
      = act( sum_k r_k (W_k * x + b_k) )                    (mix outputs)

The two lines are equal because convolution is linear in the kernel, so the
layer may pick whichever is cheaper for the situation:

* Training (and the `"mix_kernels"` inference form) mixes one kernel per
  example and runs **one grouped convolution over the whole batch**: the batch
  is folded into the channel axis, `(B, H, W, C) -> (1, H, W, B*C)`, and the
  per-example kernels become the `B` groups of one `keras.ops.conv` (one
  `keras.ops.depthwise_conv` for the depthwise layer). That costs the MACs of
  one static convolution plus the kernel mix, never a loop over examples.
* `"mix_outputs"` runs the `K` expert convolutions (static weights, K times
  the MACs) and mixes their outputs with the routing weights. Every filter is
  a constant, so TFLite delegates and XNNPACK take it, at any batch size.
  Training takes this form too where the grouped convolution would run on
  XLA's CPU backend (JAX, and TensorFlow's full convolutions, on a machine
  without an accelerator), whose grouped convolution is far slower there than
  K plain convolutions.

* `"patch_matmul"` mixes one kernel per example too, but applies it as a
  matrix product: the input's kernel-tap views (builtin strided slices) are
  concatenated into patches and multiplied by the mixed kernel in one batched
  matmul, which XNNPACK runs with a runtime operand; the MACs of one
  convolution, at any batch size. Fastest of the three for full
  convolutions on a CPU at batch 1 (BENCHMARKS.md), so the converters pick it
  for them by default; the depthwise layer sums per-channel scaled tap views,
  which is slower there than its K static depthwise convolutions.

With a static batch of 1, `"mix_kernels"` is one plain convolution with a
runtime filter: a builtin TFLite CONV_2D (on its slower non-XNNPACK kernel).
With an unknown batch it stays the grouped convolution, which TFLite has no
builtin for, so export that form with a batch-1 input signature.

Subclasses supply the routing function and say whether the convolution is a
full or a depthwise one; everything else lives here.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
from keras import ops

INFERENCE_FORMS = ("mix_outputs", "mix_kernels", "patch_matmul")
_PADDINGS = ("valid", "same")


# XNNPACK's CONCATENATION takes at most this many inputs; a wider one stays on
# TFLite's own kernel and splits the delegated graph around it.
_XNNPACK_MAX_CONCAT = 4


def _concatenate_channels(tensors):
    """Concatenates along the last axis in groups XNNPACK can run."""
    while len(tensors) > 1:
        tensors = [
            ops.concatenate(tensors[i : i + _XNNPACK_MAX_CONCAT], axis=-1)
            if len(tensors[i : i + _XNNPACK_MAX_CONCAT]) > 1
            else tensors[i]
            for i in range(0, len(tensors), _XNNPACK_MAX_CONCAT)
        ]
    return tensors[0]


def _pair(value, layer, arg):
    """Normalizes an int or a pair of positive ints (the Conv2D convention)."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value) if isinstance(value, (tuple, list)) else value
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and v >= 1 for v in value)
    ):
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': `{arg}` must be a "
            f"positive int or a pair of positive ints. Received: "
            f"{arg}={value!r}"
        )
    return value


def _expert_initializer(initializer, num_experts):
    """Initializes each expert as if it were an ordinary kernel.

    Calling `initializer` on the stacked `(K, ...)` shape would count `K` into
    the fan-in, and calling one instance K times repeats the same values
    (Keras initializers are deterministic per instance), which would start all
    experts identical. So every expert gets a fresh copy of the initializer,
    seeded `seed + k` when the user fixed a seed.
    """
    config = initializer.get_config()

    def initialize(shape, dtype=None):
        experts = []
        for k in range(num_experts):
            expert_config = dict(config)
            if expert_config.get("seed") is not None:
                expert_config["seed"] = expert_config["seed"] + k
            expert_init = type(initializer).from_config(expert_config)
            experts.append(expert_init(shape=tuple(shape[1:]), dtype=dtype))
        return ops.stack(experts)

    return initialize


@functools.cache
def _grouped_conv_on_xla_cpu(backend: str, depthwise: bool) -> bool:
    """Whether a grouped `keras.ops` convolution would run on XLA's CPU backend.

    XLA runs the grouped convolutions of the JAX backend, and the full (not
    depthwise) ones of the TensorFlow backend, whose depthwise convolution is
    TensorFlow's own kernel. On a CPU, XLA's grouped convolution made a
    training step two orders of magnitude slower than the K plain expert
    convolutions (BENCHMARKS.md), so training mixes expert outputs there.
    """
    if backend == "jax" or (backend == "tensorflow" and not depthwise):
        return all(
            device.lower().startswith("cpu")
            for device in keras.distribution.list_devices()
        )
    return False


def _conv_output_length(length, kernel, stride, dilation, padding):
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - dilation * (kernel - 1) - 1) // stride + 1


class DynamicConvBase(keras.layers.Layer):
    """Base class of layers whose kernel is a routed mix of expert kernels.

    Not used directly: see `CondConv2D`, `DepthwiseCondConv2D` and
    `DynamicConv2D`. Subclasses set `_depthwise`, implement
    `_output_width(channels)`, `_expert_kernel_shape(channels)`,
    `_build_routing(channels)` and `_route(pooled, training)`, which maps the
    float32 globally pooled input `(batch, channels)` to routing weights.

    The arguments shared by all of them follow `keras.layers.Conv2D`; in
    addition `num_experts` is the number K of expert kernels and
    `inference_form` (`"mix_outputs"`, `"mix_kernels"` or `"patch_matmul"`)
    picks how the layer
    computes when `training` is falsy (see the module docstring). The kernel
    weight has shape `(K, kernel_h, kernel_w, in, out)`; regularizers and
    constraints see that whole tensor.
    """

    _depthwise = False

    def __init__(
        self,
        kernel_size,
        num_experts=4,
        strides=(1, 1),
        padding="valid",
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        inference_form="mix_outputs",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        name = f"{type(self).__name__} '{self.name}'"
        if not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(
                f"{name}: `num_experts` must be a positive int. "
                f"Received: num_experts={num_experts!r}"
            )
        padding = padding.lower() if isinstance(padding, str) else padding
        if padding not in _PADDINGS:
            raise ValueError(
                f"{name}: `padding` must be one of {_PADDINGS}. "
                f"Received: padding={padding!r}"
            )
        self.kernel_size = _pair(kernel_size, self, "kernel_size")
        self.strides = _pair(strides, self, "strides")
        self.dilation_rate = _pair(dilation_rate, self, "dilation_rate")
        # TensorFlow's convolutions reject this combination at run time with
        # an opaque error; keras.layers.Conv2D rejects it too.
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                f"{name}: `strides` > 1 cannot be combined with "
                f"`dilation_rate` > 1. Received: strides={self.strides}, "
                f"dilation_rate={self.dilation_rate}"
            )
        self.num_experts = num_experts
        self.padding = padding
        self.inference_form = inference_form
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    @property
    def inference_form(self):
        return self._inference_form

    @inference_form.setter
    def inference_form(self, form):
        # A setter, so `inference_form(model, form)` and users assigning the
        # attribute get the same validation as the constructor.
        if form not in INFERENCE_FORMS:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': `inference_form` must "
                f"be one of {INFERENCE_FORMS}. Received: inference_form="
                f"{form!r}"
            )
        self._inference_form = form

    # -- weights -------------------------------------------------------------

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != 4 or channels is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects a "
                f"(batch, height, width, channels) input with known channels. "
                f"Received: shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_experts, *self._expert_kernel_shape(channels)),
            initializer=_expert_initializer(
                self.kernel_initializer, self.num_experts
            ),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_experts, self._output_width(channels)),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        self._build_routing(channels)
        self.built = True

    # -- routing -------------------------------------------------------------

    def compute_routing(self, inputs, training=None):
        """Returns the routing weights, `(batch, num_experts)` float32.

        The routing runs in float32 whatever the dtype policy: under
        `mixed_float16` the global pooling of a large map, the sigmoid/softmax
        and the temperature division are where float16 overflows or saturates.
        """
        pooled = ops.mean(ops.cast(inputs, "float32"), axis=(1, 2))
        return self._route(pooled, training)

    def _dense32(self, x, kernel, bias):
        return ops.matmul(x, ops.cast(kernel, "float32")) + ops.cast(
            bias, "float32"
        )

    # -- convolution ---------------------------------------------------------

    def _conv(self, inputs, kernel):
        conv = ops.depthwise_conv if self._depthwise else ops.conv
        return conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
        )

    def _mix_kernels(self, inputs, routing):
        """One grouped convolution with a mixed kernel per example."""
        kernel = ops.cast(self.kernel, self.compute_dtype)
        _, kh, kw, k_in, k_out = kernel.shape
        mixed = ops.tensordot(routing, kernel, axes=[[1], [0]])  # (B,kh,kw,i,o)
        if inputs.shape[0] == 1:
            # A static batch of 1 needs no grouping, and only this plain
            # convolution converts to a builtin TFLite CONV_2D (with a runtime
            # filter): a grouped one with an unknown group count needs Flex.
            return self._conv(inputs, mixed[0])
        batch, height, width = ops.shape(inputs)[:3]
        # (B, H, W, C) -> (1, H, W, B*C): example b owns channels b*C..b*C+C-1.
        folded = ops.reshape(
            ops.transpose(inputs, (1, 2, 0, 3)), (1, height, width, -1)
        )
        if self._depthwise:
            # Depthwise: the B*C folded channels each get their own filter.
            folded_kernel = ops.reshape(
                ops.transpose(mixed, (1, 2, 0, 3, 4)), (kh, kw, -1, k_out)
            )
        else:
            # Grouped: a filter input depth C < B*C makes the convolution run
            # B groups; group b's output channels are b*F..b*F+F-1.
            folded_kernel = ops.reshape(
                ops.transpose(mixed, (1, 2, 3, 0, 4)), (kh, kw, k_in, -1)
            )
        out = self._conv(folded, folded_kernel)
        _, out_height, out_width, _ = ops.shape(out)
        out = ops.reshape(
            out, (out_height, out_width, batch, self._output_width(inputs.shape[-1]))
        )
        return ops.transpose(out, (2, 0, 1, 3))

    def _patch_matmul(self, inputs, routing):
        """The mixed kernel applied as a matrix product with image patches.

        Each example's mixed kernel multiplies its image patches in one
        batched matmul: the multiply-adds of one convolution and, unlike a
        convolution with a runtime filter, an op XNNPACK runs with a runtime
        operand, at any batch size. How the patches are built depends on the
        horizontal stride:

        * stride 1 (`_row_patch_matmul`): only the `kh` row taps are
          gathered on the input side (row views concatenated along the
          channels, over the padded width); the product yields all `kw`
          column taps side by side, and `kw` column-shifted slices of it are
          summed. It copies `kh` views of the input instead of `kh*kw`, for
          `(W + kw - 1) / W` of the multiply-adds.
        * otherwise: a full im2col of the `kh*kw` tap views (strided slices of
          the padded input concatenated along the channels).

        A depthwise kernel needs no matmul: each tap's view is scaled per
        channel and summed.
        """
        kernel = ops.cast(self.kernel, self.compute_dtype)
        padded, out_sizes = self._padded(inputs)
        if self._depthwise:
            views = self._tap_views(padded, out_sizes)
            return self._depthwise_taps(views, routing, kernel)
        if self.strides[1] == 1:
            return self._row_patch_matmul(padded, out_sizes, routing, kernel)
        _, kh, kw, k_in, k_out = kernel.shape
        mixed = ops.matmul(routing, ops.reshape(kernel, (self.num_experts, -1)))
        mixed = ops.reshape(mixed, (-1, kh * kw * k_in, k_out))
        views = self._tap_views(padded, out_sizes)
        patches = _concatenate_channels(views)
        out_height, out_width = out_sizes
        out = ops.matmul(
            ops.reshape(patches, (-1, out_height * out_width, kh * kw * k_in)), mixed
        )
        return ops.reshape(out, (-1, out_height, out_width, k_out))

    def _row_patch_matmul(self, padded, out_sizes, routing, kernel):
        """`_patch_matmul` at horizontal stride 1: row taps in, column taps out.

        Why: the full im2col writes `kh*kw` copies of the input, which on a
        CPU cost about as much as the matmul itself on 32x32 maps; this form
        writes `kh`. Its product runs over the padded width, and output column
        `w` sums tap `j`'s block at column `w + j*dilation`.
        """
        _, kh, kw, k_in, k_out = kernel.shape
        # Expert kernels laid out (kh*C, kw*F): rows (i, c), columns (j, f).
        # The transpose is of the weights, folded to a constant on export.
        by_rows = ops.transpose(kernel, (0, 1, 3, 2, 4))
        mixed = ops.matmul(routing, ops.reshape(by_rows, (self.num_experts, -1)))
        mixed = ops.reshape(mixed, (-1, kh * k_in, kw * k_out))
        rows = _concatenate_channels(self._tap_views(padded, out_sizes, rows_only=True))
        out_height, out_width = out_sizes
        padded_width = padded.shape[2]
        taps = ops.matmul(
            ops.reshape(rows, (-1, out_height * padded_width, kh * k_in)), mixed
        )
        taps = ops.reshape(taps, (-1, out_height, padded_width, kw * k_out))
        if kw == 1:
            return taps
        dilation = self.dilation_rate[1]
        out = None
        for j in range(kw):
            left = j * dilation
            term = taps[:, :, left : left + out_width, j * k_out : (j + 1) * k_out]
            out = term if out is None else out + term
        return out

    def _depthwise_taps(self, views, routing, kernel):
        _, kh, kw, channels, multiplier = kernel.shape
        mixed = ops.matmul(routing, ops.reshape(kernel, (self.num_experts, -1)))
        # (B, taps, 1, 1, C*M): tap t scales view t, channel c*M+m like
        # DepthwiseConv2D's output order.
        mixed = ops.reshape(mixed, (-1, kh * kw, 1, 1, channels * multiplier))
        out = None
        for tap, view in enumerate(views):
            if multiplier > 1:
                view = ops.repeat(view, multiplier, axis=-1)
            term = view * mixed[:, tap]
            out = term if out is None else out + term
        return out

    def _padded(self, inputs):
        """The input with TensorFlow's SAME padding applied, and the output size."""
        _, height, width, _ = inputs.shape
        if height is None or width is None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': inference_form="
                "'patch_matmul' needs the input's height and width. Received: "
                f"shape={tuple(inputs.shape)}"
            )
        sizes = (height, width)
        out_sizes = tuple(
            _conv_output_length(
                sizes[i], self.kernel_size[i], self.strides[i],
                self.dilation_rate[i], self.padding,
            )
            for i in range(2)
        )
        if self.padding == "same":
            # TensorFlow's SAME padding: the odd pixel goes after.
            totals = [
                max(
                    (out_sizes[i] - 1) * self.strides[i]
                    + (self.kernel_size[i] - 1) * self.dilation_rate[i]
                    + 1
                    - sizes[i],
                    0,
                )
                for i in range(2)
            ]
            if any(totals):
                inputs = ops.pad(
                    inputs,
                    [
                        (0, 0),
                        (totals[0] // 2, totals[0] - totals[0] // 2),
                        (totals[1] // 2, totals[1] - totals[1] // 2),
                        (0, 0),
                    ],
                )
        return inputs, out_sizes

    def _tap_views(self, padded, out_sizes, rows_only=False):
        """The views of `padded` that the kernel taps (i, j) multiply, i-major.

        Row tap i is a strided slice of the rows, column tap j one of the
        columns. With `rows_only` there is one view per row tap, over the
        whole padded width (for `_row_patch_matmul`).
        """
        (stride_h, stride_w), (dil_h, dil_w) = self.strides, self.dilation_rate
        out_height, out_width = out_sizes
        if rows_only:
            columns = [slice(None)]
        else:
            columns = [
                slice(j * dil_w, j * dil_w + (out_width - 1) * stride_w + 1, stride_w)
                for j in range(self.kernel_size[1])
            ]
        views = []
        for i in range(self.kernel_size[0]):
            top = i * dil_h
            rows = slice(top, top + (out_height - 1) * stride_h + 1, stride_h)
            views.extend(padded[:, rows, cols, :] for cols in columns)
        return views

    def _mix_outputs(self, inputs, routing):
        """K convolutions with static expert kernels, outputs mixed after."""
        kernel = ops.cast(self.kernel, self.compute_dtype)
        # One convolution per expert (a loop over experts, not examples)
        # rather than one with the experts stacked along the output channels:
        # un-stacking a depthwise output (channel c*K + k) for the mix cost
        # 3.5x the whole per-expert form in TFLite, and for full convolutions
        # the per-expert form measured ~5% faster under XNNPACK as well.
        # One SPLIT rather than K strided slices of the routing weights:
        # XNNPACK takes the split, the slices would stay outside it and cut
        # the delegated graph at every expert.
        weights = ops.split(
            ops.reshape(routing, (-1, 1, 1, self.num_experts)),
            self.num_experts,
            axis=-1,
        )
        out = None
        for k in range(self.num_experts):
            term = weights[k] * self._conv(inputs, kernel[k])
            out = term if out is None else out + term
        return out

    def _form(self, training):
        """The computation this call takes: an inference form, or training's."""
        if not training:
            return self.inference_form
        if _grouped_conv_on_xla_cpu(keras.backend.backend(), self._depthwise):
            return "mix_outputs"
        return "mix_kernels"

    def call(self, inputs, training=None):
        routing32 = self.compute_routing(inputs, training=training)
        routing = ops.cast(routing32, self.compute_dtype)
        form = self._form(training)
        if form == "mix_kernels":
            out = self._mix_kernels(inputs, routing)
        elif form == "patch_matmul":
            out = self._patch_matmul(inputs, routing)
        else:
            out = self._mix_outputs(inputs, routing)
        if self.use_bias:
            bias = ops.matmul(routing, ops.cast(self.bias, self.compute_dtype))
            out = out + ops.reshape(bias, (-1, 1, 1, bias.shape[-1]))
        return self.activation(out)

    def compute_output_shape(self, input_shape):
        height, width = (
            _conv_output_length(
                input_shape[i + 1],
                self.kernel_size[i],
                self.strides[i],
                self.dilation_rate[i],
                self.padding,
            )
            for i in range(2)
        )
        return (
            input_shape[0],
            height,
            width,
            self._output_width(input_shape[-1]),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "num_experts": self.num_experts,
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "inference_form": self.inference_form,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(
                self.bias_regularizer
            ),
            "kernel_constraint": keras.constraints.serialize(
                self.kernel_constraint
            ),
            "bias_constraint": keras.constraints.serialize(
                self.bias_constraint
            ),
        }


class SigmoidRouting:
    """CondConv routing, shared by `CondConv2D` and `DepthwiseCondConv2D`.

    `r = sigmoid(dropout(GAP(x)) @ W_r + b_r)`: one FC, independent sigmoids
    (several experts may be on at once). Mixed in before `DynamicConvBase`;
    the layer's `__init__` calls `_init_routing_dropout`.
    """

    def _init_routing_dropout(self, routing_dropout: float, seed: int | None) -> None:
        if not 0.0 <= routing_dropout < 1.0:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': `routing_dropout` must "
                f"be in [0, 1). Received: routing_dropout={routing_dropout!r}"
            )
        self.routing_dropout = routing_dropout
        self.seed = seed
        # float32 like the rest of the routing, whatever the dtype policy.
        self.routing_dropout_layer = keras.layers.Dropout(
            routing_dropout, seed=seed, dtype="float32", name="routing_dropout"
        )

    def _build_routing(self, channels):
        self.routing_kernel = self.add_weight(
            name="routing_kernel",
            shape=(channels, self.num_experts),
            initializer="glorot_uniform",
        )
        self.routing_bias = self.add_weight(
            name="routing_bias", shape=(self.num_experts,), initializer="zeros"
        )

    def _route(self, pooled, training):
        pooled = self.routing_dropout_layer(pooled, training=training)
        return ops.sigmoid(
            self._dense32(pooled, self.routing_kernel, self.routing_bias)
        )

    def get_config(self):
        return {
            **super().get_config(),
            "routing_dropout": self.routing_dropout,
            "seed": self.seed,
        }
