"""Base of the merge layers that combine conditional branches under a decision.

A gate or a router never hides computation inside one layer. The network is an
ordinary functional graph: a decision layer (`BlockGate`, `ChannelGate`,
`Router`) computes a decision tensor, the branches are ordinary layers, and a
merge layer (`GatedResidual`, `GatedConcat`, `RoutedSum`) multiplies each
branch by its decision. In Keras every branch is computed for every sample;
the exported chain runs a branch only for the samples that need it and feeds
zeros for the others, which gives the same numbers because `0 * zeros = 0`.

The exporter learns from the merge which input is the decision, which inputs
are unconditional, and under which condition each branch runs:

    merge.decision_index -> int
    merge.branch_conditions() -> [(input_index, condition), ...]
    condition = ("gate", j)    # runs iff decision[:, j] > 0.5
              | ("route", k)   # runs iff argmax(decision, -1) == k
"""

import keras

GATE = "gate"
ROUTE = "route"


class ConditionalMerge(keras.layers.Layer):
    """Merges conditional branches with the decision that switches them.

    Not used directly. Subclasses set `decision_index`,
    `unconditional_indices` (inputs that always run, e.g. the shortcut of a
    residual block), `condition_kind` (`"gate"` or `"route"`) and
    `min_branches`, and implement `_check_shapes(decision, branches,
    unconditional)` and `call`. Every other input is a branch; the j-th branch
    (in input order) runs under condition `(condition_kind, j)` and the
    decision tensor must have shape `(batch, number of branches)`.
    """

    decision_index = 0
    unconditional_indices = ()
    condition_kind = GATE
    min_branches = 1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._num_inputs = None

    def _describe(self):
        return f"{type(self).__name__} '{self.name}'"

    def _branch_indices(self, num_inputs):
        return [
            i
            for i in range(num_inputs)
            if i != self.decision_index and i not in self.unconditional_indices
        ]

    def _split(self, inputs):
        """(decision, branches, unconditional) of an input list."""
        branches = self._branch_indices(len(inputs))
        return (
            inputs[self.decision_index],
            [inputs[i] for i in branches],
            [inputs[i] for i in self.unconditional_indices],
        )

    def branch_conditions(self) -> list:
        """`[(input_index, (kind, j)), ...]` for every conditional input.

        Raises:
            ValueError: the layer has not been called yet, so the number of
                branches is unknown.
        """
        if self._num_inputs is None:
            raise ValueError(
                f"{self._describe()} has not been called on its inputs yet, "
                "so its branches are unknown."
            )
        return [
            (index, (self.condition_kind, j))
            for j, index in enumerate(self._branch_indices(self._num_inputs))
        ]

    def build(self, input_shape):
        shapes = (
            [tuple(s) for s in input_shape]
            if isinstance(input_shape, (list, tuple))
            and input_shape
            and all(isinstance(s, (list, tuple)) for s in input_shape)
            else None
        )
        fixed = len(self.unconditional_indices) + 1
        if shapes is None or len(shapes) < fixed + self.min_branches:
            raise ValueError(
                f"{self._describe()} expects a list of at least "
                f"{fixed + self.min_branches} tensors (see its docstring). "
                f"Received: input_shape={input_shape}"
            )
        decision, branches, unconditional = self._split(shapes)
        if len(decision) != 2 or decision[-1] != len(branches):
            raise ValueError(
                f"{self._describe()}: input {self.decision_index} is the "
                f"decision tensor and must have shape (batch, {len(branches)})"
                f", one column per branch. Received: decision shape="
                f"{decision}"
            )
        self._check_shapes(decision, branches, unconditional)
        self._num_inputs = len(shapes)

    def _check_shapes(self, decision, branches, unconditional):
        raise NotImplementedError

    @staticmethod
    def _column(decision, j, like):
        """Column j of the decision, shaped to broadcast against `like`.

        `decision[:, j:j+1]` rather than `decision[:, j]`: the latter becomes
        a STRIDED_SLICE with shrink_axis_mask in TFLite, which GPU delegates
        refuse.
        """
        column = keras.ops.cast(decision[:, j : j + 1], like.dtype)
        rank = len(like.shape)
        return keras.ops.reshape(column, (-1,) + (1,) * (rank - 1))


def same_shapes(shapes):
    """Whether all shapes agree except the batch dimension."""
    return all(tuple(s[1:]) == tuple(shapes[0][1:]) for s in shapes)
