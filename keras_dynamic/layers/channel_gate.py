import keras

from keras_dynamic.layers._gate import GateBase


@keras.saving.register_keras_serializable(package="keras_dynamic")
class ChannelGate(GateBase):
    """Per-sample on/off decisions for `groups` groups of channels.

    The same gate as `BlockGate` with one (off, on) logit pair per group:
    `Dense(hidden_units) -> BatchNormalization -> ReLU -> Dense(2 * groups)`
    on globally pooled features, hard 0/1 per group at inference, a
    straight-through Gumbel-softmax sample per group in training. Feed it to
    `GatedConcat` together with one convolution per channel group (see
    `keras_dynamic.models.channel_gated_conv2d`): a group that is off is then
    not computed on the device.

    Args:
        groups: int, number of channel groups G (one decision each).
        hidden_units, batch_norm, temperature, initial_bias, target_rate,
        rate_loss_weight, force, seed, kernel_initializer,
        kernel_regularizer: as in `BlockGate`; `target_rate` pulls each
            group's rate to the target.

    Call arguments:
        inputs: features `(batch, ..., channels)`, usually the input of the
            gated convolution.
        training: Python bool; truthy samples straight-through decisions.

    Input shape:
        `(batch, ..., channels)`; a rank-2 input is used without pooling.

    Output shape:
        `(batch, groups)` float32.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> gate = kd.layers.ChannelGate(groups=4)
    >>> g = gate(np.random.rand(3, 8, 8, 16).astype("float32"))
    >>> g = keras.ops.convert_to_numpy(g)
    >>> g.shape, sorted(set(g.ravel().tolist()) - {0.0, 1.0})
    ((3, 4), [])

    Reference:
        Hua et al., "Channel Gating Neural Networks", NeurIPS 2019.
        Chen et al., "You Look Twice: GaterNet for Dynamic Filter Selection
        in CNNs", CVPR 2019.
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018 (the gate's form and its training).
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(groups, **kwargs)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
