"""What XNNPACK runs of each stage: every signature of a file, the export's line, the CLI."""

import json

import keras
import numpy as np
import pytest
from export_models import chain_model

import keras_dynamic as kd
from keras_dynamic import converters
from keras_dynamic import runtime
from keras_dynamic.cli import main
from keras_dynamic.models import multi_exit_sequence_classifier
from keras_dynamic.runtime.interpreter import interpreter_class
from keras_dynamic.runtime.flatbuffer import tflite_schema
from keras_dynamic.runtime.xnnpack import _with_subgraph_first
from keras_dynamic.runtime.xnnpack import xnnpack_coverage


def _hard_swish_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="hard_swish", name="conv_1")(inputs)
    exit_1 = kd.layers.EarlyExit(4, name="exit_1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="hard_swish", name="conv_2")(x)
    final = kd.layers.EarlyExit(4, name="final")(x)
    return keras.Model(inputs, [exit_1, final], name="hard_swish_chain")


def _images(n=32):
    return np.random.default_rng(0).uniform(size=(n, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def hard_swish_int8(tmp_path_factory):
    """Int8 stages whose HARD_SWISH XNNPACK does not run, in both signatures of one file."""
    folder = tmp_path_factory.mktemp("coverage") / "int8"
    converters.export_stages(
        _hard_swish_model(), folder, quantize="int8", representative_data=_images(), verbose=0
    )
    return folder


def test_every_signature_of_a_file_is_read_not_only_the_first(hard_swish_int8):
    content = (hard_swish_int8 / "stages.tflite").read_bytes()
    for stage in ("stage_1", "stage_2"):  # subgraphs 0 and 1
        coverage = xnnpack_coverage(content, stage)
        assert coverage.left == ("HARD_SWISH",), coverage
        assert (coverage.taken, coverage.total, coverage.partitions) == (4, 5, 2), coverage
        assert not coverage.complete
        assert str(coverage) == (
            "XNNPACK runs 4 of 5 ops in 2 partitions; left to TFLite's kernels: HARD_SWISH"
        )


def test_keep_float_puts_the_whole_stage_on_xnnpack(tmp_path):
    folder = tmp_path / "kept"
    converters.export_stages(
        _hard_swish_model(), folder, quantize="int8", representative_data=_images(),
        keep_float="hard_swish", verbose=0,
    )
    with runtime.load(folder) as chain:
        coverage = chain.xnnpack_coverage()
    assert set(coverage) == {"stage_1", "stage_2"}
    for stage, c in coverage.items():
        assert c.complete and c.partitions == 1 and c.left == (), (stage, c)
        assert str(c) == f"XNNPACK runs {c.total} of {c.total} ops in 1 partition"


def test_the_export_says_which_ops_run_outside_xnnpack(tmp_path, capsys):
    converters.export_stages(
        _hard_swish_model(), tmp_path / "int8", quantize="int8", representative_data=_images()
    )
    out = capsys.readouterr().out
    assert (
        "Ops outside XNNPACK, on TFLite's slower kernels: stage_1 HARD_SWISH (4 of 5 ops on "
        "XNNPACK); stage_2 HARD_SWISH (4 of 5 ops on XNNPACK). See `keep_float`" in out
    ), out
    converters.export_stages(chain_model(2), tmp_path / "float")
    assert "XNNPACK runs every op of every stage." in capsys.readouterr().out


def test_inspect_reports_each_stage(hard_swish_int8, capsys):
    assert main(["inspect", str(hard_swish_int8)]) == 0
    out = capsys.readouterr().out
    assert "stage_2: XNNPACK runs 4 of 5 ops in 2 partitions; left to TFLite's kernels: HARD_SWISH" in out
    assert "note: stage_1, stage_2 run ops on TFLite's own kernels" in out
    assert main(["inspect", str(hard_swish_int8), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["xnnpack"]
    assert report["stage_2"] == {"taken": 4, "total": 5, "partitions": 2, "left": ["HARD_SWISH"]}


def test_bench_reports_the_ops_outside_xnnpack(hard_swish_int8, capsys):
    assert main(["bench", str(hard_swish_int8), "--samples", "8", "--threads", "1",
                 "--batch-sizes", "4", "--rounds", "1", "--no-memory", "--no-progress"]) == 0
    assert (
        "ops outside XNNPACK: stage_1 HARD_SWISH (4 of 5 on XNNPACK); "
        "stage_2 HARD_SWISH (4 of 5 on XNNPACK)" in capsys.readouterr().out
    )


def test_a_stage_calling_other_subgraphs_is_renumbered(tmp_path):
    """A looped GRU is a WHILE op whose body and condition are subgraphs of their own:
    moving a later stage to subgraph 0 must renumber them, and the copy compute the same."""
    keras.utils.set_random_seed(1)
    model = multi_exit_sequence_classifier((6, 3), num_classes=4, width=8, num_blocks=2, encoder="gru")
    x = np.random.default_rng(0).normal(size=(4, 6, 3)).astype(np.float32)
    converters.export_stages(model, tmp_path / "gru", parity_samples=x, verbose=0)
    content = (tmp_path / "gru" / "stages.tflite").read_bytes()
    cls, _ = interpreter_class()
    original = cls(model_content=content)
    index = original._interpreter.GetSubgraphIndexFromSignature("stage_2")
    assert index > 0
    moved = cls(model_content=_with_subgraph_first(tflite_schema(), content, index))
    assert moved._interpreter.GetSubgraphIndexFromSignature("stage_2") == 0
    inputs = {
        name: np.random.default_rng(2).normal(size=[1, *detail["shape"][1:]]).astype(np.float32)
        for name, detail in original.get_signature_runner("stage_2").get_input_details().items()
    }
    want = original.get_signature_runner("stage_2")(**inputs)
    got = moved.get_signature_runner("stage_2")(**inputs)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    coverage = xnnpack_coverage(content, "stage_2")
    assert "WHILE" in coverage.left, coverage


def test_a_signature_must_exist_and_be_named_where_there_are_several(hard_swish_int8):
    content = (hard_swish_int8 / "stages.tflite").read_bytes()
    with pytest.raises(ValueError, match=r"no signature 'stage_3'; it has \['stage_1', 'stage_2'\]"):
        xnnpack_coverage(content, "stage_3")
    with pytest.raises(ValueError, match="has 2 signatures .* name one with `signature`"):
        xnnpack_coverage(content)
