"""Sequence classifiers with an exit per encoder block: export, parity with the
real TFLite interpreter, batch sizes, MACs, and refusals."""

import json

import keras
import numpy as np
import pytest

from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.models import multi_exit_sequence_classifier
from keras_dynamic.runtime.errors import InputError

STEPS, FEATURES = 12, 6


def sequences(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, STEPS, FEATURES)).astype(np.float32)


ENCODERS = {
    "conv1d": dict(encoder="conv1d"),
    "transformer": dict(encoder="transformer", num_heads=2),
    "gru, looped": dict(encoder="gru"),
    "lstm, unrolled": dict(encoder="lstm", unroll=True),
}


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def exported(request, tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = multi_exit_sequence_classifier(
        (STEPS, FEATURES), num_classes=4, width=8, num_blocks=3, **ENCODERS[request.param]
    )
    folder = tmp_path_factory.mktemp("sequence") / "export"
    converters.export_stages(model, folder, parity_samples=sequences(8), verbose=0)
    return request.param, model, folder


def test_every_stage_matches_keras_on_the_interpreter(exported):
    _, model, folder = exported
    x = sequences(20, seed=3)
    expected = dict(zip(model.output_names, model.predict(x, verbose=0)))
    with runtime.load(folder) as chain:
        assert chain.exit_names == ("exit_1", "exit_2", "final")
        values = chain.run_all(x)
    for name, logits in expected.items():
        np.testing.assert_allclose(values[name], logits, atol=2e-5, err_msg=name)


def test_only_looped_recurrent_layers_fix_the_batch(exported):
    name, _, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    batch = {spec["shape"][0] for s in manifest["stages"] for spec in s["inputs"]}
    assert batch == ({1} if name == "gru, looped" else {None})


def test_stage_macs_count_every_time_step(exported):
    name, _, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    block_macs = manifest["stages"][1]["macs"]
    width = 8
    per_step = {
        "conv1d": 5 * width * width,
        "transformer": 4 * width * width + 2 * 2 * width * width,  # projections + FFN
        "gru, looped": 3 * 2 * width * width,
        "lstm, unrolled": 4 * 2 * width * width,
    }[name]
    # The block's weights act on every step (attention scores add more).
    assert block_macs >= STEPS * per_step


def test_patience_runs_on_a_sequence_chain(exported):
    _, _, folder = exported
    x = sequences(10, seed=4)
    patience = {"kind": "patience", "threshold": 1}
    with runtime.load(folder) as chain:
        labels = {n: v.argmax(1) for n, v in chain.run_all(x).items()}
        result = chain.predict(x, policy={"exit_1": patience, "exit_2": patience})
    agree = labels["exit_1"] == labels["exit_2"]
    np.testing.assert_array_equal(result.exit_index, np.where(agree, 1, 2))


def test_a_sequence_of_another_length_is_refused(exported):
    _, _, folder = exported
    with runtime.load(folder) as chain:
        too_long = np.zeros((2, STEPS + 1, FEATURES), np.float32)
        with pytest.raises(InputError, match="sequence"):
            chain.predict(too_long)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(12,)), "steps, features"),
        (dict(encoder="rnn"), "encoder"),
        (dict(num_blocks=1), "num_blocks"),
        (dict(width=10, num_heads=4), "multiple of `num_heads`"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multi_exit_sequence_classifier(**kwargs)
