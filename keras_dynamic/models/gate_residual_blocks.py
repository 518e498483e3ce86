"""Gates the residual blocks of an existing functional model."""

import keras

from keras_dynamic.layers.block_gate import BlockGate
from keras_dynamic.layers.gated_residual import GatedResidual
from keras_dynamic.models._graph import ancestors
from keras_dynamic.models._graph import check_functional
from keras_dynamic.models._graph import functional_nodes


def _single_node(model, name, nodes):
    try:
        layer = model.get_layer(name)
    except ValueError as error:
        raise ValueError(
            f"gate_residual_blocks: model '{model.name}' has no layer '{name}'."
        ) from error
    calls = [node for node in nodes if node.operation is layer]
    if len(calls) != 1:
        raise ValueError(
            f"gate_residual_blocks: layer '{name}' is called {len(calls)} "
            f"times in model '{model.name}'; a gated block's layers must be "
            "called exactly once."
        )
    return layer, calls[0]


def _consumers(model, nodes):
    """`{id(tensor): [consuming node or "output", ...]}` within the model."""
    consumers = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    for tensor in model.outputs:
        consumers.setdefault(id(tensor), []).append("output")
    return consumers


def _plan_block(model, nodes, consumers, first, last):
    """(the Add node of the block, position of the body output in it)."""
    label = f"block '{first}'..'{last}'"
    _, first_node = _single_node(model, first, nodes)
    last_layer, last_node = _single_node(model, last, nodes)
    if len(first_node.input_tensors) != 1:
        raise ValueError(
            f"gate_residual_blocks: {label}: its first layer '{first}' must "
            "take one tensor, the block input."
        )
    (x,) = first_node.input_tensors
    if isinstance(last_layer, keras.layers.Add):
        add_node = last_node
        fx = next((t for t in add_node.input_tensors if t is not x), None)
    else:
        fx = last_node.outputs[0] if len(last_node.outputs) == 1 else None
        users = consumers.get(id(fx), []) if fx is not None else []
        add_node = users[0] if len(users) == 1 else None
    if (
        fx is None
        or not hasattr(add_node, "operation")
        or not isinstance(add_node.operation, keras.layers.Add)
        or len(add_node.input_tensors) != 2
        or not any(t is x for t in add_node.input_tensors)
    ):
        raise ValueError(
            f"gate_residual_blocks: {label} is not an identity residual "
            f"block: the output of '{last}' must reach an Add layer with two "
            f"inputs, the other being the input of '{first}'. Projection "
            "blocks (whose shortcut is not the block input) cannot be skipped."
        )
    region = {
        key: node for key, node in ancestors([fx]).items() if key not in ancestors([x])
    }
    if id(first_node) not in region:
        raise ValueError(
            f"gate_residual_blocks: {label}: '{first}' is not between the "
            f"block input and '{last}'."
        )
    for node in region.values():
        for tensor in node.outputs:
            for user in consumers.get(id(tensor), []):
                if user is not add_node and (
                    user == "output" or id(user) not in region
                ):
                    where = (
                        "a model output"
                        if user == "output"
                        else f"layer '{user.operation.name}'"
                    )
                    raise ValueError(
                        f"gate_residual_blocks: {label}: layer "
                        f"'{node.operation.name}' inside the block also "
                        f"feeds {where} outside it, which would break when "
                        "the block is skipped."
                    )
    position = next(i for i, t in enumerate(add_node.input_tensors) if t is fx)
    return add_node, position


def gate_residual_blocks(model, blocks, *, gate_options=None) -> keras.Model:
    """Returns `model` with the given identity residual blocks gated.

    Each block is named by its first and last layer: `first` takes the block
    input `x`, and `last` is either the last layer of the residual body
    `f(x)` or the `Add` that computes `x + f(x)`. The `Add` is replaced by
    `GatedResidual` with a new `BlockGate` reading `x` (named
    `f"{add}_gate"` and `f"{add}_gated"`); everything else is replayed
    unchanged with `keras.models.clone_model`, calling the **same** layer
    objects (the weights are shared with `model`; clone the model first for
    an independent copy). With every gate forced on, the new model computes
    exactly what `model` computes.

    Args:
        model: a functional `keras.Model`.
        blocks: a list of `(first_layer_name, last_layer_name)` pairs.
        gate_options: optional dict of `BlockGate` arguments for every gate
            (e.g. `{"target_rate": 0.5}`).

    Returns:
        A new functional `keras.Model`.

    Raises:
        ValueError: a name is unknown, a layer is called more than once, a
            block is not an identity residual block (its output does not
            reach an `Add` with its input; projection blocks cannot be
            skipped), or a layer inside a block also feeds something outside
            it.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 4))
    >>> h = keras.layers.Conv2D(4, 3, padding="same", name="b1_conv")(inputs)
    >>> h = keras.layers.BatchNormalization(name="b1_bn")(h)
    >>> y = keras.layers.Add(name="b1_add")([inputs, h])
    >>> gated = kd.models.gate_residual_blocks(
    ...     keras.Model(inputs, y), [("b1_conv", "b1_bn")])
    >>> gated.get_layer("b1_add_gated").branch_conditions()
    [(1, ('gate', 0))]
    """
    check_functional(model, "gate_residual_blocks")
    if not isinstance(blocks, (list, tuple)) or not all(
        isinstance(b, (list, tuple))
        and len(b) == 2
        and all(isinstance(n, str) for n in b)
        for b in blocks
    ):
        raise ValueError(
            "gate_residual_blocks: `blocks` must be a list of "
            f"(first_layer_name, last_layer_name) pairs. Received: {blocks!r}"
        )
    gate_options = dict(gate_options or {})
    nodes = functional_nodes(model)
    consumers = _consumers(model, nodes)
    plan = {}
    for first, last in blocks:
        add_node, position = _plan_block(model, nodes, consumers, first, last)
        if id(add_node.operation) in plan:
            raise ValueError(
                f"gate_residual_blocks: block '{first}'..'{last}' is listed twice."
            )
        plan[id(add_node.operation)] = position

    def call_function(layer, *args, **kwargs):
        if id(layer) not in plan:
            return layer(*args, **kwargs)
        position = plan[id(layer)]
        inputs = list(args[0])
        fx, x = inputs[position], inputs[1 - position]
        gate = BlockGate(name=f"{layer.name}_gate", **gate_options)
        return GatedResidual(name=f"{layer.name}_gated")([x, fx, gate(x)])

    return keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_function
    )
