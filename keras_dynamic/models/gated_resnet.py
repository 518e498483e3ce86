"""Reference gated ResNet (CIFAR-style) for the gate and routing benchmarks."""

import keras

from keras_dynamic.layers.block_gate import BlockGate
from keras_dynamic.layers.early_exit import EarlyExit
from keras_dynamic.layers.router import Router
from keras_dynamic.models.gated_blocks import channel_gated_conv2d
from keras_dynamic.models.gated_blocks import gated_residual
from keras_dynamic.models.gated_blocks import mixture_of_experts
from keras_dynamic.models.multi_exit_cnn import _positive_ints

GATINGS = ("block", "channel", None)


def _conv_bn(filters, strides, name):
    return [
        keras.layers.Conv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            use_bias=False,
            name=f"{name}_conv",
        ),
        keras.layers.BatchNormalization(name=f"{name}_bn"),
    ]


def _body(width, strides, name):
    """conv3x3-BN-ReLU-conv3x3-BN: the residual body of a basic block."""
    return [
        *_conv_bn(width, strides, f"{name}_1"),
        keras.layers.ReLU(name=f"{name}_1_relu"),
        *_conv_bn(width, 1, f"{name}_2"),
    ]


def _block(x, width, strides, gating, groups, gate_options, name):
    identity = strides == 1 and x.shape[-1] == width
    if gating == "block" and identity:
        gate = BlockGate(name=f"{name}_gate", **gate_options)
        x = gated_residual(x, _body(width, strides, name), gate=gate, name=name)
        return keras.layers.ReLU(name=f"{name}_out")(x)
    shortcut = x
    if not identity:
        shortcut = keras.layers.Conv2D(
            width, 1, strides=strides, use_bias=False, name=f"{name}_proj"
        )(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    if gating == "channel":
        fx = channel_gated_conv2d(
            x,
            width,
            3,
            groups=groups,
            strides=strides,
            use_bias=False,
            batch_norm=True,
            activation="relu",
            name=f"{name}_1",
        )
        for layer in _conv_bn(width, 1, f"{name}_2"):
            fx = layer(fx)
    else:
        fx = x
        for layer in _body(width, strides, name):
            fx = layer(fx)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, fx])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def gated_resnet(
    input_shape=(32, 32, 3),
    num_classes: int = 10,
    widths=(16, 32, 64),
    blocks_per_stage=(3, 3, 3),
    gating="block",
    channel_groups: int = 4,
    target_rate=None,
    rate_loss_weight: float = 1.0,
    moe_experts=None,
    load_balance_weight: float = 0.01,
    exits: bool = False,
    name="gated_resnet",
) -> keras.Model:
    """Builds a CIFAR-style ResNet whose blocks are gated or routed.

    A 3x3 convolution stem, then one stage per entry of `widths`, each of
    `blocks_per_stage` basic blocks (conv3x3-BN-ReLU-conv3x3-BN plus the
    shortcut, then ReLU). Every stage but the first starts with a stride-2
    block. With `widths=(16, 32, 64)` and 3 blocks per stage this is
    ResNet-20; ConvNet-AIG gates ResNet-110 built the same way.

    * `gating="block"`: every block whose input and output shapes match gets
      a `BlockGate` and a `GatedResidual` (ConvNet-AIG); the first block of a
      stage, which changes the width or resolution, keeps its projection and
      always runs.
    * `gating="channel"`: the first convolution of every block is a
      `channel_gated_conv2d` with `channel_groups` groups (CGNet/GaterNet
      style); blocks themselves always run.
    * `gating=None`: the plain network (the static baseline).
    * `moe_experts=N`: after the last stage, a residual top-1 mixture of N
      expert bodies at the last width (`x + RoutedSum(...)`).
    * `exits=True`: an `EarlyExit` after every stage but the last.

    Layer names follow `stage{s}_block{b}` (gates `..._gate`, merges named
    after the block), so that benchmarks and the exporter can find them.

    Args:
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of classes of every head.
        widths: channels of each stage.
        blocks_per_stage: number of blocks of each stage (same length).
        gating: `"block"`, `"channel"` or None, see above.
        channel_groups: groups per channel-gated convolution; must divide
            every width.
        target_rate: optional target execution rate of every gate
            (ConvNet-AIG's loss, added by the gates in training); leave None
            when training with `ComputeBudget` instead.
        rate_loss_weight: weight of each gate's target-rate loss.
        moe_experts: None, or the number N >= 2 of experts of the final
            mixture-of-experts block.
        load_balance_weight: the router's load-balancing loss weight.
        exits: whether stages but the last get an early exit.
        name: model name.

    Returns:
        A functional `keras.Model` with logits outputs: `"final"`, or
        `["exit_1", ..., "final"]` with `exits=True`.

    Example:

    >>> from keras_dynamic.models import gated_resnet
    >>> model = gated_resnet((16, 16, 3), num_classes=4, widths=(8, 16),
    ...                      blocks_per_stage=(2, 2), moe_experts=2)
    >>> sorted(layer.name for layer in model.layers if "gate" in layer.name)
    ['stage1_block1_gate', 'stage1_block2_gate', 'stage2_block2_gate']

    Reference:
        Veit and Belongie, "Convolutional Networks with Adaptive Inference
        Graphs", ECCV 2018.
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """
    input_shape = _positive_ints("input_shape", input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    _positive_ints("num_classes", (num_classes,))
    widths = _positive_ints("widths", widths)
    blocks_per_stage = _positive_ints("blocks_per_stage", blocks_per_stage)
    if len(blocks_per_stage) != len(widths):
        raise ValueError(
            "`blocks_per_stage` must have one entry per stage, like "
            f"`widths`. Received: widths={widths!r}, "
            f"blocks_per_stage={blocks_per_stage!r}"
        )
    if gating not in GATINGS:
        raise ValueError(
            f"`gating` must be one of {GATINGS}. Received: gating={gating!r}"
        )
    if gating == "channel":
        _positive_ints("channel_groups", (channel_groups,))
        if any(w % channel_groups for w in widths):
            raise ValueError(
                "`channel_groups` must divide every stage width. Received: "
                f"channel_groups={channel_groups!r}, widths={widths!r}"
            )
    if moe_experts is not None:
        _positive_ints("moe_experts", (moe_experts,))
        if moe_experts < 2:
            raise ValueError(
                "`moe_experts` must be None or an int >= 2. "
                f"Received: moe_experts={moe_experts!r}"
            )
    downsampling = 2 ** (len(widths) - 1)
    if min(input_shape[:2]) < downsampling:
        raise ValueError(
            f"`input_shape` {input_shape!r} is too small for {len(widths)} "
            f"stages, which downsample by {downsampling}."
        )
    gate_options = {"target_rate": target_rate, "rate_loss_weight": rate_loss_weight}

    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for layer in _conv_bn(widths[0], 1, "stem"):
        x = layer(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    outputs = []
    for s, (width, blocks) in enumerate(zip(widths, blocks_per_stage), start=1):
        for b in range(1, blocks + 1):
            strides = 2 if s > 1 and b == 1 else 1
            x = _block(
                x,
                width,
                strides,
                gating,
                channel_groups,
                gate_options,
                f"stage{s}_block{b}",
            )
        if exits and s < len(widths):
            outputs.append(EarlyExit(num_classes, name=f"exit_{s}")(x))
    if moe_experts is not None:
        experts = [
            _body(widths[-1], 1, f"moe_expert{k}") for k in range(1, moe_experts + 1)
        ]
        router = Router(
            moe_experts, load_balance_weight=load_balance_weight, name="moe_router"
        )
        routed = mixture_of_experts(x, experts, router=router, name="moe")
        x = keras.layers.Add(name="moe_add")([x, routed])
        x = keras.layers.ReLU(name="moe_out")(x)
    outputs.append(EarlyExit(num_classes, name="final")(x))
    return keras.Model(inputs, outputs if exits else outputs[0], name=name)
