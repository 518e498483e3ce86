"""`ActivationQuantizer`: fake int8 quantization of a tensor with a tracked range."""

import keras
from keras import ops

from keras_dynamic.quantization.fake_quant import fake_quantize_activation


@keras.saving.register_keras_serializable(package="keras_dynamic")
class ActivationQuantizer(keras.layers.Layer):
    """Rounds its input to the int8 grid the exported stage will use.

    In training, the range is an exponential moving average of each batch's
    minimum and maximum (widened to hold zero, as the converter's calibration
    does), and the output is quantized on the updated range; in inference the
    tracked range is used as it is. Until it has seen a training batch the
    layer passes its input through unchanged.

    Args:
        ema_decay: weight of the old range in the moving average.

    Example:

    >>> import numpy as np
    >>> quantizer = ActivationQuantizer()
    >>> x = np.linspace(-1.0, 3.0, 8, dtype="float32").reshape(1, 8)
    >>> _ = quantizer(x, training=True)
    >>> [round(float(v), 3) for v in (quantizer.range_min, quantizer.range_max)]
    [-1.0, 3.0]
    >>> y = keras.ops.convert_to_numpy(quantizer(x))
    >>> bool(np.abs(y - x).max() <= 4.0 / 255 / 2 + 1e-6)
    True
    """

    def __init__(self, ema_decay=0.99, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(
                f"ActivationQuantizer '{self.name}': `ema_decay` must be in "
                f"[0, 1). Received: ema_decay={ema_decay}"
            )
        self.ema_decay = float(ema_decay)

    def build(self, input_shape):
        def scalar(name, initial):
            return self.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(initial),
                dtype="float32",
                trainable=False,
            )

        self.range_min = scalar("range_min", 0.0)
        self.range_max = scalar("range_max", 0.0)
        self.batches_seen = scalar("batches_seen", 0.0)

    def call(self, inputs, training=None):
        if not _is_float(inputs):
            return inputs
        values = ops.cast(inputs, "float32")
        if training:
            return ops.cast(_rounded(values, *self._tracked_range(values)), inputs.dtype)
        quantized = _rounded(values, self.range_min, self.range_max)
        return ops.cast(ops.where(self.batches_seen > 0, quantized, values), inputs.dtype)

    def _tracked_range(self, values):
        """The range after this training batch (also stored)."""
        low = ops.stop_gradient(ops.minimum(ops.min(values), 0.0))
        high = ops.stop_gradient(ops.maximum(ops.max(values), 0.0))
        seen, decay = self.batches_seen > 0, self.ema_decay
        low = ops.where(seen, decay * self.range_min + (1 - decay) * low, low)
        high = ops.where(seen, decay * self.range_max + (1 - decay) * high, high)
        self.range_min.assign(low)
        self.range_max.assign(high)
        self.batches_seen.assign(self.batches_seen + 1)
        return low, high

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ema_decay": self.ema_decay}


def _rounded(values, low, high):
    # A range of width zero (a tensor that was all zeros) quantizes to zero.
    return fake_quantize_activation(values, low, ops.maximum(high, low + 1e-6))


def _is_float(tensor):
    return "float" in keras.backend.standardize_dtype(tensor.dtype)
