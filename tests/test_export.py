"""export_stages end to end: files, manifest, parity through the real interpreter."""

import json
import os

import keras
import numpy as np
import pytest

from keras_dynamic import converters
import keras_dynamic as kd
from keras_dynamic.converters import ConversionError
from keras_dynamic.converters import PartitionError
from export_models import chain_model
from export_models import dense_connection_model

RNG = np.random.default_rng(1)


def _inputs(model, count=6):
    arrays = {
        t._keras_history[0].name: RNG.standard_normal((count, *t.shape[1:])).astype(np.float32)
        for t in model.inputs
    }
    return arrays if len(arrays) > 1 else next(iter(arrays.values()))


def _keras_exits(model, x):
    args = x if not isinstance(x, dict) else [x[t._keras_history[0].name] for t in model.inputs]
    outputs = model(args, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {t._keras_history[0].name: np.asarray(o) for t, o in zip(model.outputs, outputs)}


MODELS = {
    "1_exit": lambda: chain_model(1),
    "2_exits": lambda: chain_model(2),
    "3_exits_cross_skip": lambda: chain_model(3, cross_skip=True),
    "4_exits_cross_skip": lambda: chain_model(4, cross_skip=True),
    "dense_two_inputs": dense_connection_model,
    "multi_exit_cnn": lambda: kd.models.multi_exit_cnn((16, 16, 1), num_classes=4, widths=(4, 8, 8), cross_exit_skip=True),
}


@pytest.mark.parametrize("layout", ["signatures", "files"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_exit_matches_keras_in_the_tflite_interpreter(tmp_path, model_name, layout):
    model = MODELS[model_name]()
    manifest_path = converters.export_stages(model, tmp_path / "out", layout=layout)
    chain = kd.runtime.load(os.path.dirname(manifest_path))
    x = _inputs(model)
    lite = chain.run_all(x)
    expected = _keras_exits(model, x)
    assert set(lite) == set(expected)
    for name, logits in expected.items():
        # Stated tolerance: float32 kernels differ only in summation order.
        np.testing.assert_allclose(lite[name], logits, rtol=1e-4, atol=1e-5, err_msg=name)


def test_manifest_describes_the_files_and_the_chain(tmp_path):
    model = chain_model(3, cross_skip=True)
    path = converters.export_stages(model, tmp_path / "out")
    folder = os.path.dirname(path)
    manifest = json.loads(open(path).read())
    assert sorted(os.listdir(folder)) == ["manifest.json", "stages.tflite"]
    assert [f["path"] for f in manifest["files"]] == ["stages.tflite"]
    assert [s["name"] for s in manifest["stages"]] == ["stage_1", "stage_2", "stage_3"]
    assert [e["name"] for e in manifest["exits"]] == ["exit_1", "exit_2", "final"]
    assert manifest["exits"][0]["policy"] == {"kind": "max_softmax", "threshold": 0.9}
    assert manifest["exits"][-1]["policy"] is None
    assert [s["next"] for s in manifest["stages"]] == [
        [{"stage": "stage_2", "when": "always"}],
        [{"stage": "stage_3", "when": "always"}],
        [],
    ]
    stage_3_inputs = {t["name"] for t in manifest["stages"][2]["inputs"]}
    assert stage_3_inputs == {"conv_1", "conv_2"}
    # The first stage alone (a 2->6 and a 6->6 3x3 conv on 12x12) is 7776 + 46656
    # MACs plus its exit head (a 6->32 stride-2 3x3 conv, 62208, and a dense
    # layer on the 6x6x32 grid, 5760); the profiler adds bias/activation flops.
    assert 122_400 <= manifest["stages"][0]["macs"] < 140_000
    assert all(s["macs"] > 0 for s in manifest["stages"])


def test_files_layout_writes_one_file_per_stage(tmp_path):
    path = converters.export_stages(chain_model(2), tmp_path / "out", layout="files")
    assert sorted(os.listdir(os.path.dirname(path))) == [
        "manifest.json",
        "stage_1.tflite",
        "stage_2.tflite",
    ]


@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_exports_pass_their_parity_check(tmp_path, quantize):
    # Wide enough that weights, not flatbuffer overhead, dominate the file.
    model = kd.models.multi_exit_cnn((16, 16, 1), num_classes=4, widths=(16, 32, 32))
    data = RNG.random((32, 16, 16, 1), dtype=np.float32)
    path = converters.export_stages(
        model, tmp_path / quantize, quantize=quantize, representative_data=data
    )
    manifest = json.loads(open(path).read())
    assert manifest["quantization"] == quantize
    plain = converters.export_stages(model, tmp_path / "plain")
    assert os.path.getsize(os.path.join(os.path.dirname(path), "stages.tflite")) < 0.75 * os.path.getsize(
        os.path.join(os.path.dirname(plain), "stages.tflite")
    )


def test_existing_folder_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    converters.export_stages(chain_model(2), out)
    with pytest.raises(FileExistsError, match="already exists"):
        converters.export_stages(chain_model(3), out)
    assert len(json.loads((out / "manifest.json").read_text())["stages"]) == 2
    converters.export_stages(chain_model(3), out, overwrite=True)
    assert len(json.loads((out / "manifest.json").read_text())["stages"]) == 3
    assert sorted(os.listdir(tmp_path)) == ["out"]


class _Determinant(keras.layers.Layer):
    """No builtin TFLite kernel exists for MatrixDeterminant."""

    def call(self, x):
        import tensorflow as tf

        return tf.linalg.det(tf.reshape(x, (-1, 2, 2)))[:, None] * tf.ones_like(x[:, :1])


def test_unconvertible_layer_names_the_stage_and_leaves_nothing(tmp_path):
    inputs = keras.Input((4,), name="features")
    e1 = kd.layers.EarlyExit(2, pooling=None, name="exit_1")(inputs)
    odd = _Determinant(name="determinant")(inputs)
    final = kd.layers.EarlyExit(2, pooling=None, name="final")(keras.layers.Concatenate()([inputs, odd]))
    model = keras.Model(inputs, [e1, final])
    with pytest.raises(ConversionError, match=r"'stage_2'.*determinant"):
        converters.export_stages(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_unsplittable_model_leaves_nothing(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(PartitionError):
        converters.export_stages(model, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_parity_failure_is_loud_and_leaves_nothing(tmp_path, monkeypatch):
    from keras_dynamic.converters import parity

    # Make the Keras reference disagree with the converted stages: the check
    # must raise rather than write a silently wrong export.
    monkeypatch.setitem(parity.TOLERANCE, None, -1.0)
    with pytest.raises(converters.ParityError, match="exit_1"):
        converters.export_stages(chain_model(2), tmp_path / "out")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantize": "int4"}, "quantize"),
        ({"quantize": "int8"}, "representative_data"),
        ({"layout": "zip"}, "layout"),
        ({"exit_policy": "margin"}, "exit_policy"),
        ({"exit_threshold": float("nan")}, "exit_threshold"),
        ({"exit_threshold": True}, "exit_threshold"),
        ({"verbose": "yes"}, "verbose"),
    ],
)
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        converters.export_stages(chain_model(2), tmp_path / "out", **kwargs)
    assert os.listdir(tmp_path) == []


def test_overwrite_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match="overwrite"):
        converters.export_stages(chain_model(2), tmp_path / "out", overwrite="yes")


def test_export_static_matches_the_final_exit(tmp_path):
    from keras_dynamic.runtime.interpreter import interpreter_class

    model = chain_model(3, cross_skip=True)
    path = converters.export_static(model, str(tmp_path / "static.tflite"))
    interpreter_class_, _ = interpreter_class()
    interpreter = interpreter_class_(model_path=path)
    runner = interpreter.get_signature_runner("serving_default")
    x = _inputs(model)
    got = runner(image=x)["final"]
    np.testing.assert_allclose(got, _keras_exits(model, x)["final"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no output named 'nope'"):
        converters.export_static(model, str(tmp_path / "x.tflite"), output="nope")


@pytest.mark.parametrize("form", ["mix_outputs", "mix_kernels", "patch_matmul"])
def test_dynamic_convolutions_export_in_either_form(tmp_path, form):
    inputs = keras.Input((12, 12, 3), name="image")
    x = kd.layers.CondConv2D(6, 3, padding="same", num_experts=3, name="cond")(inputs)
    e1 = kd.layers.EarlyExit(4, name="exit_1")(x)
    y = kd.layers.DynamicConv2D(6, 3, padding="same", num_experts=4, name="dyconv")(x)
    y = kd.layers.DepthwiseCondConv2D(3, padding="same", num_experts=2, name="dwcond")(y)
    final = kd.layers.EarlyExit(4, name="final")(y)
    model = keras.Model(inputs, [e1, final])
    path = converters.export_stages(model, tmp_path / "out", dynamic_conv_form=form)
    chain = kd.runtime.load(os.path.dirname(path))
    x = _inputs(model, count=3)
    lite = chain.run_all(x)
    for name, logits in _keras_exits(model, x).items():
        np.testing.assert_allclose(lite[name], logits, rtol=1e-4, atol=1e-5, err_msg=name)
    # The context manager restored the layers' own form after the export.
    assert model.get_layer("cond").inference_form == "mix_outputs"
