"""Cuts a functional Keras model into stages at its exits.

Each node of the Keras graph is assigned to the earliest exit that needs it:
stage k holds everything exit k depends on that no earlier exit already
computed. A tensor crosses a cut when a node of a later stage consumes it;
it becomes an output of the stage that produces it and an input of every
stage that consumes it, so skip and dense connections across exits work
without passing tensors through the stages in between.

Each stage sub-model is rebuilt by calling the stage's layers again on new
`keras.Input`s: a layer called on both sides of a cut then serves both
stages with the same weights (Keras's own cut at intermediate tensors maps
such a layer to an input layer and fails).
"""

import dataclasses
import keyword
import re

import keras

from keras_dynamic.layers.early_exit import EarlyExit

# What an exit's tensor holds: raw scores, or a softmax over the classes.
LOGITS = "logits"
PROBABILITIES = "probabilities"


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
    exit_values: str = LOGITS


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


def exit_names(model) -> list:
    """The names of `model`'s outputs, in the order of `model.outputs`.

    The keys of a dict of outputs (`keras.Model(inputs, {name: exit})`),
    else the names of the layers that produce them.
    """
    structure = model._outputs_struct
    if isinstance(structure, dict) and all(isinstance(k, str) for k in structure):
        return [path[0] for path, _ in keras.tree.flatten_with_path(structure)]
    return [t._keras_history[0].name for t in model.outputs]


def _ordered_exits(model):
    """Model outputs sorted shallow to deep with their names, validated as exits."""
    outputs = list(model.outputs)
    names = exit_names(model)
    if not any(isinstance(t._keras_history[0], EarlyExit) for t in outputs):
        raise PartitionError(
            f"Model '{model.name}' has no EarlyExit output, so there is "
            "nothing to split at. Add keras_dynamic.layers.EarlyExit heads "
            "and list them among the model outputs."
        )
    ancestry = [_ancestors(t) for t in outputs]
    order = sorted(range(len(outputs)), key=lambda i: len(ancestry[i]))
    for index in order[:-1]:
        layer = outputs[index]._keras_history[0]
        if not isinstance(layer, EarlyExit):
            raise PartitionError(
                f"Output '{layer.name}' of model '{model.name}' is not an "
                "EarlyExit layer but is not the deepest output either. Every "
                "output except the final classifier must be an EarlyExit."
            )
    return (
        [outputs[i] for i in order],
        [names[i] for i in order],
        [ancestry[i] for i in order],
    )


def _covers_last_axis(axis, rank):
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return [a % rank for a in axes] == [rank - 1]


def exit_values(tensor) -> str:
    """`PROBABILITIES` if `tensor` is a softmax over its last axis, else `LOGITS`.

    Detected when the operation producing `tensor` is a
    `keras.layers.Softmax` layer, `keras.ops.softmax`, or any layer whose
    `activation` attribute is `keras.activations.softmax` (`Dense`,
    `Activation`, `Conv2D`, ...); the softmax must be over the last axis. A
    softmax applied inside a custom layer's `call` or a `Lambda` is not
    seen: such an exit is taken as logits.
    """
    operation = tensor._keras_history[0]
    rank = len(tensor.shape)
    # keras.ops.softmax on a symbolic tensor records this operation; Keras
    # exports no public name for its class.
    if isinstance(operation, (keras.layers.Softmax, keras.src.ops.nn.Softmax)):
        softmax_axis = operation.axis
    elif getattr(operation, "activation", None) is keras.activations.softmax:
        softmax_axis = -1
    else:
        return LOGITS
    return PROBABILITIES if _covers_last_axis(softmax_axis, rank) else LOGITS


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
        # Signature inputs become Python parameter names when TensorFlow
        # traces them: `lambda` (the first Lambda layer's name), `class`,
        # `None` and the other keywords are refused there.
        if keyword.iskeyword(base) or keyword.issoftkeyword(base):
            base = f"{base}_"
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


def input_names(model) -> list:
    """The stage-tensor names of `model.inputs` (the manifest's input names).

    The input layers' names, made safe as signature names: characters other
    than letters, digits and `_` become `_`, and Python keywords get a
    trailing `_`.
    """
    name_of = _tensor_namer(model)
    return [name_of(t) for t in model.inputs]


def partition(model) -> list:
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
    exits, names, ancestry = _ordered_exits(model)
    name_of = _tensor_namer(model)
    depth = {
        id(node): level
        for level, nodes in model._nodes_by_depth.items()
        for node in nodes
    }

    stage_of_node = {}
    nodes_of_stage = []
    for index, ancestors in enumerate(ancestry):
        own = [n for key, n in ancestors.items() if key not in stage_of_node]
        for node in own:
            stage_of_node[id(node)] = index
        # Deepest first: the order in which the nodes can be called again.
        nodes_of_stage.append(sorted(own, key=lambda n: -depth[id(n)]))

    # For every crossing tensor remember which stages consume it.
    consumers = {}
    for index, nodes in enumerate(nodes_of_stage):
        for node in nodes:
            for tensor in node.input_tensors:
                producer = _producer_node(tensor)
                if stage_of_node.get(id(producer)) != index:
                    consumers.setdefault(id(tensor), (tensor, set()))[1].add(index)

    plans = []
    for index, (exit_tensor, exit_name, nodes) in enumerate(
        zip(exits, names, nodes_of_stage)
    ):
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
        stage_name = f"stage_{index + 1}"
        stage_inputs = [name_of(t) for t in inputs]
        try:
            sub_model = _rebuild(
                f"{model.name}_{stage_name}", inputs, stage_inputs, nodes, outputs
            )
        except ValueError as error:
            raise PartitionError(
                f"Could not cut stage '{stage_name}' (exit '{exit_name}') out "
                f"of model '{model.name}': {error}"
            ) from error
        plans.append(
            StagePlan(
                name=stage_name,
                exit_name=exit_name,
                model=sub_model,
                input_names=stage_inputs,
                output_names=[name_of(t) for t in outputs],
                layer_names=sorted({n.operation.name for n in nodes}),
                exit_values=exit_values(exit_tensor),
            )
        )
    return plans


def _rebuild(name, inputs, names, nodes, outputs):
    """A model of `nodes` called again on new inputs shaped like `inputs`, named `names`."""
    computed = {
        id(tensor): keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=n)
        for tensor, n in zip(inputs, names)
    }
    for node in nodes:
        args, kwargs = node.arguments.fill_in(computed)
        results = keras.tree.flatten(node.operation(*args, **kwargs))
        for tensor, result in zip(node.outputs, results):
            computed[id(tensor)] = result
    return keras.Model(
        [computed[id(t)] for t in inputs],
        [computed[id(t)] for t in outputs],
        name=name,
    )


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
