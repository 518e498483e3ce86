"""Stage placement on LiteRT accelerators: fallback, strict placement, the CompiledModel runner."""

import logging

import numpy as np
import pytest
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime.accelerators import CompiledStageRunner
from keras_dynamic.runtime.accelerators import compile_for

pytest.importorskip("ai_edge_litert.compiled_model")

# GPU kernels compute in float16: logits agree with the CPU's to about this.
FLOAT16_ATOL = 5e-2


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def cpu_chain(export):
    return runtime.load(export.folder, num_threads=1)


def _gpu_starts(export):
    content = (export.folder / "stages.tflite").read_bytes()
    return compile_for(content, "gpu")[0] is not None


def test_gpu_runs_or_falls_back_to_the_cpu_visibly(export, cpu_chain, caplog):
    with caplog.at_level(logging.WARNING, logger="keras_dynamic.runtime"):
        chain = runtime.load(export.folder, accelerator="gpu")
    placement = chain.placement
    assert set(placement) == set(chain.stage_names)
    assert all(p.requested == "gpu" for p in placement.values())
    expected = cpu_chain.run_all(export.x_val)
    got = chain.run_all(export.x_val)
    if all(p.device == "gpu" for p in placement.values()):
        for name in chain.exit_names:
            np.testing.assert_allclose(got[name], expected[name], atol=FLOAT16_ATOL)
    else:
        # No GPU here (CI): every stage fell back, said so, and computes the CPU's numbers.
        fallen = [n for n, p in placement.items() if p.device == "cpu"]
        assert fallen
        for name in fallen:
            assert placement[name].reason
            assert f"stage {name!r}" in caplog.text
        assert "runs on the CPU instead" in caplog.text
        for name in chain.exit_names:
            np.testing.assert_array_equal(got[name], expected[name])
        assert "placement: stage_1 on cpu (asked gpu:" in chain.summary_text()


def test_strict_placement_raises_where_the_gpu_cannot_take_a_stage(export):
    if _gpu_starts(export):
        pytest.skip("a GPU accelerator starts here: nothing to refuse")
    with pytest.raises(runtime.AcceleratorError, match="strict_placement=True forbids"):
        runtime.load(export.folder, accelerator={"stage_2": "gpu"}, strict_placement=True)


def test_per_stage_placement_leaves_the_others_on_the_cpu(export):
    chain = runtime.load(export.folder, accelerator={"stage_3": "npu"})
    assert chain.placement["stage_1"].requested == "cpu"
    assert chain.placement["stage_3"].requested == "npu"
    assert chain.placement["stage_1"].device == "cpu"


def test_the_compiled_model_runner_matches_the_interpreter(export, cpu_chain):
    # LiteRT's CompiledModel on its CPU accelerator: the runner GPU and NPU
    # stages use, checked here against the interpreter on every stage.
    model, reason = compile_for((export.folder / "stages.tflite").read_bytes(), "cpu")
    assert model is not None, reason
    stages = {s["name"]: s for s in cpu_chain.manifest["stages"]}
    runners = {name: CompiledStageRunner(model, stages[name]) for name in cpu_chain.stage_names}
    for batch in (1, 5, 1):  # a batch size change resizes, and back again
        board = {"image": export.x_val[:batch]}
        reference = dict(board)
        for name in cpu_chain.stage_names:
            produced = runners[name].run(board)
            expected = cpu_chain._runners[cpu_chain.stage_names.index(name)].run(reference)
            assert set(produced) == set(expected)
            for key in expected:
                np.testing.assert_allclose(produced[key], expected[key], rtol=1e-5, atol=1e-5)
            board.update(produced)
            reference.update(expected)


def test_bad_placement_arguments(export):
    with pytest.raises(ValueError, match="must be one of \\('cpu', 'gpu', 'npu'\\)"):
        runtime.load(export.folder, accelerator="tpu")
    with pytest.raises(ValueError, match="unknown stage\\(s\\) \\['stage_9'\\]"):
        runtime.load(export.folder, accelerator={"stage_9": "gpu"})
    with pytest.raises(TypeError, match="`accelerator` must be"):
        runtime.load(export.folder, accelerator=3)
    with pytest.raises(TypeError, match="`strict_placement` must be a bool"):
        runtime.load(export.folder, strict_placement="yes")


def test_default_placement_is_the_cpu_interpreter(cpu_chain):
    assert all(p.device == "cpu" and p.requested == "cpu" for p in cpu_chain.placement.values())
    assert "placement:" not in cpu_chain.summary_text()
