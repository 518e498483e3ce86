from keras_dynamic.compat import keras
from keras_dynamic.compat import register_serializable
from keras_dynamic.compat import tf

_POOLINGS = ("avg", "max", "flatten", None)


@register_serializable
class EarlyExit(keras.layers.Layer):
    """An exit head that also marks a stage boundary for export.

    The head pools its input, optionally applies one hidden dense layer, and
    returns class logits (no softmax: train with
    ``SparseCategoricalCrossentropy(from_logits=True)``). Its input tensor is
    where `converters.export_stages` cuts the network: everything needed to
    compute this exit runs in one stage, and the runtime may stop there when
    the exit is confident.

    Args:
        num_classes: int, number of classes (logits width).
        pooling: `"avg"` (global average pooling, the default), `"max"`,
            `"flatten"`, or `None` when the input is already a vector.
        hidden_units: optional int; a hidden dense layer before the classifier
            gives a shallow exit more capacity (MSDNet-style heads).
        hidden_activation: activation of the hidden layer.
        dropout: float in [0, 1), dropout before the classifier in training.
        kernel_initializer, bias_initializer: initializers of the dense layers.
        kernel_regularizer: optional regularizer of the dense kernels.

    Call arguments:
        inputs: a `(batch, ..., channels)` feature map or a `(batch, features)`
            vector when `pooling=None`.
        training: whether dropout is active.

    Input shape:
        `(batch, height, width, channels)`, `(batch, steps, channels)`, or
        `(batch, features)` with `pooling=None`.

    Output shape:
        `(batch, num_classes)` logits.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> exit_1 = kd.layers.EarlyExit(10, name="exit_1")(x)
    >>> tuple(exit_1.shape)
    (None, 10)

    Reference:
        Teerapittayanon et al., "BranchyNet: Fast Inference via Early Exiting
        from Deep Neural Networks", ICPR 2016.
    """

    def __init__(
        self,
        num_classes,
        pooling="avg",
        hidden_units=None,
        hidden_activation="relu",
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"EarlyExit '{self.name}': `num_classes` must be a positive "
                f"int. Received: num_classes={num_classes!r}"
            )
        if pooling not in _POOLINGS:
            raise ValueError(
                f"EarlyExit '{self.name}': `pooling` must be one of "
                f"{_POOLINGS}. Received: pooling={pooling!r}"
            )
        if hidden_units is not None and (
            not isinstance(hidden_units, int) or hidden_units < 1
        ):
            raise ValueError(
                f"EarlyExit '{self.name}': `hidden_units` must be None or a "
                f"positive int. Received: hidden_units={hidden_units!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"EarlyExit '{self.name}': `dropout` must be in [0, 1). "
                f"Received: dropout={dropout!r}"
            )
        self.num_classes = num_classes
        self.pooling = pooling
        self.hidden_units = hidden_units
        self.hidden_activation = keras.activations.get(hidden_activation)
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _pooled_width(self, input_shape):
        if self.pooling is None:
            if len(input_shape) != 2:
                raise ValueError(
                    f"EarlyExit '{self.name}' with pooling=None expects a "
                    f"(batch, features) input. Received: shape={input_shape}"
                )
            return input_shape[-1]
        if len(input_shape) < 3:
            raise ValueError(
                f"EarlyExit '{self.name}' with pooling={self.pooling!r} "
                f"expects a feature map of rank >= 3. Received: "
                f"shape={input_shape}"
            )
        if self.pooling == "flatten":
            width = 1
            for dim in input_shape[1:]:
                if dim is None:
                    raise ValueError(
                        f"EarlyExit '{self.name}' with pooling='flatten' needs "
                        f"a fully known feature shape. Received: "
                        f"shape={input_shape}"
                    )
                width *= dim
            return width
        return input_shape[-1]

    def _dense_weights(self, name, fan_in, units):
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(fan_in, units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            trainable=True,
        )
        bias = self.add_weight(
            name=f"{name}_bias",
            shape=(units,),
            initializer=self.bias_initializer,
            trainable=True,
        )
        return kernel, bias

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        width = self._pooled_width(input_shape)
        self._flat_width = width
        if self.hidden_units is not None:
            self.hidden_kernel, self.hidden_bias = self._dense_weights(
                "hidden", width, self.hidden_units
            )
            width = self.hidden_units
        self.kernel, self.bias = self._dense_weights(
            "logits", width, self.num_classes
        )
        self.built = True

    def _pool(self, inputs):
        if self.pooling == "avg":
            return tf.reduce_mean(inputs, axis=list(range(1, inputs.shape.rank - 1)))
        if self.pooling == "max":
            return tf.reduce_max(inputs, axis=list(range(1, inputs.shape.rank - 1)))
        if self.pooling == "flatten":
            return tf.reshape(inputs, (-1, self._flat_width))
        return inputs

    def call(self, inputs, training=None):
        x = self._pool(inputs)
        if self.hidden_units is not None:
            x = self.hidden_activation(
                tf.matmul(x, self.hidden_kernel) + self.hidden_bias
            )
        if training and self.dropout > 0.0:
            x = tf.nn.dropout(x, rate=self.dropout)
        return tf.matmul(x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "pooling": self.pooling,
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
        }
