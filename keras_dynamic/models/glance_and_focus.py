"""Reference region-level dynamic CNN (Glance and Focus): a cheap glance, then one crop."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.routed_sum import RoutedSum
from keras_dynamic.layers.router import Router


def _conv_bn_relu(x, filters, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _tower(x, widths, name):
    """conv-BN-ReLU per width, a 2x2 max pool between them."""
    for i, filters in enumerate(widths, start=1):
        if i > 1:
            x = keras.layers.MaxPooling2D(2, name=f"{name}_pool{i}")(x)
        x = _conv_bn_relu(x, filters, f"{name}_{i}")
    return x


def default_crops(input_shape, crop_size):
    """The four corners and the centre of the image, as ``(top, left)`` corners."""
    height, width = input_shape[:2]
    bottom, right = height - crop_size, width - crop_size
    return ((0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2))


def glance_and_focus_cnn(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    glance_scale: int = 2,
    crop_size: int = 20,
    crops: Sequence[Sequence[int]] | None = None,
    glance_widths: Sequence[int] = (24, 48),
    focus_widths: Sequence[int] = (32, 64),
    name: str = "glance_and_focus_cnn",
) -> keras.Model:
    """Builds a CNN that glances at a downsampled image and, if unsure, focuses on one crop.

    The region-level spatial dynamics of GFNet (Wang et al., NeurIPS 2020,
    "Glance and Focus"), with a fixed set of candidate crops so that every
    op stays a TFLite builtin: a glance network classifies the image
    average-pooled by ``glance_scale`` (the ``"glance"`` exit); a policy head
    (a top-1 `Router` on the glance features) picks one of the candidate
    crops; that crop of the full-resolution image goes through its focus
    network, and the final classifier reads the glance's logits and the
    focus features together. Each candidate has its own focus network (a route's
    experts are separate stages, and only the chosen one runs).

    Training is plain `fit` on both exits: the router's choice scales the
    chosen focus features by its probability (`RoutedSum`), which is how
    the policy learns which crop helps, with the Switch Transformer's
    load-balancing loss keeping every crop in use. GFNet trains its policy
    with reinforcement learning over a sequence of crops; this is the
    one-crop, differentiable-router version of it.

    Exported with `keras_dynamic.converters.export_stages` it becomes a
    version-2 chain: glance stage (with its exit), policy stage, one stage
    per crop (each slices its crop from the model input) and the final
    classifier. The runtime stops an image at the glance when that exit is
    confident and otherwise runs the one crop the policy chose.

    Args:
        input_shape: ``(height, width, channels)``, height and width multiples
            of ``glance_scale``.
        num_classes: number of classes of both exits.
        glance_scale: downsampling factor of the glance (an int >= 2).
        crop_size: side of every (square) crop, in input pixels.
        crops: ``(top, left)`` corners of the candidate crops, each inside
            the image; None for the four corners and the centre.
        glance_widths, focus_widths: filters of the glance and of each focus
            network's conv-BN-ReLU units (a 2x2 max pool between units).
        name: model name.

    Returns:
        A functional `keras.Model` with outputs ``"glance"`` and ``"final"``.

    Example:

    >>> from keras_dynamic.models import glance_and_focus_cnn
    >>> model = glance_and_focus_cnn((16, 16, 3), crop_size=8, glance_widths=(4,),
    ...                              focus_widths=(4,))
    >>> model.output_names
    ['glance', 'final']
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape!r}"
        )
    height, width = input_shape[:2]
    if isinstance(glance_scale, bool) or not isinstance(glance_scale, int) or glance_scale < 2:
        raise ValueError(f"`glance_scale` must be an int >= 2. Received: {glance_scale!r}")
    if height % glance_scale or width % glance_scale:
        raise ValueError(
            f"`input_shape` {input_shape!r}: height and width must be multiples of "
            f"glance_scale={glance_scale}."
        )
    if (
        isinstance(crop_size, bool) or not isinstance(crop_size, int)
        or not 1 <= crop_size <= min(height, width)
    ):
        raise ValueError(
            f"`crop_size` must be an int in [1, {min(height, width)}] (the image is "
            f"{height}x{width}). Received: crop_size={crop_size!r}"
        )
    crops = tuple(
        tuple(c) for c in (default_crops(input_shape, crop_size) if crops is None else crops)
    )
    if len(crops) < 2:
        raise ValueError(f"`crops` needs at least two candidates. Received: crops={crops!r}")
    for k, crop in enumerate(crops):
        if (
            len(crop) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in crop)
            or not (0 <= crop[0] <= height - crop_size and 0 <= crop[1] <= width - crop_size)
        ):
            raise ValueError(
                f"crop {k} {crop!r}: a crop is (top, left) of a {crop_size}x{crop_size} "
                f"box inside the {height}x{width} image, so top <= {height - crop_size} "
                f"and left <= {width - crop_size}."
            )

    image = keras.Input(input_shape, name="image")
    glance = keras.layers.AveragePooling2D(glance_scale, name="glance_downsample")(image)
    glance = _tower(glance, glance_widths, "glance")
    glance_exit = EarlyExit(num_classes, conv_filters=None, name="glance")(glance)
    policy = Router(len(crops), load_balance_weight=0.01, name="crop_policy")(glance)
    focused = []
    for k, (top, left) in enumerate(crops):
        crop = keras.layers.Cropping2D(
            ((top, height - crop_size - top), (left, width - crop_size - left)),
            name=f"crop{k}",
        )(image)
        features = _tower(crop, focus_widths, f"focus{k}")
        focused.append(keras.layers.GlobalAveragePooling2D(name=f"focus{k}_gap")(features))
    focus = RoutedSum(name="focus")([policy, *focused])
    # The final classifier refines the glance: it reads the glance's logits
    # with the focus features, so it starts from what the glance knew (its
    # grid-pooled head keeps where things are, which pooled focus features
    # of one crop do not) and learns what the crop adds.
    both = keras.layers.Concatenate(name="glance_and_focus")([glance_exit, focus])
    final = EarlyExit(num_classes, pooling=None, name="final")(both)
    return keras.Model(image, [glance_exit, final], name=name)
