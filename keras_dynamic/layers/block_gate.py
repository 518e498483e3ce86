import keras

from keras_dynamic.layers._gate import GateBase


@keras.saving.register_keras_serializable(package="keras_dynamic")
class BlockGate(GateBase):
    """A per-sample on/off decision for one block (ConvNet-AIG's gate).

    The gate reads globally average-pooled features, runs
    `Dense(hidden_units) -> BatchNormalization -> ReLU -> Dense(2)` and
    compares the two logits (off, on). At inference it outputs exactly 0.0
    or 1.0 (`on > off`); in training it outputs a straight-through
    Gumbel-softmax sample: the forward value is 0 or 1, the gradient is that
    of the soft sample, so the gate learns under plain `fit`. Feed the output
    to `GatedResidual` as its decision; the exported chain then skips the
    block on the device.

    The bias of the last layer starts at `initial_bias=(0.1, 2.0)`
    (ConvNet-AIG's choice): gates start open for about 85% of the samples,
    so every block trains before the rate or budget loss closes some.
    `temperature` is a non-trainable float32 variable, so
    `keras_dynamic.callbacks.TemperatureScheduler` can anneal it; it scales
    the gradient of the soft sample, while the forward 0/1 sample (on with
    probability `sigmoid(on - off)`) does not depend on it. A target rate or
    budget therefore acts on the training samples; the inference rate (the
    share of samples with `on > off`) agrees once the gates are confident,
    so measure it (e.g. `ComputeBudget.executed_fraction`).

    Args:
        hidden_units: int, width of the hidden layer (ConvNet-AIG: 16).
        batch_norm: whether the hidden layer is batch-normalized (as in
            ConvNet-AIG).
        temperature: float > 0, the initial Gumbel-softmax temperature.
        initial_bias: pair of floats, the initial (off, on) logit biases.
        target_rate: optional float in [0, 1]; in training the layer then
            adds `rate_loss_weight * target_rate_loss(g, target_rate)` to the
            model's losses (ConvNet-AIG's target-rate loss).
        rate_loss_weight: non-negative float, the weight of that loss.
        force: `None` (decide per sample), `"on"` or `"off"`: output constant
            ones or zeros, e.g. to measure the network with every gate on
            (see `keras_dynamic.layers.force_gates`).
        seed: optional int, seed of the Gumbel noise.
        kernel_initializer, kernel_regularizer: of both dense layers.

    Call arguments:
        inputs: features `(batch, ..., channels)`, usually the block input.
        training: Python bool; truthy samples straight-through decisions.

    Input shape:
        `(batch, ..., channels)`; a rank-2 input is used without pooling.

    Output shape:
        `(batch, 1)` float32.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 4))
    >>> body = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> gate = kd.layers.BlockGate(name="gate")(inputs)
    >>> outputs = kd.layers.GatedResidual()([inputs, body, gate])
    >>> model = keras.Model(inputs, [outputs, gate])
    >>> _, g = model.predict(np.random.rand(5, 8, 8, 4), verbose=0)
    >>> sorted(set(g.ravel().tolist()) - {0.0, 1.0})
    []

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018.
        Jang, Gu and Poole, "Categorical Reparameterization with
        Gumbel-Softmax", ICLR 2017.
    """

    def __init__(self, hidden_units: int = 16, **kwargs):
        super().__init__(1, hidden_units=hidden_units, **kwargs)
