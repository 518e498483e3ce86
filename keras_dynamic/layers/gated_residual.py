import keras

from keras_dynamic.layers._conditional import ConditionalMerge
from keras_dynamic.layers._conditional import same_shapes


@keras.saving.register_keras_serializable(package="keras_dynamic")
class GatedResidual(ConditionalMerge):
    """A residual connection whose block a gate switches per sample.

    `GatedResidual()([x, fx, g])` returns `x + g * fx`: the block output `fx`
    is added where the gate `g` is 1 and the input passes unchanged where it
    is 0 (ConvNet-AIG's adaptive inference graph). Keras computes `fx` for
    every sample; the exported chain runs the block only for samples whose
    gate is on, so a skipped block costs nothing on the device.

    For the exporter: input 2 is the decision, input 0 (the shortcut) is
    unconditional and input 1 runs under condition `("gate", 0)`.

    Call arguments:
        inputs: a list `[x, fx, g]`: the block input `x`, the block output
            `fx` (same shape as `x`) and the gate `(batch, 1)`, e.g. from
            `BlockGate` (0.0/1.0 at inference).

    Input shape:
        `x` and `fx`: the same `(batch, ...)` shape; `g`: `(batch, 1)`.

    Output shape:
        The shape of `x`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> x = np.ones((2, 3), "float32")
    >>> fx = np.full((2, 3), 5.0, "float32")
    >>> g = np.array([[1.0], [0.0]], "float32")
    >>> y = kd.layers.GatedResidual()([x, fx, g])
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[6.0, 6.0, 6.0], [1.0, 1.0, 1.0]]

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018.
    """

    decision_index = 2
    unconditional_indices = (0,)

    def build(self, input_shape):
        if isinstance(input_shape, (list, tuple)) and len(input_shape) != 3:
            raise ValueError(
                f"{self._describe()} expects exactly [x, fx, g]. Received "
                f"{len(input_shape)} inputs: input_shape={input_shape}"
            )
        super().build(input_shape)

    def _check_shapes(self, decision, branches, unconditional):
        (x_shape,), (fx_shape,) = unconditional, branches
        if not same_shapes([x_shape, fx_shape]):
            raise ValueError(
                f"{self._describe()}: the block changes the shape; add a "
                "projection (a gated block must return the shape of its "
                f"input). Received: x.shape={x_shape}, fx.shape={fx_shape}"
            )

    def call(self, inputs):
        x, fx, g = inputs
        return x + self._column(g, 0, fx) * fx

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
