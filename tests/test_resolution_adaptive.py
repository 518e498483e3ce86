"""The resolution-adaptive CNN: stages at increasing resolution, parity with the
real TFLite interpreter, the coarse stage's cost, and refusals."""

import json

import keras
import numpy as np
import pytest

from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.models import resolution_adaptive_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(2)
    model = resolution_adaptive_cnn((16, 16, 3), scales=(4, 2, 1), widths=(4, 6, 8))
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
    folder = tmp_path_factory.mktemp("resolution") / "export"
    converters.export_stages(model, folder, parity_samples=x, verbose=0)
    return model, folder


def test_every_exit_matches_keras_on_the_interpreter(exported):
    model, folder = exported
    x = np.random.default_rng(1).normal(size=(16, 16, 16, 3)).astype(np.float32)
    expected = dict(zip(model.output_names, model.predict(x, verbose=0)))
    with runtime.load(folder) as chain:
        values = chain.run_all(x)
        # The first stage alone decides images that leave there.
        result = chain.predict(x, policy={"exit_1": {"kind": "max_softmax", "threshold": 0}})
    for name, logits in expected.items():
        np.testing.assert_allclose(values[name], logits, atol=2e-5, err_msg=name)
    np.testing.assert_array_equal(result.labels, expected["exit_1"].argmax(1))
    assert (result.stages_run.sum(axis=1) == 1).all()


def test_each_stage_pools_the_full_image_and_the_coarse_one_is_cheap(exported):
    _, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    stages = manifest["stages"]
    # Every stage reads the model input at full size and pools it itself;
    # the finer ones also read the coarser stage's feature map at every
    # resolution both have (8x8 and 4x4 maps of the 16x16 input's scale 4 into
    # scale 2; 8x8, 4x4 and 2x2 of scale 2 into scale 1).
    assert all("image" in [i["name"] for i in s["inputs"]] for s in stages)
    assert [len(s["inputs"]) for s in stages] == [1, 3, 4]
    shapes = [sorted(i["shape"][1] for i in s["inputs"] if i["name"] != "image") for s in stages]
    assert shapes == [[], [2, 4], [2, 4, 8]]
    macs = [s["macs"] for s in stages]
    assert macs[0] * 10 < macs[2]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scales=(1, 2), widths=(8, 8)), "strictly decreasing"),
        (dict(scales=(4,), widths=(8,)), "at least two"),
        (dict(scales=(4, 2), widths=(8, 8, 8)), "one per scale"),
        (dict(input_shape=(36, 36, 3), scales=(8, 1), widths=(4, 4)), "multiples"),
        (dict(input_shape=(24, 24, 3), scales=(6, 2), widths=(4, 4)), "power of two"),
        (dict(depth=1), "depth"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolution_adaptive_cnn(**kwargs)
