"""Reference multi-exit CNN used by the tests, the converters and the demo."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import keras

from keras_dynamic.layers.early_exit import EarlyExit

# Set by multi_exit_cnn itself for every exit.
_RESERVED_HEAD_ARGS = ("num_classes", "name", "dropout")


def _positive_ints(name, values):
    values = tuple(values)
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive ints. "
            f"Received: {name}={values!r}"
        )
    return values


def _conv_bn(x, filters, kernel_size, name):
    x = keras.layers.Conv2D(
        filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    # A faster moving average than the default 0.99: the reference datasets
    # are small (a few hundred steps per run), and with 0.99 the inference
    # statistics still lag the training ones after several epochs.
    return keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)


def _block(x, filters, depth, residual, name):
    shortcut = x
    for i in range(1, depth + 1):
        x = _conv_bn(x, filters, 3, f"{name}_{i}")
        # With a residual connection the last ReLU comes after the addition.
        if i < depth or not residual:
            x = keras.layers.ReLU(name=f"{name}_{i}_relu")(x)
    if residual:
        if shortcut.shape[-1] != filters:
            shortcut = _conv_bn(shortcut, filters, 1, f"{name}_proj")
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
        x = keras.layers.ReLU(name=f"{name}_out")(x)
    return x


def multi_exit_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    depths: Sequence[int] = (1, 2, 2),
    exits: Sequence[bool] | None = None,
    residual: bool = True,
    cross_exit_skip: bool = False,
    exit_head: Mapping[str, Any] | None = None,
    exit_dropout: float = 0.0,
    name: str = "multi_exit_cnn",
) -> keras.Model:
    """Builds a CNN of stacked blocks with an `EarlyExit` after each block.

    Block ``b`` is ``depths[b]`` times conv3x3-BN-ReLU with ``widths[b]``
    filters, optionally wrapped in a residual connection (1x1 conv + BN
    projection where the width changes). Every block but the first starts
    with a 2x2 max pool, so each block works at half the resolution of the
    previous one. An exit reads the output of its block; the next block's
    pool comes after the cut, so the tensor handed from stage to stage is
    the block output.

    The default widths and depths make the first block a small fraction of
    the total cost (a single 32-filter conv against four wider convs), which
    is what makes exiting early pay off. The early exits are `EarlyExit`
    layers with the head that `exit_head` describes (by default EarlyExit's
    own: pooling to a small grid, which a shallow block's local features
    need; on digits a globally pooled first exit stays near chance). The
    final exit pools globally.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of classes of every exit.
        widths: filters of each block.
        depths: number of conv-BN-ReLU units of each block (same length as
            `widths`).
        exits: None for an exit after every block, or a sequence of bools
            (same length as `widths`) saying which blocks get an exit; the
            last must be True, it is the final exit.
        residual: wrap every block in a residual connection.
        cross_exit_skip: also add the first block's output (max-pooled to
            the resolution, and 1x1-projected to the width, of the last
            block's input) into the last block's input. The skip crosses
            every exit between them, so the exported stage 1 produces a
            tensor that a later stage consumes. Needs at least 3 blocks.
        exit_head: `EarlyExit` keyword arguments of the early exits' heads
            (`pooling`, `grid_size`, `conv_filters`, `hidden_units`, ...);
            None or `{}` gives EarlyExit's default head. The final exit is
            always a linear head on global average pooling.
        exit_dropout: dropout rate of every exit head in training.
        name: model name.

    Returns:
        A functional `keras.Model` whose outputs are the logits of the exits
        ordered shallow -> final, named ``"exit_1"``, ``"exit_2"``, ...,
        ``"final"``.

    Example:

    >>> from keras_dynamic.models import multi_exit_cnn
    >>> model = multi_exit_cnn((16, 16, 1), num_classes=4, widths=(4, 8, 8))
    >>> model.output_names
    ['exit_1', 'exit_2', 'final']
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    _positive_ints("input_shape", input_shape)
    _positive_ints("num_classes", (num_classes,))
    exit_head = dict(exit_head or {})
    reserved = sorted(set(exit_head) & set(_RESERVED_HEAD_ARGS))
    if reserved:
        raise ValueError(
            f"`exit_head` may not set {reserved}: multi_exit_cnn sets them "
            f"for every exit. Received: exit_head={exit_head!r}"
        )
    widths = _positive_ints("widths", widths)
    depths = _positive_ints("depths", depths)
    if len(depths) != len(widths):
        raise ValueError(
            "`depths` must have one entry per block, like `widths`. "
            f"Received: widths={widths!r}, depths={depths!r}"
        )
    exits = (True,) * len(widths) if exits is None else tuple(exits)
    if (
        len(exits) != len(widths)
        or not all(isinstance(e, bool) for e in exits)
        or not exits[-1]
    ):
        raise ValueError(
            "`exits` must be None or one bool per block with the last True "
            f"(the final exit). Received: exits={exits!r}"
        )
    if cross_exit_skip and len(widths) < 3:
        raise ValueError(
            "`cross_exit_skip=True` needs at least 3 blocks so that the skip "
            f"crosses an exit. Received: widths={widths!r}"
        )
    downsampling = 2 ** (len(widths) - 1)
    if min(input_shape[:2]) < downsampling:
        raise ValueError(
            f"`input_shape` {input_shape!r} is too small for {len(widths)} "
            f"blocks, which downsample by {downsampling}."
        )

    inputs = keras.Input(input_shape, name="image")
    outputs = []
    x = inputs
    first_block_out = None
    for b, (filters, depth) in enumerate(zip(widths, depths), start=1):
        if b > 1:
            x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        if cross_exit_skip and b == len(widths):
            skip = keras.layers.MaxPooling2D(
                downsampling, name="cross_exit_skip_pool"
            )(first_block_out)
            skip = _conv_bn(skip, x.shape[-1], 1, "cross_exit_skip")
            x = keras.layers.Add(name="cross_exit_skip_add")([x, skip])
        x = _block(x, filters, depth, residual, f"block{b}")
        if b == 1:
            first_block_out = x
        if b == len(widths):
            outputs.append(
                EarlyExit(
                    num_classes,
                    pooling="avg",
                    conv_filters=None,
                    dropout=exit_dropout,
                    name="final",
                )(x)
            )
        elif exits[b - 1]:
            outputs.append(
                EarlyExit(
                    num_classes,
                    dropout=exit_dropout,
                    name=f"exit_{len(outputs) + 1}",
                    **exit_head,
                )(x)
            )
    return keras.Model(inputs, outputs, name=name)
