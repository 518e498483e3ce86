"""Building blocks of gated and routed networks, from the user's own layers.

Each helper is called on a symbolic tensor while building a functional model
and wires an ordinary graph: the decision layer, the branches, and the merge
layer that the exporter turns into conditional stages.
"""

import keras

from keras_dynamic.layers.block_gate import BlockGate
from keras_dynamic.layers.channel_gate import ChannelGate
from keras_dynamic.layers.gated_concat import GatedConcat
from keras_dynamic.layers.gated_residual import GatedResidual
from keras_dynamic.layers.routed_sum import RoutedSum
from keras_dynamic.layers.router import Router


def apply_block(x, block, what):
    """Applies a layer, a model, a callable or a list of layers to `x`."""
    if isinstance(block, (list, tuple)):
        if not block or not all(callable(layer) for layer in block):
            raise TypeError(
                f"`{what}` must be a layer, a model, a callable or a "
                f"non-empty list of layers. Received: {what}={block!r}"
            )
        for layer in block:
            x = layer(x)
        return x
    if not callable(block):
        raise TypeError(
            f"`{what}` must be a layer, a model, a callable or a non-empty "
            f"list of layers. Received: {what}={block!r}"
        )
    return block(x)


def _sub_name(name, suffix):
    return None if name is None else f"{name}_{suffix}"


def gated_residual(x, block, *, gate: BlockGate | None = None, name=None):
    """`x + g * block(x)` with a `BlockGate` g: a block the network may skip.

    Args:
        x: the block input, a symbolic tensor.
        block: the residual body `f`: a layer, a Keras model, a callable
            `x -> f(x)` or a list of layers applied in order. It must return
            the shape of `x` (use an ungated projection block where the
            shape changes).
        gate: the `BlockGate` deciding per sample, reading `x`; by default a
            new `BlockGate()`.
        name: optional name of the merge layer; the default gate is then
            named `f"{name}_gate"`.

    Returns:
        The output tensor of the `GatedResidual` merge.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 4))
    >>> body = [keras.layers.Conv2D(4, 3, padding="same"),
    ...         keras.layers.BatchNormalization()]
    >>> y = kd.models.gated_residual(inputs, body, name="block1")
    >>> model = keras.Model(inputs, y)
    >>> model.get_layer("block1").branch_conditions()
    [(1, ('gate', 0))]
    """
    if gate is None:
        gate = BlockGate(name=_sub_name(name, "gate"))
    elif not isinstance(gate, BlockGate):
        raise TypeError(f"`gate` must be a BlockGate or None. Received: gate={gate!r}")
    fx = apply_block(x, block, "block")
    return GatedResidual(name=name)([x, fx, gate(x)])


def channel_gated_conv2d(
    x,
    filters: int,
    kernel_size,
    *,
    groups: int,
    gate: ChannelGate | None = None,
    strides=1,
    padding="same",
    use_bias=True,
    batch_norm=False,
    activation=None,
    name=None,
):
    """A convolution whose output channels come in groups switched per sample.

    Builds `groups` convolutions of `filters // groups` channels each on
    `x` (each followed by optional batch normalization and activation), a
    `ChannelGate(groups)` reading `x`, and a `GatedConcat` that keeps the
    groups that are on and zeros the others. Separate convolutions per group
    are what lets the exported chain save time: a switched-off group is a
    stage that never runs, whereas masking the output channels of one
    convolution would still compute all of them.

    Args:
        x: the input, a symbolic `(batch, height, width, channels)` tensor.
        filters: total output channels; `groups` must divide it.
        kernel_size, strides, padding, use_bias: as in `keras.layers.Conv2D`.
        groups: number of channel groups G (gate decisions).
        gate: the `ChannelGate` with `groups` groups; by default a new one.
        batch_norm: whether each group's convolution is followed by
            `BatchNormalization` (inside the group, so a skipped group's BN
            is skipped too and the group reads as zeros).
        activation: optional activation after each group (and its BN).
        name: optional name prefix: groups `f"{name}_group{j}"`, gate
            `f"{name}_gate"`, merge `name`.

    Returns:
        The `(batch, new_height, new_width, filters)` output of the merge.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 3))
    >>> y = kd.models.channel_gated_conv2d(inputs, 16, 3, groups=4, name="cg")
    >>> tuple(y.shape)
    (None, 8, 8, 16)
    """
    if (
        isinstance(groups, bool)
        or not isinstance(groups, int)
        or groups < 1
        or isinstance(filters, bool)
        or not isinstance(filters, int)
        or filters % groups
    ):
        where = "" if name is None else f" '{name}'"
        raise ValueError(
            f"channel_gated_conv2d{where}: `groups` must be a positive int "
            f"that divides `filters`. Received: filters={filters!r}, "
            f"groups={groups!r}"
        )
    if gate is None:
        gate = ChannelGate(groups, name=_sub_name(name, "gate"))
    elif not isinstance(gate, ChannelGate) or gate.groups != groups:
        raise ValueError(
            f"`gate` must be a ChannelGate with groups={groups} or None. "
            f"Received: gate={gate!r}"
        )
    outputs = []
    for j in range(1, groups + 1):
        group_name = _sub_name(name, f"group{j}")
        layers = [
            keras.layers.Conv2D(
                filters // groups,
                kernel_size,
                strides=strides,
                padding=padding,
                use_bias=use_bias,
                name=group_name,
            )
        ]
        if batch_norm:
            layers.append(
                keras.layers.BatchNormalization(name=_sub_name(group_name, "bn"))
            )
        if activation is not None:
            layers.append(
                keras.layers.Activation(activation, name=_sub_name(group_name, "act"))
            )
        outputs.append(apply_block(x, layers, "group"))
    return GatedConcat(name=name)([gate(x), *outputs])


def mixture_of_experts(x, experts, *, router: Router | None = None, name=None):
    """A top-1 mixture of experts: `sum_k r_k * expert_k(x)` with a `Router`.

    Args:
        x: the experts' input, a symbolic tensor.
        experts: a list of N >= 2 distinct experts, each a layer, a Keras
            model, a callable or a list of layers; all must map `x` to the
            same output shape.
        router: the `Router(N)` choosing per sample, reading `x`; by default
            `Router(N, load_balance_weight=0.01)` (the Switch Transformer's
            weight).
        name: optional name of the merge layer; the default router is then
            named `f"{name}_router"`.

    Returns:
        The output tensor of the `RoutedSum` merge.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 4))
    >>> experts = [keras.layers.Conv2D(4, 3, padding="same") for _ in range(3)]
    >>> y = kd.models.mixture_of_experts(inputs, experts, name="moe")
    >>> keras.Model(inputs, y).get_layer("moe").branch_conditions()
    [(1, ('route', 0)), (2, ('route', 1)), (3, ('route', 2))]
    """
    experts = list(experts) if isinstance(experts, (list, tuple)) else None
    if not experts or len(experts) < 2:
        raise ValueError(
            "mixture_of_experts: `experts` must be a list of at least 2 "
            f"experts. Received: experts={experts!r}"
        )
    if len({id(e) for e in experts}) != len(experts):
        raise ValueError(
            "mixture_of_experts: the experts must be distinct objects; the "
            "same expert twice would share its weights and its stage."
        )
    if router is None:
        router = Router(
            len(experts), load_balance_weight=0.01, name=_sub_name(name, "router")
        )
    elif not isinstance(router, Router) or router.num_experts != len(experts):
        raise ValueError(
            f"`router` must be a Router with num_experts={len(experts)} or "
            f"None. Received: router={router!r}"
        )
    outputs = [apply_block(x, expert, "expert") for expert in experts]
    return RoutedSum(name=name)([router(x), *outputs])
