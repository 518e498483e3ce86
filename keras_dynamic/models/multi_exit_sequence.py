"""Reference sequence classifier with an exit after every encoder block (DeeBERT)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_dynamic.layers.early_exit import EarlyExit

ENCODERS = ("conv1d", "gru", "lstm", "transformer")


def _conv1d_block(x, width, kernel_size, name):
    y = keras.layers.Conv1D(
        width, kernel_size, padding="same", activation="relu", name=f"{name}_conv"
    )(x)
    y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.LayerNormalization(name=f"{name}_norm")(y)


def _recurrent_block(x, width, cell, unroll, name):
    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    y = layer(width, return_sequences=True, unroll=unroll, name=f"{name}_{cell}")(x)
    y = keras.layers.Add(name=f"{name}_add")([x, y])
    return keras.layers.LayerNormalization(name=f"{name}_norm")(y)


def _transformer_block(x, width, num_heads, name):
    # Post-norm, as in BERT: attention and feed-forward sublayers, each
    # added to its input and layer-normalized.
    attended = keras.layers.MultiHeadAttention(
        num_heads, width // num_heads, name=f"{name}_attention"
    )(x, x)
    x = keras.layers.LayerNormalization(name=f"{name}_norm1")(
        keras.layers.Add(name=f"{name}_add1")([x, attended])
    )
    hidden = keras.layers.Dense(2 * width, activation="gelu", name=f"{name}_ffn1")(x)
    hidden = keras.layers.Dense(width, name=f"{name}_ffn2")(hidden)
    return keras.layers.LayerNormalization(name=f"{name}_norm2")(
        keras.layers.Add(name=f"{name}_add2")([x, hidden])
    )


def multi_exit_sequence_classifier(
    input_shape: Sequence[int] = (28, 28),
    num_classes: int = 10,
    encoder: str = "transformer",
    width: int = 64,
    num_blocks: int = 4,
    num_heads: int = 4,
    kernel_size: int = 5,
    unroll: bool = False,
    name: str = "multi_exit_sequence",
) -> keras.Model:
    """Builds an encoder of stacked blocks with an `EarlyExit` after each block.

    The DeeBERT layout (Xin et al., ACL 2020): a stem embeds every time step
    (a width-3 `Conv1D`, so that the embedding sees its neighbours: attention
    alone does not know the order of the steps), then ``num_blocks`` encoder
    blocks of the same width, each followed by an exit that averages its
    output over time and classifies it. Exported with
    `keras_dynamic.converters.export_stages`, each block becomes a stage, and
    the runtime can stop a sequence at the first confident exit or, with a
    ``"patience"`` policy (PABEE), when the exits stop changing their minds.

    Encoders (all Keras layers; each block adds its input back and
    layer-normalizes):

    * ``"conv1d"``: a ``Conv1D(width, kernel_size, padding="same")``.
    * ``"transformer"``: multi-head self-attention then a 2x-wide GELU
      feed-forward layer (post-norm, as BERT).
    * ``"gru"`` / ``"lstm"``: a recurrent layer over the whole sequence.
      With ``unroll=False`` (the default) TFLite runs it as a WHILE loop,
      which fixes the exported signatures to a batch of 1 and keeps GPU and
      NPU delegates off it; ``unroll=True`` converts to plain builtins at
      any batch, at a graph size that grows with the number of steps.

    Args:
        input_shape: ``(steps, features)`` of one sequence.
        num_classes: number of classes of every exit.
        encoder: one of `ENCODERS`.
        width: features per step inside the encoder.
        num_blocks: encoder blocks, hence exits (at least 2).
        num_heads: attention heads of ``"transformer"`` blocks (must divide
            ``width``).
        kernel_size: kernel width of ``"conv1d"`` blocks.
        unroll: unroll ``"gru"`` / ``"lstm"`` layers.
        name: model name.

    Returns:
        A functional `keras.Model` whose outputs are the exits' logits,
        shallow -> deep, named ``"exit_1"``, ..., ``"final"``.

    Example:

    >>> from keras_dynamic.models import multi_exit_sequence_classifier
    >>> model = multi_exit_sequence_classifier((12, 5), num_classes=3, width=8,
    ...                                         num_blocks=3, num_heads=2)
    >>> model.output_names
    ['exit_1', 'exit_2', 'final']
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 2 or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape
    ):
        raise ValueError(
            "`input_shape` must be (steps, features), two positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    if encoder not in ENCODERS:
        raise ValueError(f"`encoder` must be one of {ENCODERS}. Received: encoder={encoder!r}")
    for arg, value, low in (("num_classes", num_classes, 2), ("width", width, 1),
                            ("num_blocks", num_blocks, 2), ("num_heads", num_heads, 1),
                            ("kernel_size", kernel_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{arg}` must be an int >= {low}. Received: {arg}={value!r}")
    if encoder == "transformer" and width % num_heads:
        raise ValueError(
            f"`width` must be a multiple of `num_heads` for a transformer encoder. "
            f"Received: width={width}, num_heads={num_heads}"
        )

    inputs = keras.Input(input_shape, name="sequence")
    x = keras.layers.Conv1D(width, 3, padding="same", name="embed")(inputs)
    outputs = []
    for b in range(1, num_blocks + 1):
        block = f"block{b}"
        if encoder == "conv1d":
            x = _conv1d_block(x, width, kernel_size, block)
        elif encoder == "transformer":
            x = _transformer_block(x, width, num_heads, block)
        else:
            x = _recurrent_block(x, width, encoder, unroll, block)
        exit_name = "final" if b == num_blocks else f"exit_{b}"
        outputs.append(EarlyExit(num_classes, pooling="avg", name=exit_name)(x))
    return keras.Model(inputs, outputs, name=name)
