import keras

from keras_dynamic.layers._conditional import ConditionalMerge


@keras.saving.register_keras_serializable(package="keras_dynamic")
class GatedConcat(ConditionalMerge):
    """Concatenates channel groups, each switched on or off per sample.

    `GatedConcat()([g, c_1, ..., c_G])` returns
    `concat_j(g[:, j] * c_j)` along the last axis: channel group `j` keeps its
    values where its gate is 1 and reads as zeros where it is 0. With one
    convolution per group (see `keras_dynamic.models.channel_gated_conv2d`)
    the exported chain runs only the groups that are on; the others are never
    computed and are concatenated back as zeros.

    For the exporter: input 0 is the decision and input `j + 1` runs under
    condition `("gate", j)`.

    Call arguments:
        inputs: a list `[g, c_1, ..., c_G]`: the gates `(batch, G)`, e.g. from
            `ChannelGate(groups=G)`, and the G channel groups.

    Input shape:
        `g`: `(batch, G)`; `c_j`: `(batch, ..., channels_j)`, equal except for
        the channel counts.

    Output shape:
        `(batch, ..., sum_j channels_j)`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> g = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    >>> c1 = np.full((2, 1), 3.0, "float32")
    >>> c2 = np.full((2, 2), 7.0, "float32")
    >>> y = kd.layers.GatedConcat()([g, c1, c2])
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[3.0, 0.0, 0.0], [0.0, 7.0, 7.0]]

    Reference:
        Hua et al., "Channel Gating Neural Networks", NeurIPS 2019.
        Chen et al., "You Look Twice: GaterNet for Dynamic Filter Selection
        in CNNs", CVPR 2019.
    """

    def _check_shapes(self, decision, branches, unconditional):
        if any(tuple(s[1:-1]) != tuple(branches[0][1:-1]) for s in branches):
            raise ValueError(
                f"{self._describe()}: every channel group must have the same "
                "shape except for the last (channel) axis. Received: "
                f"group shapes={branches}"
            )

    def call(self, inputs):
        g, *groups = inputs
        return keras.ops.concatenate(
            [self._column(g, j, c) * c for j, c in enumerate(groups)], axis=-1
        )

    def compute_output_shape(self, input_shape):
        groups = [tuple(s) for s in input_shape[1:]]
        widths = [s[-1] for s in groups]
        width = None if None in widths else sum(widths)
        return (*groups[0][:-1], width)
