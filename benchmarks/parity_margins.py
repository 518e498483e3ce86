"""How far below its tolerance each exit's parity error is, per quantization.

Exports small multi-exit models (those of the test suite), the demo's network
trained for a few epochs on scikit-learn's digits, and an untrained
keras.applications MobileNetV2 with two early exits, as float32, float16 and
int8, then measures on 64 held-out samples what the parity check measures: the
largest |TFLite - Keras| difference relative to the exit's scale (its largest
|value|), its ratio to the tolerance, and the share of samples whose arg max
agrees. A ratio near 1 would mean the tolerance barely passes; a ratio far
below 1 for float32 and still below 1 for int8 means it is neither tight nor
vacuous. An export the parity check refuses is listed with the check's message.

    python benchmarks/parity_margins.py [--models NAME ...] [--quantize float32 float16 int8]
"""

import argparse
import os
import sys
import tempfile

import numpy as np

MODELS = ("chain_3_skip", "dense_two_inputs", "multi_exit_cnn", "digits_trained", "mobilenet_v2")
QUANTIZE = {"float32": None, "float16": "float16", "int8": "int8"}


def build(name):
    import keras

    import keras_dynamic as kd

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from export_models import chain_model
    from export_models import dense_connection_model

    keras.utils.set_random_seed(0)
    if name == "chain_3_skip":
        return chain_model(3, cross_skip=True), None
    if name == "dense_two_inputs":
        return dense_connection_model(), None
    if name == "multi_exit_cnn":
        return kd.models.multi_exit_cnn((16, 16, 1), num_classes=4, widths=(16, 32, 32)), None
    if name == "digits_trained":
        data = kd.data.load_digits_splits(image_size=32, seed=0)
        model = kd.models.multi_exit_cnn(input_shape=(32, 32, 1), num_classes=10)
        model.compile(
            "adam",
            loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 3,
        )
        model.fit(data.x_train, (data.y_train,) * 3, epochs=3, batch_size=32, verbose=0)
        return model, data.x_val
    base = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
    )
    e1 = kd.layers.EarlyExit(10, name="exit_1")(base.get_layer("block_3_expand_relu").output)
    e2 = kd.layers.EarlyExit(10, name="exit_2")(base.get_layer("block_10_expand_relu").output)
    return keras.Model(base.input, [e1, e2, base.output], name="mobilenet_v2_exits"), None


def random_data(model, count, seed):
    rng = np.random.default_rng(seed)
    arrays = {
        t._keras_history[0].name: rng.random((count, *t.shape[1:]), dtype=np.float32)
        for t in model.inputs
    }
    return arrays if len(arrays) > 1 else next(iter(arrays.values()))


def measure(name, quantize):
    import keras

    import keras_dynamic as kd
    from keras_dynamic import converters
    from keras_dynamic.converters import parity
    from keras_dynamic.converters.partition import exit_names

    model, real = build(name)
    if real is not None:
        calibration, held_out = real[:200], real[200:264]
    else:
        calibration, held_out = random_data(model, 200, 1), random_data(model, 64, 2)
    folder = os.path.join(tempfile.mkdtemp(), "out")
    converters.export_stages(
        model, folder, quantize=quantize, representative_data=calibration, verbose=0
    )
    lite = kd.runtime.load(folder).run_all(held_out)
    args = (
        [held_out[t._keras_history[0].name] for t in model.inputs]
        if isinstance(held_out, dict)
        else held_out
    )
    keras_values = keras.tree.flatten(model(args, training=False))
    rows = []
    for exit_name, value in zip(exit_names(model), keras_values):
        reference = np.asarray(value)
        error, _ = parity.compare(reference, lite[exit_name], quantize)
        agree = float((reference.argmax(1) == lite[exit_name].argmax(1)).mean())
        rows.append((exit_name, float(np.abs(reference).max()), error, agree))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument(
        "--quantize", nargs="+", default=list(QUANTIZE), choices=list(QUANTIZE)
    )
    args = parser.parse_args(argv)
    from keras_dynamic import converters  # noqa: F401  (imports TensorFlow quietly)
    from keras_dynamic.converters import parity

    print("| model | quantize | exit | scale | error / scale | error / tolerance | arg max agrees |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name in args.models:
        for label in args.quantize:
            quantize = QUANTIZE[label]
            try:
                rows = measure(name, quantize)
            except parity.ParityError as error:
                message = str(error).replace("|", "\\|")
                print(f"| {name} | {label} | refused: {message} | | | | |", flush=True)
                continue
            for exit_name, scale, error, agree in rows:
                print(
                    f"| {name} | {label} | {exit_name} | {scale:.3g} | "
                    f"{error:.2e} | {error / parity.TOLERANCE[quantize]:.3f} | {agree:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
