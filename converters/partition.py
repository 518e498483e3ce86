"""Cuts a functional Keras model into stages at its exits.

Each node of the Keras graph is assigned to the earliest exit that needs it:
stage k holds everything exit k depends on that no earlier exit already
computed. A tensor crosses a cut when a node of a later stage consumes it;
it becomes an output of the stage that produces it and an input of every
stage that consumes it, so skip and dense connections across exits work
without passing tensors through the stages in between.
"""

import dataclasses
import re

import keras

from keras_dynamic.layers.early_exit import EarlyExit


class PartitionError(ValueError):
    """The model cannot be cut into stages; the message names the cause."""


@dataclasses.dataclass
class StagePlan:
    """One stage: a Keras sub-model plus the names its tensors carry."""

    name: str
    exit_name: str
    model: "keras.Model"
    input_names: list
    output_names: list
    layer_names: list


def _producer_node(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def _ancestors(tensor):
    """Every non-input node that `tensor` depends on, including its producer."""
    seen = {}
    stack = [_producer_node(tensor)]
    while stack:
        node = stack.pop()
        if node.is_input or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(_producer_node(t) for t in node.input_tensors)
    return seen


def _check_functional(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"export_stages expects a keras.Model. Received: "
            f"{type(model).__name__}"
        )
    # Only functional models expose their layer graph; a subclassed model's
    # call() is Python code that cannot be cut at its exits.
    if not hasattr(model, "_nodes_by_depth") or isinstance(
        model, keras.Sequential
    ):
        raise PartitionError(
            f"Model '{model.name}' ({type(model).__name__}) is not a "
            "functional model: its graph cannot be cut into stages. Build it "
            "with keras.Model(inputs, outputs) and EarlyExit layers."
        )


def _ordered_exits(model):
    """Model outputs sorted shallow to deep, validated as exits."""
    outputs = list(model.outputs)
    if not any(isinstance(t._keras_history[0], EarlyExit) for t in outputs):
        raise PartitionError(
            f"Model '{model.name}' has no EarlyExit output, so there is "
            "nothing to split at. Add keras_dynamic.layers.EarlyExit heads "
            "and list them among the model outputs."
        )
    ancestry = [_ancestors(t) for t in outputs]
    order = sorted(range(len(outputs)), key=lambda i: len(ancestry[i]))
    for position, index in enumerate(order[:-1]):
        layer = outputs[index]._keras_history[0]
        if not isinstance(layer, EarlyExit):
            raise PartitionError(
                f"Output '{layer.name}' of model '{model.name}' is not an "
                "EarlyExit layer but is not the deepest output either. Every "
                "output except the final classifier must be an EarlyExit."
            )
    return [outputs[i] for i in order], [ancestry[i] for i in order]


def _tensor_namer(model):
    """Gives every tensor a unique, signature-safe name.

    Names follow the producing layer so that a manifest reads like the
    model: `exit_1`, `conv2d_3`, and `add_1_call2` or `split_out1` only when a
    layer is called several times in this model or has several outputs.
    Building stage sub-models adds nodes to the shared layers, so only the
    nodes of `model` itself are counted: names are stable across exports.
    """
    model_nodes = {
        id(node) for nodes in model._nodes_by_depth.values() for node in nodes
    }
    names = {}
    used = set()

    def name_of(tensor):
        key = id(tensor)
        if key in names:
            return names[key]
        operation, node_index, tensor_index = tensor._keras_history
        calls = [n for n in operation._inbound_nodes if id(n) in model_nodes]
        node = operation._inbound_nodes[node_index]
        base = operation.name
        if len(calls) > 1:
            base = f"{base}_call{calls.index(node) + 1}"
        if len(node.output_tensors) > 1:
            base = f"{base}_out{tensor_index}"
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        if not base[0].isalpha():
            base = f"t_{base}"
        candidate, suffix = base, 1
        while candidate in used:
            suffix += 1
            candidate = f"{base}_{suffix}"
        used.add(candidate)
        names[key] = candidate
        return candidate

    for tensor in model.inputs:
        name_of(tensor)
    return name_of


def partition(model):
    """Cuts `model` into one `StagePlan` per exit, shallow to deep.

    Example:

    >>> import keras, keras_dynamic as kd
    >>> from keras_dynamic.converters.partition import partition
    >>> inputs = keras.Input((8, 8, 1), name="image")
    >>> x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    >>> e1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    >>> y = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    >>> y = kd.layers.EarlyExit(3, name="final")(keras.layers.Add()([x, y]))
    >>> stages = partition(keras.Model(inputs, [e1, y]))
    >>> [(s.name, s.input_names, s.output_names) for s in stages]
    [('stage_1', ['image'], ['exit_1', 'conv_a']), ('stage_2', ['conv_a'], ['final'])]
    """
    _check_functional(model)
    exits, ancestry = _ordered_exits(model)
    name_of = _tensor_namer(model)

    stage_of_node = {}
    nodes_of_stage = []
    for index, ancestors in enumerate(ancestry):
        own = [n for key, n in ancestors.items() if key not in stage_of_node]
        for node in own:
            stage_of_node[id(node)] = index
        nodes_of_stage.append(own)

    # For every crossing tensor remember which stages consume it.
    consumers = {}
    for index, nodes in enumerate(nodes_of_stage):
        for node in nodes:
            for tensor in node.input_tensors:
                producer = _producer_node(tensor)
                if stage_of_node.get(id(producer)) != index:
                    consumers.setdefault(id(tensor), (tensor, set()))[1].add(index)

    plans = []
    for index, (exit_tensor, nodes) in enumerate(zip(exits, nodes_of_stage)):
        inputs = _unique(
            tensor for tensor, stages in consumers.values() if index in stages
        )
        carried = _unique(
            tensor
            for tensor, stages in consumers.values()
            if stage_of_node.get(id(_producer_node(tensor))) == index
            and max(stages) > index
        )
        outputs = [exit_tensor] + [t for t in carried if t is not exit_tensor]
        exit_layer = exit_tensor._keras_history[0]
        stage_name = f"stage_{index + 1}"
        try:
            sub_model = keras.Model(
                inputs, outputs, name=f"{model.name}_{stage_name}"
            )
        except ValueError as error:
            raise PartitionError(
                f"Could not cut stage '{stage_name}' (exit "
                f"'{exit_layer.name}') out of model '{model.name}': {error}"
            ) from error
        plans.append(
            StagePlan(
                name=stage_name,
                exit_name=exit_layer.name,
                model=sub_model,
                input_names=[name_of(t) for t in inputs],
                output_names=[name_of(t) for t in outputs],
                layer_names=sorted({n.operation.name for n in nodes}),
            )
        )
    return plans


def _unique(tensors):
    seen, result = set(), []
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            result.append(tensor)
    return sorted(result, key=lambda t: _depth_key(t))


def _depth_key(tensor):
    # Deterministic order: by how much of the graph a tensor depends on.
    return len(_ancestors(tensor)) if not _producer_node(tensor).is_input else -1
