"""How much of a model XNNPACK took: a helper for the benchmarks (no TensorFlow needed)."""


def delegated_ops(interpreter):
    """`(ops XNNPACK took, ops in the model)` for an allocated interpreter's main subgraph.

    The interpreter lists the model's own nodes followed by one DELEGATE node
    per partition XNNPACK took; a partition covers the nodes that produce its
    outputs from its inputs, so walking back from each delegate's outputs to
    its inputs finds the nodes it replaced.
    """
    nodes = interpreter._get_ops_details()
    own = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): n["index"] for n in own for t in n["outputs"]}
    by_index = {n["index"]: n for n in own}
    taken = set()
    for delegate in (n for n in nodes if n["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer:
                continue
            index = producer[tensor]
            if index in taken:
                continue
            taken.add(index)
            stack.extend(int(t) for t in by_index[index]["inputs"] if t >= 0)
    return len(taken), len(own)
