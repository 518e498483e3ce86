"""Reference resolution-adaptive CNN (RANet-style): coarse scales first, finer on demand."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_dynamic.layers.early_exit import EarlyExit


def _conv_bn_relu(x, filters, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def resolution_adaptive_cnn(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    scales: Sequence[int] = (4, 2, 1),
    widths: Sequence[int] = (32, 48, 64),
    depth: int = 2,
    name: str = "resolution_adaptive_cnn",
) -> keras.Model:
    """Builds a CNN that classifies a downsampled image first and finer ones on demand.

    The resolution-level spatial dynamics of RANet (Yang et al., CVPR 2020),
    reduced to its core: sub-network ``s`` sees the image average-pooled by
    ``scales[s]`` (coarse to fine), runs ``depth`` conv-BN-ReLU units of
    ``widths[s]`` filters at that resolution, and ends in an exit. A finer
    sub-network reuses the coarser one's features: they are upsampled to its
    resolution and concatenated with its first unit's output, so the fine
    scale refines what the coarse one found instead of starting over. Every
    sub-network halves its resolution once (a 2x2 max pool after its first
    unit) before its exit.

    Exported with `keras_dynamic.converters.export_stages`, each scale is a
    stage that reads the full-size model input and pools it itself (pooling
    a 32x32 RGB image costs a few microseconds; see BENCHMARKS.md), and the
    runtime stops an image at the first scale whose exit is confident: an
    easy image costs the coarse sub-network only.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be
            multiples of every scale times 2.
        num_classes: number of classes of every exit.
        scales: downsampling factor of each sub-network, coarse to fine,
            strictly decreasing (the last is usually 1, the full image).
        widths: filters of each sub-network (same length as ``scales``).
        depth: conv-BN-ReLU units per sub-network (at least 2).
        name: model name.

    Returns:
        A functional `keras.Model` whose outputs are the exits' logits,
        coarse -> fine, named ``"exit_1"``, ..., ``"final"``.

    Example:

    >>> from keras_dynamic.models import resolution_adaptive_cnn
    >>> model = resolution_adaptive_cnn((16, 16, 3), scales=(4, 2, 1), widths=(4, 4, 8))
    >>> model.output_names
    ['exit_1', 'exit_2', 'final']
    """
    input_shape = tuple(input_shape)
    scales, widths = tuple(scales), tuple(widths)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape!r}"
        )
    if len(scales) < 2 or len(widths) != len(scales):
        raise ValueError(
            "`scales` needs at least two entries and `widths` one per scale. "
            f"Received: scales={scales!r}, widths={widths!r}"
        )
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales) or any(
        a <= b for a, b in zip(scales, scales[1:])
    ):
        raise ValueError(
            f"`scales` must be positive ints, strictly decreasing (coarse to fine). "
            f"Received: scales={scales!r}"
        )
    for side in input_shape[:2]:
        if any(side % (2 * s) for s in scales):
            raise ValueError(
                f"`input_shape` {input_shape!r}: height and width must be multiples of "
                f"2 * every scale {scales!r} (each sub-network pools by 2 once)."
            )
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
        raise ValueError(f"`depth` must be an int >= 2. Received: depth={depth!r}")

    image = keras.Input(input_shape, name="image")
    outputs = []
    coarse = None  # the previous sub-network's last feature map
    for s, (scale, filters) in enumerate(zip(scales, widths), start=1):
        prefix = f"scale{s}"
        x = image
        if scale > 1:
            x = keras.layers.AveragePooling2D(scale, name=f"{prefix}_downsample")(x)
        x = _conv_bn_relu(x, filters, f"{prefix}_1")
        if coarse is not None:
            # The coarse map is half this one's pre-pool size times the ratio
            # of the scales: upsample it to this resolution.
            factor = x.shape[1] // coarse.shape[1]
            reused = keras.layers.UpSampling2D(factor, name=f"{prefix}_reuse_upsample")(coarse)
            x = keras.layers.Concatenate(name=f"{prefix}_reuse")([x, reused])
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
        for unit in range(2, depth + 1):
            x = _conv_bn_relu(x, filters, f"{prefix}_{unit}")
        coarse = x
        # Early exits pool to a grid (where a feature fired matters to a
        # shallow classifier); the final one globally, as multi_exit_cnn's.
        final = s == len(scales)
        head = EarlyExit(
            num_classes, pooling="avg" if final else "grid", conv_filters=None,
            name="final" if final else f"exit_{s}",
        )
        outputs.append(head(x))
    return keras.Model(image, outputs, name=name)
