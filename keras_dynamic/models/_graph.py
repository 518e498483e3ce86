"""Walks the node graph of a functional Keras model: ancestors and branches.

A conditional branch of a merge node (`GatedResidual`, `GatedConcat`,
`RoutedSum`) is the set of nodes its branch tensor depends on that neither
the decision tensor nor the merge's unconditional inputs depend on: what the
exported chain skips when the branch is off (docs of issue 8, "Regions").
"""

import dataclasses

import keras

from keras_dynamic.layers._conditional import ConditionalMerge


def producer(tensor):
    """The node that computed `tensor`."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def check_functional(model, what):
    """Raises unless `model` is a functional model (its graph is readable)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{what} expects a keras.Model. Received: {type(model).__name__}"
        )
    if isinstance(model, keras.Sequential) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            f"{what}: model '{model.name}' ({type(model).__name__}) is not a "
            "functional model, so its layer graph cannot be read. Build it "
            "with keras.Model(inputs, outputs)."
        )


def functional_nodes(model):
    """The call nodes of `model` (input layers excluded), inputs first."""
    depths = sorted(model._nodes_by_depth, reverse=True)
    return [
        node
        for depth in depths
        for node in model._nodes_by_depth[depth]
        if not node.is_input
    ]


def ancestors(tensors):
    """`{id(node): node}` of every non-input node the tensors depend on."""
    seen = {}
    stack = [producer(t) for t in tensors]
    while stack:
        node = stack.pop()
        if node.is_input or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(producer(t) for t in node.input_tensors)
    return seen


@dataclasses.dataclass
class Branch:
    """One conditional input of one merge node."""

    merge: ConditionalMerge
    merge_node: object
    input_index: int
    condition: tuple
    decision: object
    region: dict

    @property
    def kind(self):
        return self.condition[0]

    @property
    def group(self):
        return self.condition[1]


def conditional_branches(model):
    """Every conditional branch of the merge nodes of a functional model.

    Raises:
        ValueError: two branches share a node (their compute would count
            twice, and the exporter cannot give each its own stage), or a
            nested model holds a merge (its branches would be invisible).
    """
    branches = []
    owner = {}
    for node in functional_nodes(model):
        merge = node.operation
        if isinstance(merge, keras.Model) and any(
            isinstance(layer, ConditionalMerge)
            for layer in merge._flatten_layers(include_self=False, recursive=True)
        ):
            raise ValueError(
                f"Model '{model.name}' calls model '{merge.name}', which holds "
                "a gate or route merge: build gated and routed blocks in the "
                "top-level graph (call the blocks' layers, not a sub-model)."
            )
        if not isinstance(merge, ConditionalMerge):
            continue
        inputs = node.input_tensors
        decision = inputs[merge.decision_index]
        always = ancestors(
            [decision, *(inputs[i] for i in merge.unconditional_indices)]
        )
        for index, condition in merge.branch_conditions():
            region = {
                key: n
                for key, n in ancestors([inputs[index]]).items()
                if key not in always
            }
            label = f"input {index} of '{merge.name}'"
            for key, n in region.items():
                if key in owner:
                    raise ValueError(
                        f"Layer '{n.operation.name}' belongs to two "
                        f"conditional branches ({owner[key]} and {label}); "
                        "branches must not share layers or nest."
                    )
                owner[key] = label
            branches.append(Branch(merge, node, index, condition, decision, region))
    return branches
