"""Small multi-exit models shared by the converter tests (not a test module)."""

import keras

import keras_dynamic as kd


def chain_model(num_exits, cross_skip=False, name=None):
    """A conv chain with `num_exits` exits; optionally a skip crossing all of them.

    With `cross_skip`, the first conv's output (not the trunk, which goes
    on through `conv_1b`) is added to the input of the last block, so it
    crosses every exit between them: the stage that makes
    it must output it and the last stage must take it.
    """
    inputs = keras.Input((12, 12, 2), name="image")
    first = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_1b")(first)
    outputs = []
    for index in range(1, num_exits + 1):
        if index > 1:
            x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name=f"conv_{index}")(x)
        if cross_skip and index == num_exits and num_exits > 1:
            x = keras.layers.Add(name="cross_skip")([first, x])
        exit_name = "final" if index == num_exits else f"exit_{index}"
        outputs.append(kd.layers.EarlyExit(5, name=exit_name)(x))
    return keras.Model(inputs, outputs, name=name or f"chain_{num_exits}")


def dense_connection_model():
    """Two inputs, a dense-style concatenation and an exit with a hidden layer."""
    image = keras.Input((10, 10, 3), name="image")
    extra = keras.Input((4,), name="extra")
    a = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(image)
    e1 = kd.layers.EarlyExit(3, hidden_units=8, pooling="max", name="exit_1")(a)
    b = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(a)
    e2 = kd.layers.EarlyExit(3, name="exit_2")(b)
    c = keras.layers.Concatenate(name="dense_concat")([a, b])
    c = keras.layers.Conv2D(4, 3, padding="same", name="conv_c")(c)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(c)
    mixed = keras.layers.Concatenate(name="with_extra")([pooled, extra])
    final = keras.layers.Dense(3, name="final")(mixed)
    return keras.Model([image, extra], [e1, e2, final], name="dense_connection")
