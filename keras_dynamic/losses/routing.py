"""The Switch Transformer's load-balancing loss for top-1 routers."""

import keras


def load_balancing_loss(dispatch_probs, expert_index):
    """`N * sum_i f_i * P_i`: small when the experts share the batch evenly.

    `f_i` is the fraction of the batch dispatched to expert i and `P_i` the
    mean router probability of expert i. The value is 1 when both are
    uniform and N when one expert takes every sample with certainty. Only
    `P` carries a gradient (`f` comes from an argmax): the loss lowers the
    probability of the experts that receive too many samples. `Router(...,
    load_balance_weight=w)` adds `w` times this term in training.

    Args:
        dispatch_probs: `(batch, N)` router probabilities (the full softmax,
            before the top-1 choice).
        expert_index: `(batch,)` integer index of the expert each sample was
            dispatched to.

    Returns:
        A scalar float32 tensor.

    Example:

    >>> import numpy as np
    >>> from keras_dynamic.losses import load_balancing_loss
    >>> probs = np.array([[0.9, 0.1], [0.2, 0.8]], "float32")
    >>> round(float(load_balancing_loss(probs, np.array([0, 1]))), 4)
    1.0
    >>> round(float(load_balancing_loss(probs, np.array([0, 0]))), 4)
    1.1

    Reference:
        Fedus, Zoph and Shazeer, "Switch Transformers: Scaling to Trillion
        Parameter Models with Simple and Efficient Sparsity", JMLR 2022.
        Shazeer et al., "Outrageously Large Neural Networks: The
        Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017.
    """
    probs = keras.ops.cast(dispatch_probs, "float32")
    if len(probs.shape) != 2 or probs.shape[-1] is None:
        raise ValueError(
            "`dispatch_probs` must have shape (batch, num_experts). "
            f"Received: shape={tuple(probs.shape)}"
        )
    num_experts = probs.shape[-1]
    expert_index = keras.ops.convert_to_tensor(expert_index)
    if len(expert_index.shape) != 1:
        raise ValueError(
            "`expert_index` must have shape (batch,). "
            f"Received: shape={tuple(expert_index.shape)}"
        )
    dispatched = keras.ops.one_hot(expert_index, num_experts, dtype="float32")
    fraction = keras.ops.mean(dispatched, axis=0)
    mean_probs = keras.ops.mean(probs, axis=0)
    return num_experts * keras.ops.sum(fraction * mean_probs)
