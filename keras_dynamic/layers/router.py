import keras

from keras_dynamic.layers._gate import feature_channels
from keras_dynamic.layers._gate import global_pool
from keras_dynamic.losses.routing import load_balancing_loss


@keras.saving.register_keras_serializable(package="keras_dynamic")
class Router(keras.layers.Layer):
    """Chooses one of N experts per sample (Switch Transformer top-1).

    `p = softmax(Dense(N)(GAP(x)))`; the output is the dispatch tensor
    `p * one_hot(argmax(p))`: per row one non-zero entry, the probability of
    the chosen expert. Feed it to `RoutedSum` with the experts' outputs: the
    chosen expert's output is scaled by its probability, which is how the
    router gets a gradient. The decision is the same in training and at
    inference; the exported chain reads `argmax` of this tensor and runs only
    that expert.

    The kernel starts small by default (`VarianceScaling(0.1)`, the Switch
    Transformer's reduced initialization scale): near-uniform probabilities
    at first, so no expert takes every sample before the others have
    learned anything.

    Args:
        num_experts: int >= 2, number of experts N.
        load_balance_weight: non-negative float; when positive, training adds
            `load_balance_weight * load_balancing_loss(p, argmax(p))` to the
            model's losses (Switch Transformer: 0.01).
        kernel_initializer: of the dense projection; None for the small
            initialization described above.
        kernel_regularizer: of the dense projection.

    Call arguments:
        inputs: features `(batch, ..., channels)`, usually the experts' input.
        training: Python bool; truthy adds the load-balancing loss.

    Input shape:
        `(batch, ..., channels)`; a rank-2 input is used without pooling.

    Output shape:
        `(batch, num_experts)` float32.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> router = kd.layers.Router(4)
    >>> x = np.random.rand(3, 8, 8, 16).astype("float32")
    >>> r = keras.ops.convert_to_numpy(router(x))
    >>> r.shape, (r > 0).sum(axis=1).tolist()
    ((3, 4), [1, 1, 1])

    Reference:
        Fedus, Zoph and Shazeer, "Switch Transformers: Scaling to Trillion
        Parameter Models with Simple and Efficient Sparsity", JMLR 2022.
        Shazeer et al., "Outrageously Large Neural Networks: The
        Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017.
    """

    def __init__(
        self,
        num_experts: int,
        load_balance_weight: float = 0.0,
        kernel_initializer=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if (
            isinstance(num_experts, bool)
            or not isinstance(num_experts, int)
            or num_experts < 2
        ):
            raise ValueError(
                f"Router '{self.name}': `num_experts` must be an int >= 2. "
                f"Received: num_experts={num_experts!r}"
            )
        if (
            isinstance(load_balance_weight, bool)
            or not isinstance(load_balance_weight, (int, float))
            or not load_balance_weight >= 0
        ):
            raise ValueError(
                f"Router '{self.name}': `load_balance_weight` must be a "
                "non-negative number. Received: "
                f"load_balance_weight={load_balance_weight!r}"
            )
        if kernel_initializer is None:
            kernel_initializer = keras.initializers.VarianceScaling(
                0.1, mode="fan_in", distribution="truncated_normal"
            )
        self.num_experts = num_experts
        self.load_balance_weight = float(load_balance_weight)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.projection = keras.layers.Dense(
            num_experts,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        self.projection.build((None, feature_channels(self, input_shape)))

    def router_probabilities(self, inputs):
        """The full softmax `(batch, num_experts)`, float32."""
        logits = keras.ops.cast(self.projection(global_pool(inputs)), "float32")
        return keras.ops.softmax(logits, axis=-1)

    def call(self, inputs, training=None):
        probs = self.router_probabilities(inputs)
        # The top-1 mask without keras.ops.argmax or one_hot: on the
        # TensorFlow backend both lower to ops (BitwiseAnd) that TFLite has
        # no builtin kernel for. Ties go to the first expert, as in argmax.
        is_top = keras.ops.cast(
            keras.ops.greater_equal(
                probs, keras.ops.max(probs, axis=-1, keepdims=True)
            ),
            "float32",
        )
        first = keras.ops.cast(
            keras.ops.equal(keras.ops.cumsum(is_top, axis=-1), 1.0), "float32"
        )
        chosen = is_top * first
        if training and self.load_balance_weight > 0:
            index = keras.ops.argmax(chosen, axis=-1)
            self.add_loss(self.load_balance_weight * load_balancing_loss(probs, index))
        return probs * chosen

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "load_balance_weight": self.load_balance_weight,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }
