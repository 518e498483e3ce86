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

    The resolution-level spatial dynamics of RANet (Yang et al., CVPR 2020):
    sub-network ``s`` sees the image average-pooled by ``scales[s]`` (coarse
    to fine) and works down to the coarsest sub-network's final resolution
    (the first one's input halved): one conv-BN-ReLU unit of ``widths[s]``
    filters at each resolution, halving in between with a 2x2 max pool, and
    ``depth - 1`` units at the last one, then an exit. As in RANet, a finer
    sub-network reuses the coarser one's features at every resolution both
    have: after each pool, the coarser map of that resolution is concatenated
    to its input, so the fine scale refines what the coarse one found instead
    of starting over, and every scale ends at the same small map, so the
    finest is also the deepest.

    Exported with `keras_dynamic.converters.export_stages`, each scale is a
    stage that reads the full-size model input and pools it itself (pooling
    a 32x32 RGB image costs a few microseconds; see BENCHMARKS.md) plus the
    coarser stage's feature maps, and the runtime stops an image at the first
    scale whose exit is confident: an easy image costs the coarse sub-network
    only.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be
            multiples of every scale times 2.
        num_classes: number of classes of every exit.
        scales: downsampling factor of each sub-network, coarse to fine,
            strictly decreasing (the last is usually 1, the full image), each
            the first one divided by a power of two.
        widths: filters of each sub-network (same length as ``scales``).
        depth: conv-BN-ReLU units at the last resolution of every
            sub-network, plus one (at least 2; the coarsest sub-network has
            ``depth`` units in all, a finer one one more per extra halving).
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
    if any(scales[0] % s or (scales[0] // s) & (scales[0] // s - 1) for s in scales):
        raise ValueError(
            f"`scales` {scales!r}: the first scale divided by each other one must be a "
            "power of two (every sub-network halves its resolution down to the coarsest "
            "one's final map)."
        )
    for side in input_shape[:2]:
        if any(side % (2 * s) for s in scales):
            raise ValueError(
                f"`input_shape` {input_shape!r}: height and width must be multiples of "
                f"2 * every scale {scales!r} (the coarsest sub-network pools by 2 once)."
            )
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
        raise ValueError(f"`depth` must be an int >= 2. Received: depth={depth!r}")

    image = keras.Input(input_shape, name="image")
    last_side = input_shape[0] // scales[0] // 2
    outputs = []
    coarse = {}  # the previous sub-network's last feature map at each height
    for s, (scale, filters) in enumerate(zip(scales, widths), start=1):
        prefix = f"scale{s}"
        x = image
        if scale > 1:
            x = keras.layers.AveragePooling2D(scale, name=f"{prefix}_downsample")(x)
        x = _conv_bn_relu(x, filters, f"{prefix}_1")
        maps = {x.shape[1]: x}
        level = 1
        while x.shape[1] > last_side:
            level += 1
            x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool{level}")(x)
            if x.shape[1] in coarse:
                x = keras.layers.Concatenate(name=f"{prefix}_reuse{level}")(
                    [x, coarse[x.shape[1]]]
                )
            units = depth - 1 if x.shape[1] == last_side else 1
            for unit in range(units):
                suffix = f"{level}" if units == 1 else f"{level}_{unit + 1}"
                x = _conv_bn_relu(x, filters, f"{prefix}_{suffix}")
            maps[x.shape[1]] = x
        coarse = maps
        # Early exits pool to a grid (where a feature fired matters to a
        # shallow classifier); the final one globally, as multi_exit_cnn's.
        final = s == len(scales)
        head = EarlyExit(
            num_classes, pooling="avg" if final else "grid", conv_filters=None,
            name="final" if final else f"exit_{s}",
        )
        outputs.append(head(x))
    return keras.Model(image, outputs, name=name)
