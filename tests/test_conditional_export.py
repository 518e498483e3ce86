"""`export_conditional`: the single IF-op baseline decides as the chain does (real interpreter)."""

import numpy as np
import pytest
from runtime_fixtures import digits_conditional
from runtime_fixtures import digits_export

from keras_dynamic import runtime
from keras_dynamic.runtime.interpreter import interpreter_class
from keras_dynamic.runtime.policy import softmax
from keras_dynamic.runtime.single_model import SingleModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return digits_export(tmp_path_factory)


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    return digits_conditional(tmp_path_factory)


def _if_ops(path):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    codes = [
        max(model.operatorCodes[op.opcodeIndex].builtinCode,
            model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)
        for graph in model.subgraphs for op in graph.operators
    ]
    return codes.count(schema.BuiltinOperator.IF), len(model.subgraphs)


def test_one_if_op_per_early_exit(conditional):
    if_ops, subgraphs = _if_ops(conditional)
    # Two early exits: two IF ops, each with a then and an else branch.
    assert if_ops == 2
    assert subgraphs == 5


@pytest.mark.parametrize("policy", ["manifest", "medians"])
def test_exits_and_labels_match_the_chain(export, conditional, policy):
    chain = runtime.load(export.folder, num_threads=1)
    x = export.x_val[300:]
    if policy == "medians":
        # About each early exit's median top probability, so that all three
        # exits are taken; midway between two observed scores, as calibration
        # chooses, since a score within float32 rounding of its threshold may
        # be decided either way by the IF op (documented in export_conditional).
        values = chain.run_all(x)
        rules = {}
        for name in chain.exit_names[:-1]:
            scores = np.unique(softmax(values[name]).max(1))
            middle = len(scores) // 2
            rules[name] = runtime.ExitRule("max_softmax", float(scores[middle - 1 : middle + 1].mean()))
        chain.set_policy(rules)
    result = chain.predict(x, mode="sample")
    model = SingleModel(conditional, num_threads=1)
    model.set_thresholds(chain.policy, chain.exit_names)
    exits, values = [], []
    for i in range(len(x)):
        v, e = model.run({"image": x[i : i + 1]})
        values.append(v[0])
        exits.append(int(e[0]))
    exits = np.array(exits)
    np.testing.assert_array_equal(exits, result.exit_index)
    np.testing.assert_array_equal(np.array(values).argmax(1), result.labels)
    # The policy really splits the samples between exits (else the test proves little).
    assert len(set(exits.tolist())) >= 2
    # The exit taken gives the chain's own logits for that exit.
    logits = chain.run_all(x)
    for name, slot in zip(chain.exit_names, range(3)):
        rows = exits == slot
        np.testing.assert_allclose(np.array(values)[rows], logits[name][rows], atol=1e-5)


def test_thresholds_are_an_input(export, conditional):
    cls, _ = interpreter_class()
    runner = cls(model_path=str(conditional)).get_signature_runner()
    x = export.x_val[:1]
    assert int(runner(image=x, exit_thresholds=np.zeros(2, np.float32))["exit_index"][0]) == 0
    never = np.full(2, 2.0, np.float32)
    assert int(runner(image=x, exit_thresholds=never)["exit_index"][0]) == 2


def test_refusals(export, tmp_path):
    import keras

    import keras_dynamic as kd
    from keras_dynamic import converters

    inputs = keras.Input((8, 8, 1), name="image")
    single = kd.layers.EarlyExit(10, name="final")(keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="at least one early exit"):
        converters.export_conditional(keras.Model(inputs, single), tmp_path / "a.tflite")
    gated = kd.models.gated_resnet(
        (16, 16, 3), widths=(8, 16), blocks_per_stage=(1, 1), gating="block", name="gated"
    )
    with pytest.raises(ValueError, match="gated or routed stages"):
        converters.export_conditional(gated, tmp_path / "b.tflite")
    assert not list(tmp_path.iterdir())


def test_single_model_refuses_an_entropy_policy(export, conditional):
    chain = runtime.load(export.folder)
    model = SingleModel(conditional)
    entropy = runtime.Policy({"exit_1": runtime.ExitRule("entropy", 0.5), "exit_2": None,
                              "final": None})
    with pytest.raises(ValueError, match="max_softmax only"):
        model.set_thresholds(entropy, chain.exit_names)
