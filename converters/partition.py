"""Cuts a functional Keras model into stages at its exits, gates and routers.

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
from keras_dynamic.models._graph import conditional_branches

# What an exit's tensor holds: raw scores, or a softmax over the classes.
LOGITS = "logits"
PROBABILITIES = "probabilities"


class PartitionError(ValueError):
    """The model cannot be cut into stages; the message names the cause."""


@dataclasses.dataclass
class StagePlan:
    """One stage: a Keras sub-model plus the names its tensors carry."""

    name: str
    exit_name: "str | None"
    model: "keras.Model"
    input_names: list
    output_names: list
    layer_names: list
    exit_values: str = LOGITS
    # None: the stage runs for every sample still in the chain.
    condition: "Condition | None" = None


@dataclasses.dataclass(frozen=True)
class Condition:
    """When a conditional stage runs: `decision[:, index] > 0.5` (gate) or
    `argmax(decision) == index` (route); `decision` is a stage tensor name,
    `tensor` the Keras tensor it names (parity reads its layer's margins)."""

    kind: str
    decision: str
    index: int
    tensor: object = dataclasses.field(default=None, compare=False, repr=False)


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
    """Cuts `model` into stages at its exits, gates and routers, in run order.

    Without gates or routers there is one `StagePlan` per exit, shallow to
    deep. With them, a gated or routed branch (the nodes only that branch
    needs) becomes a stage of its own whose `condition` names the decision
    tensor and the column (gate) or index (route) that switches it; the
    decision and the tensors the branch reads are computed by an earlier,
    unconditional stage, and the merge runs in a later one.

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
    exits, names, _ = _ordered_exits(model)
    name_of = _tensor_namer(model)
    branches = _branches(model)
    check_branches(model, branches)
    depth = {
        id(node): level
        for level, nodes in model._nodes_by_depth.items()
        for node in nodes
    }
    in_branch = {key for b in branches for key in b.region}
    pieces = _pieces(exits, names, branches, in_branch, name_of)

    stage_of_node = {}
    nodes_of_stage = []
    for piece in pieces:
        index = len(nodes_of_stage)
        own = [
            n for key, n in piece.nodes.items()
            if key not in stage_of_node and (piece.condition or key not in in_branch)
        ]
        if not own and piece.exit_tensor is None and piece.condition is None:
            piece.skip = True
            continue
        for node in own:
            stage_of_node[id(node)] = index
        # Deepest first: the order in which the nodes can be called again.
        nodes_of_stage.append(sorted(own, key=lambda n: -depth[id(n)]))
    pieces = [p for p in pieces if not p.skip]

    # For every crossing tensor remember which stages consume it.
    consumers = {}
    for index, nodes in enumerate(nodes_of_stage):
        for node in nodes:
            for tensor in node.input_tensors:
                producer = _producer_node(tensor)
                if stage_of_node.get(id(producer)) != index:
                    consumers.setdefault(id(tensor), (tensor, set()))[1].add(index)

    plans = []
    for index, (piece, nodes) in enumerate(zip(pieces, nodes_of_stage)):
        inputs = _unique(
            tensor for tensor, stages in consumers.values() if index in stages
        )
        carried = _unique(
            tensor
            for tensor, stages in consumers.values()
            if stage_of_node.get(id(_producer_node(tensor))) == index
            and max(stages) > index
        )
        head = [] if piece.exit_tensor is None else [piece.exit_tensor]
        outputs = head + [t for t in carried if t is not piece.exit_tensor]
        stage_name = f"stage_{index + 1}"
        stage_inputs = [name_of(t) for t in inputs]
        what = (
            f"exit '{piece.exit_name}'" if piece.exit_name is not None
            else piece.describe()
        )
        try:
            sub_model = _rebuild(
                f"{model.name}_{stage_name}", inputs, stage_inputs, nodes, outputs
            )
        except ValueError as error:
            raise PartitionError(
                f"Could not cut stage '{stage_name}' ({what}) out "
                f"of model '{model.name}': {error}"
            ) from error
        plans.append(
            StagePlan(
                name=stage_name,
                exit_name=piece.exit_name,
                model=sub_model,
                input_names=stage_inputs,
                output_names=[name_of(t) for t in outputs],
                layer_names=sorted({n.operation.name for n in nodes}),
                exit_values=LOGITS if piece.exit_tensor is None
                else exit_values(piece.exit_tensor),
                condition=piece.condition,
            )
        )
    return plans


@dataclasses.dataclass
class _Piece:
    """What one stage will hold, before the nodes are dealt out."""

    nodes: dict
    exit_tensor: object = None
    exit_name: "str | None" = None
    condition: "Condition | None" = None
    merge_name: "str | None" = None
    skip: bool = False

    def describe(self):
        if self.condition is not None:
            return (
                f"{self.condition.kind} {self.condition.decision!r} "
                f"index {self.condition.index} of '{self.merge_name}'"
            )
        return f"the inputs of '{self.merge_name}'"


def _pieces(exits, names, branches, in_branch, name_of):
    """Exits and merges as stage pieces, in an order every dependency respects.

    A merge contributes an unconditional piece (its decision and every tensor
    its branches read from outside them) followed by one conditional piece
    per branch; the merge node itself falls into a later piece. Pieces are
    sorted by how much of the graph they depend on: a piece that depends on
    another depends on strictly more, so it comes later.
    """
    by_merge = {}
    for branch in branches:
        by_merge.setdefault(id(branch.merge_node), []).append(branch)
    keyed = []
    for tensor, name in zip(exits, names):
        keyed.append((_ancestors(tensor), [_Piece(_ancestors(tensor), tensor, name)]))
    for group in by_merge.values():
        merge_name = group[0].merge.name
        needed = [group[0].decision]
        for branch in group:
            for node in branch.region.values():
                needed.extend(
                    t for t in node.input_tensors
                    if id(_producer_node(t)) not in branch.region
                )
        before = {}
        for tensor in needed:
            if not _producer_node(tensor).is_input:
                before.update(_ancestors(tensor))
        pieces = [_Piece(before, merge_name=merge_name)]
        for branch in group:
            kind, index = branch.condition
            pieces.append(_Piece(
                branch.region,
                condition=Condition(kind, name_of(branch.decision), index, branch.decision),
                merge_name=merge_name,
            ))
        keyed.append((before, pieces))
    keyed.sort(key=lambda item: len(item[0]))
    return [piece for _, pieces in keyed for piece in pieces]


def _branches(model):
    try:
        return [b for b in conditional_branches(model) if b.region]
    except ValueError as error:
        raise PartitionError(str(error)) from error


def check_branches(model, branches):
    """Refuses branches the chain could not skip without changing an answer.

    A skipped branch's tensors read as zeros. That is exact only where they
    reach nothing but their own merge, multiplied by its decision: a branch
    tensor read anywhere else, or given as a model output (an exit inside a
    branch), would read zeros for the samples that skip it. A decision
    tensor must also switch one kind of merge (gates read a column > 0.5,
    routes an arg max).
    """
    consumers = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for position, tensor in enumerate(node.input_tensors):
                consumers.setdefault(id(tensor), []).append((node, position))
    outputs = {id(t) for t in model.outputs}
    kinds = {}
    for branch in branches:
        where = (
            f"input {branch.input_index} of '{branch.merge.name}' "
            f"({branch.kind} {branch.group})"
        )
        kinds.setdefault(id(branch.decision), set()).add(branch.kind)
        if len(kinds[id(branch.decision)]) > 1:
            raise PartitionError(
                f"Model '{model.name}': the decision "
                f"'{branch.decision._keras_history[0].name}' switches both a "
                "gate merge and a route merge; a decision tensor is read "
                "either as gates (column > 0.5) or as a route (arg max)."
            )
        for node in branch.region.values():
            for tensor in node.output_tensors:
                layer = node.operation.name
                if id(tensor) in outputs:
                    raise PartitionError(
                        f"Model '{model.name}': output '{layer}' is computed "
                        f"inside the conditional branch {where}, which the "
                        "chain skips for some samples. Exits and outputs must "
                        "be on the unconditional path (before the decision or "
                        "after the merge)."
                    )
                for consumer, position in consumers.get(id(tensor), []):
                    if id(consumer) in branch.region:
                        continue
                    if consumer is branch.merge_node and position == branch.input_index:
                        continue
                    raise PartitionError(
                        f"Model '{model.name}': layer '{consumer.operation.name}' "
                        f"reads the output of '{layer}', which belongs to the "
                        f"conditional branch {where}. A skipped branch reads as "
                        "zeros, so only its own merge may read it; compute "
                        "what other layers need outside the branch."
                    )


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
