import keras

from keras_dynamic.layers._conditional import ROUTE
from keras_dynamic.layers._conditional import ConditionalMerge
from keras_dynamic.layers._conditional import same_shapes


@keras.saving.register_keras_serializable(package="keras_dynamic")
class RoutedSum(ConditionalMerge):
    """Sums expert outputs weighted by a router's top-1 dispatch tensor.

    `RoutedSum()([r, e_1, ..., e_N])` returns `sum_k r[:, k] * e_k`. With the
    dispatch tensor of `Router` (one non-zero entry per row, the router
    probability of the chosen expert) that is the chosen expert's output
    scaled by its probability, as in the Switch Transformer: the scale is
    what trains the router. Keras computes every expert; the exported chain
    runs only the chosen one per sample.

    For the exporter: input 0 is the decision and input `k + 1` runs under
    condition `("route", k)` (`argmax(r, -1) == k`).

    Call arguments:
        inputs: a list `[r, e_1, ..., e_N]`, N >= 2: the dispatch tensor
            `(batch, N)` and the N expert outputs, all of the same shape.

    Input shape:
        `r`: `(batch, N)`; `e_k`: the same `(batch, ...)` shape for every k.

    Output shape:
        The shape of `e_1`.

    Example:

    >>> import numpy as np, keras, keras_dynamic as kd
    >>> r = np.array([[0.75, 0.0], [0.0, 0.5]], "float32")
    >>> e1 = np.ones((2, 2), "float32")
    >>> e2 = np.full((2, 2), 10.0, "float32")
    >>> y = kd.layers.RoutedSum()([r, e1, e2])
    >>> keras.ops.convert_to_numpy(y).tolist()
    [[0.75, 0.75], [5.0, 5.0]]

    Reference:
        Fedus, Zoph and Shazeer, "Switch Transformers: Scaling to Trillion
        Parameter Models with Simple and Efficient Sparsity", JMLR 2022.
    """

    condition_kind = ROUTE
    min_branches = 2

    def _check_shapes(self, decision, branches, unconditional):
        if not same_shapes(branches):
            raise ValueError(
                f"{self._describe()}: the experts' outputs differ in shape; "
                "every expert must map the same input to the same output "
                f"shape. Received: expert output shapes={branches}"
            )

    def call(self, inputs):
        r, *experts = inputs
        out = self._column(r, 0, experts[0]) * experts[0]
        for k, expert in enumerate(experts[1:], start=1):
            out = out + self._column(r, k, expert) * expert
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])
