"""Glance and Focus: the chosen crop's stage alone runs, decisions and exits match
Keras on the real TFLite interpreter, and bad crops are refused."""

import json

import keras
import numpy as np
import pytest

from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.models import glance_and_focus_cnn

SHAPE = (16, 16, 3)


def images(n, seed):
    # Each image with its own contrast and brightness, so that the policy's
    # pooled features differ from image to image and every crop is chosen.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *SHAPE)) * rng.uniform(0.2, 3, (n, 1, 1, 1))
    return (x + rng.normal(0, 1, (n, 1, 1, 1))).astype(np.float32)


def _every_crop_chosen(model, x):
    policy = keras.Model(model.input, model.get_layer("crop_policy").output)
    return len(set(np.argmax(policy.predict(x, verbose=0), axis=1).tolist())) == 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    x = images(64, seed=0)
    for seed in range(20):
        keras.utils.set_random_seed(seed)
        model = glance_and_focus_cnn(SHAPE, 4, crop_size=8, glance_widths=(4,),
                                     focus_widths=(6,))
        kernel = model.get_layer("crop_policy").weights[0]
        kernel.assign(np.random.default_rng(seed).normal(0, 3, kernel.shape))
        if _every_crop_chosen(model, x):
            break
    folder = tmp_path_factory.mktemp("glance") / "export"
    converters.export_stages(model, folder, parity_samples=x[:8], verbose=0)
    return model, folder, x


def test_the_export_is_a_glance_a_policy_and_one_stage_per_crop(exported):
    _, folder, _ = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert [r["name"] for r in manifest["routes"]] == ["crop_policy"]
    crop_stages = [s for s in manifest["stages"] if any("focus" in o["name"] for o in s["outputs"])]
    assert len(crop_stages) == 5
    # Each crop stage reads the full image and slices its own crop.
    assert all([i["name"] for i in s["inputs"]] == ["image"] for s in crop_stages)


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_only_the_chosen_crop_runs_and_the_answers_match_keras(exported, mode):
    model, folder, x = exported
    glance_logits, final_logits = model.predict(x, verbose=0)
    policy = keras.Model(model.input, model.get_layer("crop_policy").output)
    chosen = policy.predict(x, verbose=0).argmax(axis=1)
    never = {"glance": None}
    with runtime.load(folder) as chain:
        result = chain.predict(x, mode=mode, policy=never)
        np.testing.assert_array_equal(result.routes["crop_policy"], chosen)
        np.testing.assert_array_equal(result.labels, final_logits.argmax(1))
        crop_positions = [
            i for i, name in enumerate(chain.stage_names)
            if any("focus" in o["name"] for o in chain.manifest["stages"][i]["outputs"])
        ]
        ran = result.stages_run[:, crop_positions]
        np.testing.assert_array_equal(ran.sum(axis=1), np.ones(len(x)))
        np.testing.assert_array_equal(ran.argmax(axis=1), chosen)
        # An image that leaves at the glance runs no crop at all.
        out = chain.predict(x, mode=mode, policy={"glance": {"kind": "max_softmax", "threshold": 0}})
        np.testing.assert_array_equal(out.labels, glance_logits.argmax(1))
        assert not out.stages_run[:, crop_positions].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crops=[(0, 0), (13, 0)]), "crop 1 \\(13, 0\\)"),
        (dict(crops=[(0, 0), (0, -1)]), "crop 1"),
        (dict(crops=[(0, 0)]), "at least two"),
        (dict(crop_size=40), "crop_size"),
        (dict(glance_scale=3), "multiples of glance_scale"),
    ],
)
def test_bad_crops_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glance_and_focus_cnn((32, 32, 3), crop_size=kwargs.pop("crop_size", 20), **kwargs)
