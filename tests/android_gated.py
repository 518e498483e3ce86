"""A real export with gates and routes for the JVM core's cross-language check (not a test module).

A small untrained network on scikit-learn's digits (8x8, each image with its own contrast
and brightness, so that the pooled features the decisions read differ from image to
image): a gated residual block
(`BlockGate`), an early exit, a channel-gated convolution over two groups
(`ChannelGate`) and a top-1 router over three experts (`Router`), exported by
`converters.export_stages` as manifest version 2. Its decision layers get random weights
of a large scale, the first seed under which every gate column is on for some images and
off for others and every expert is chosen, so that the traced walks take every path.
"""

import dataclasses
import pathlib

import numpy as np

NUM_SAMPLES = 96
DECISION_NAMES = ("block1_gate", "cg_gate", "moe_router")


@dataclasses.dataclass(frozen=True)
class GatedExport:
    folder: pathlib.Path
    x: np.ndarray  # (NUM_SAMPLES, 8, 8, 1) float32 digits, rescaled per image


def _model():
    import keras

    import keras_dynamic as kd

    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    body = [keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="body1")]
    x = kd.models.gated_residual(x, body, name="block1")
    exit_1 = kd.layers.EarlyExit(10, name="exit_1")(x)
    x = kd.models.channel_gated_conv2d(x, 8, 3, groups=2, activation="relu", name="cg")
    experts = [keras.layers.Conv2D(8, 3, padding="same", name=f"expert{k}") for k in range(3)]
    x = kd.models.mixture_of_experts(x, experts, name="moe")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    final = keras.layers.Dense(10, name="final")(x)
    return keras.Model(inputs, [exit_1, final], name="gated_digits")


def _decisions(model, x):
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in DECISION_NAMES])
    gate, groups, router = (np.asarray(v) for v in probe(x, training=False))
    return gate > 0.5, groups > 0.5, router.argmax(1)


def _every_path(model, x):
    gate, groups, route = _decisions(model, x)
    columns = np.concatenate([gate, groups], axis=1)
    return bool((columns.any(0) & ~columns.all(0)).all()) and set(route.tolist()) == {0, 1, 2}


def _randomize_decisions(model, x):
    import keras_dynamic as kd

    layers = [
        layer for layer in model.layers
        if isinstance(layer, (kd.layers.BlockGate, kd.layers.ChannelGate, kd.layers.Router))
    ]
    for seed in range(200):
        rng = np.random.default_rng(seed)
        for layer in layers:
            for variable in layer.trainable_weights:
                zero = variable.path.endswith(("bias", "beta"))
                value = np.zeros(variable.shape) if zero else rng.normal(0, 1.0, variable.shape)
                variable.assign(value.astype("float32"))
        if _every_path(model, x):
            return
    raise AssertionError("no seed takes every path")


def gated_export(folder):
    """Builds and exports the network into ``folder``/export; returns a `GatedExport`."""
    from sklearn.datasets import load_digits

    from keras_dynamic import converters

    images = load_digits().images[:NUM_SAMPLES, :, :, None] / 16.0
    rng = np.random.default_rng(1)
    contrast = rng.uniform(0.2, 3, (NUM_SAMPLES, 1, 1, 1))
    brightness = rng.normal(0, 1, (NUM_SAMPLES, 1, 1, 1))
    x = (images * contrast + brightness).astype(np.float32)
    model = _model()
    _randomize_decisions(model, x)
    manifest = converters.export_stages(
        model, pathlib.Path(folder) / "export", parity_samples=x, verbose=0
    )
    return GatedExport(pathlib.Path(manifest).parent, x)
