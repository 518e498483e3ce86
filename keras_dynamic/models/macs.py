"""Analytic multiply-accumulate counts of functional Keras models, per branch.

Counted from the layers' weight shapes and the graph's static shapes, with
no TensorFlow, so a compute budget can be weighted on any backend:

* `Conv1D/2D/3D`, `DepthwiseConv1D/2D`, `Dense`: output positions times the
  kernel size (for a depthwise kernel `(kh, kw, C, m)` that is exactly
  `kh*kw*C*m` per position, so one formula covers all of them);
* `CondConv2D`, `DepthwiseCondConv2D`, `DynamicConv2D`: as their inference
  form runs: `"mix_outputs"` K convolutions plus the mix of the K outputs,
  `"mix_kernels"` one convolution plus the kernel mix; plus the routing;
* gates, routers and exit heads: their matrices once per sample, plus an
  exit head's convolution per output position;
* layers whose weights are all vectors (BatchNormalization, which the
  converter folds, LayerNormalization, ...) and layers without weights
  (activations, pooling, additions): 0;
* nested functional and Sequential models: their own layers.

Any other layer with a matrix or larger weight is refused by name rather
than guessed. The figures are MACs of convolutions and matrix products only;
the converters' profiler count of a TFLite stage also includes bias adds,
activations and pooling, so it is a few percent higher.
"""

import dataclasses
import math

import keras

from keras_dynamic.layers._conditional import ROUTE
from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers._gate import GateBase
from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.router import Router
from keras_dynamic.models._graph import check_functional
from keras_dynamic.models._graph import conditional_branches
from keras_dynamic.models._graph import functional_nodes

_KERNEL_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)
_VECTOR_LAYERS = (GateBase, Router, EarlyExit)


def _positions(tensor, layer):
    dims = tensor.shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': its output "
            f"shape {tuple(tensor.shape)} is not fully known. Give the model "
            "a fixed input size."
        )
    return math.prod(dims)


def _matrix_size(layer):
    """Sum of the sizes of the layer's rank-2 weights (vector-matrix MACs)."""
    return sum(math.prod(w.shape) for w in layer.weights if len(w.shape) == 2)


def _node_macs(node):
    layer = node.operation
    if isinstance(layer, keras.Sequential):
        if layer._functional is None:
            raise ValueError(
                f"Cannot count the MACs of Sequential model '{layer.name}': "
                "it has no known input shape. Start it with keras.Input."
            )
        layer = layer._functional
    if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
        return sum(_node_macs(n) for n in functional_nodes(layer))
    if isinstance(layer, _KERNEL_LAYERS):
        return _positions(node.outputs[0], layer) * math.prod(layer.kernel.shape)
    if isinstance(layer, DynamicConvBase):
        output = node.outputs[0]
        positions = _positions(output, layer)
        experts, *expert_shape = layer.kernel.shape
        conv = positions * math.prod(expert_shape)
        if layer.inference_form in ("mix_kernels", "patch_matmul"):
            mixing = experts * math.prod(expert_shape)
        else:
            conv *= experts
            mixing = experts * positions * output.shape[-1]
        return conv + mixing + _matrix_size(layer)
    if isinstance(layer, EarlyExit) and layer.conv is not None:
        conv = layer.conv
        conv_shape = conv.compute_output_shape(node.input_tensors[0].shape)
        head = math.prod(conv_shape[1:-1]) * math.prod(conv.kernel.shape)
        return head + sum(math.prod(w.shape) for w in layer.weights if len(w.shape) == 2)
    if isinstance(layer, _VECTOR_LAYERS) and all(
        len(w.shape) <= 2 for w in layer.weights
    ):
        return _matrix_size(layer)
    if any(len(w.shape) > 1 for w in layer.weights):
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}' "
            f"({type(layer).__name__}): keras_dynamic counts Conv, "
            "DepthwiseConv, Dense, the dynamic convolutions, gates, routers "
            "and exits. Give the MACs explicitly instead (e.g. "
            "ComputeBudget(..., branch_macs=..., fixed_macs=...))."
        )
    return 0


def analytic_macs(model) -> int:
    """MACs of one sample through a functional model, every branch on.

    Args:
        model: a functional `keras.Model` with a fixed input size.

    Returns:
        The count, an int (see the module docstring for what is counted).

    Example:

    >>> import keras
    >>> from keras_dynamic.models import analytic_macs
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> x = keras.layers.BatchNormalization()(x)
    >>> y = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    >>> analytic_macs(keras.Model(inputs, y)) == 8 * 8 * 3 * 3 * 3 * 4 + 4 * 10
    True
    """
    check_functional(model, "analytic_macs")
    return sum(_node_macs(node) for node in functional_nodes(model))


@dataclasses.dataclass(frozen=True)
class BranchMacs:
    """The MACs of one conditional input of a merge layer."""

    merge: str
    input_index: int
    condition: tuple
    macs: int


@dataclasses.dataclass(frozen=True)
class ConditionalMacs:
    """Where a gated or routed model spends its MACs.

    Attributes:
        fixed: MACs that run for every sample (stem, decisions, shortcuts,
            heads: everything outside the conditional branches).
        full: the most one sample can cost: `fixed`, every gated branch,
            and the most expensive expert of each router.
        branches: one `BranchMacs` per conditional branch, in graph order.
    """

    fixed: int
    full: int
    branches: tuple


def conditional_macs(model) -> ConditionalMacs:
    """Splits the analytic MAC count of a model into fixed and conditional.

    Args:
        model: a functional `keras.Model` with `GatedResidual`,
            `GatedConcat` or `RoutedSum` merges.

    Returns:
        A `ConditionalMacs`.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 4))
    >>> body = keras.layers.Conv2D(4, 3, padding="same", name="body")(inputs)
    >>> gate = kd.layers.BlockGate(hidden_units=8)(inputs)
    >>> y = kd.layers.GatedResidual(name="merge")([inputs, body, gate])
    >>> macs = kd.models.conditional_macs(keras.Model(inputs, y))
    >>> macs.fixed, macs.branches[0].macs, macs.full
    (48, 9216, 9264)
    """
    check_functional(model, "conditional_macs")
    branches = conditional_branches(model)
    total = analytic_macs(model)
    records = tuple(
        BranchMacs(
            b.merge.name,
            b.input_index,
            b.condition,
            sum(_node_macs(n) for n in b.region.values()),
        )
        for b in branches
    )
    fixed = total - sum(r.macs for r in records)
    full = fixed
    routed = {}
    for branch, record in zip(branches, records):
        if branch.kind == ROUTE:
            routed.setdefault(id(branch.merge_node), []).append(record.macs)
        else:
            full += record.macs
    full += sum(max(experts) for experts in routed.values())
    return ConditionalMacs(fixed, full, records)
