"""Training-step time of a small CNN with dynamic convolutions vs Conv2D.

Builds the same CNN three times (static Conv2D, CondConv2D, DynamicConv2D),
times `train_on_batch` side by side in one process, interleaving the models
round by round so that machine noise hits all of them alike, and prints the
median step time and the ratio to the static CNN.

    .venv/bin/python benchmarks/dynamic_conv_train_step.py [--batch 64] [--steps 60]

Any Keras backend (`KERAS_BACKEND=jax ...`). `--training-form` overrides the
layers' own choice between one grouped convolution (`mix_kernels`), the K
expert convolutions (`mix_outputs`) and image patches times the mixed kernel
in one batched matmul (`patch_matmul`) in training, to measure the others.

`build_cnn` is shared with `dynamic_conv_cifar.py`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras  # noqa: E402
from keras_dynamic.layers import CondConv2D  # noqa: E402
from keras_dynamic.layers import DynamicConv2D  # noqa: E402
from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase  # noqa: E402

KINDS = ("static", "condconv", "dyconv")


def make_conv(kind, filters, num_experts=4):
    """A 3x3 'same' convolution of the given kind, without bias (BN follows)."""
    if kind == "static":
        return keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
    if kind == "condconv":
        return CondConv2D(
            filters, 3, num_experts=num_experts, padding="same", use_bias=False
        )
    if kind == "dyconv":
        return DynamicConv2D(
            filters, 3, num_experts=num_experts, padding="same", use_bias=False
        )
    raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")


def build_cnn(kind, width=32, input_shape=(32, 32, 3), num_classes=10, seed=0):
    """A 5-conv CIFAR-size CNN; every conv but the RGB stem is of `kind`.

    The stem stays a static Conv2D as in the DyConv paper: on 3 input channels
    the routing has nothing to work with and the layer is cheap anyway.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for i, filters in enumerate((width, 2 * width, 2 * width, 4 * width)):
        if i in (1, 3):
            x = keras.layers.MaxPooling2D()(x)
        x = make_conv(kind, filters)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name=f"cnn_{kind}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument(
        "--training-form",
        choices=("auto", "mix_kernels", "mix_outputs", "patch_matmul"),
        default="auto",
    )
    args = parser.parse_args()
    if args.training_form != "auto":
        form = args.training_form
        DynamicConvBase._form = lambda self, training: (
            form if training else self.inference_form
        )

    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    models = {}
    for kind in KINDS:
        model = build_cnn(kind, width=args.width)
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for _ in range(5):  # trace and warm up
            model.train_on_batch(x, y)
        models[kind] = model
    times = {kind: [] for kind in KINDS}
    for _ in range(args.steps):
        for kind, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[kind].append(time.perf_counter() - start)
    base = np.median(times["static"])
    print(
        f"{keras.backend.backend()}: train step, batch {args.batch}, width "
        f"{args.width}, training form {args.training_form}, median of "
        f"{args.steps} steps (interleaved):"
    )
    for kind in KINDS:
        median = np.median(times[kind])
        print(f"  {kind:9s} {median * 1e3:8.2f} ms   {median / base:5.2f}x static")


if __name__ == "__main__":
    main()
