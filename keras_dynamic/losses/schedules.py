"""Per-exit loss weights for training a multi-exit network jointly."""

from __future__ import annotations

_SCHEDULES = ("uniform", "linear", "final_heavy")


def exit_loss_weights(
    num_exits: int, schedule: str = "uniform", normalize: bool = True
) -> list[float]:
    """Returns one loss weight per exit, ordered shallow -> final.

    A multi-exit network is trained on the weighted sum of its exits' losses;
    the weights trade the accuracy of the shallow exits against that of the
    final one. The result is meant for ``compile(loss_weights=...)`` with the
    model's outputs in the same shallow -> final order.

    Schedules (``k = 1 .. num_exits``, before normalization):

    - ``"uniform"``: ``w_k = 1``. Every classifier counts the same, as in
      MSDNet (Huang et al., 2018).
    - ``"linear"``: ``w_k = k``. The weight grows with depth, so the shallow
      exits regularize the shared early layers without pulling them away from
      the features the deep exits need; a common choice in multi-exit
      training (see the survey of Scardapane et al., 2020).
    - ``"final_heavy"``: the final exit carries half of the total weight and
      the early exits share the other half equally, which keeps the full
      network's accuracy close to that of a single-exit network (the
      BranchyNet setting of favouring the main branch, Teerapittayanon et
      al., 2016).

    Args:
        num_exits: int >= 1, number of exits including the final one.
        schedule: one of ``"uniform"``, ``"linear"``, ``"final_heavy"``.
        normalize: if True the weights sum to 1, so the total loss has the
            scale of a single-exit loss; if False they keep the raw values
            above (``"final_heavy"`` then gives ``1`` to each early exit and
            ``num_exits - 1`` to the final one).

    Returns:
        A list of `num_exits` Python floats.

    Example:

    >>> from keras_dynamic.losses import exit_loss_weights
    >>> exit_loss_weights(3)
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    >>> exit_loss_weights(4, "linear")
    [0.1, 0.2, 0.3, 0.4]
    >>> exit_loss_weights(3, "final_heavy", normalize=False)
    [1.0, 1.0, 2.0]

    References:
        Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image
        Classification", ICLR 2018.
        Teerapittayanon et al., "BranchyNet: Fast Inference via Early Exiting
        from Deep Neural Networks", ICPR 2016.
        Scardapane et al., "Why Should We Add Early Exits to Neural
        Networks?", Cognitive Computation 2020.
    """
    if isinstance(num_exits, bool) or not isinstance(num_exits, int) or num_exits < 1:
        raise ValueError(
            "`num_exits` must be a positive int. "
            f"Received: num_exits={num_exits!r}"
        )
    if schedule not in _SCHEDULES:
        raise ValueError(
            f"`schedule` must be one of {_SCHEDULES}. "
            f"Received: schedule={schedule!r}"
        )
    if not isinstance(normalize, bool):
        raise ValueError(
            f"`normalize` must be a bool. Received: normalize={normalize!r}"
        )
    if schedule == "uniform":
        weights = [1.0] * num_exits
    elif schedule == "linear":
        weights = [float(k) for k in range(1, num_exits + 1)]
    else:
        # With a single exit there is nothing to balance against.
        weights = [1.0] * (num_exits - 1) + [float(max(num_exits - 1, 1))]
    if normalize:
        total = sum(weights)
        weights = [w / total for w in weights]
    return weights
