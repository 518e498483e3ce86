"""Gates and routers exported as conditional stages, run by the real interpreter.

One model holds an exit, a block gate, a channel gate over two groups and a
top-1 router over three experts. Its decision layers get random weights of a
large scale, so that gates and routes differ from sample to sample and every
path is taken. The export's own parity check compares the walked chain
(each branch run only for the samples that choose it) with Keras; the tests
add what that check does not see: which stages ran, how often each was
invoked, batch against sample mode, forced gates, bad graphs.
"""

import copy
import json

import numpy as np
import pytest
from runtime_fixtures import digits

keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("export needs the TensorFlow backend", allow_module_level=True)

import keras_dynamic as kd  # noqa: E402
from keras_dynamic import converters  # noqa: E402
from keras_dynamic import runtime  # noqa: E402
from keras_dynamic.converters import parity  # noqa: E402
from keras_dynamic.converters.partition import PartitionError  # noqa: E402
from keras_dynamic.converters.partition import partition  # noqa: E402
from keras_dynamic.runtime import ManifestError  # noqa: E402

NEVER_EXIT = {"exit_1": {"kind": "max_softmax", "threshold": 1.0}}


def _gated_model():
    keras.utils.set_random_seed(3)
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
    return keras.Model(inputs, [exit_1, final], name="gated")


def _mixed(model, x):
    gate, groups, route = _decisions(model, x)
    return (
        0 < gate.mean() < 1
        and all(0 < groups[:, j].mean() < 1 for j in range(2))
        and set(route.tolist()) == {0, 1, 2}
    )


def _randomize_decisions(model, x):
    """Random decision weights, the first seed that takes every path on `x`."""
    decision_layers = [
        layer for layer in model.layers
        if isinstance(layer, (kd.layers.BlockGate, kd.layers.ChannelGate, kd.layers.Router))
    ]
    for seed in range(200):
        rng = np.random.default_rng(seed)
        for layer in decision_layers:
            for variable in layer.trainable_weights:
                zero = variable.path.endswith(("bias", "beta"))
                value = np.zeros(variable.shape) if zero else rng.normal(0, 1.0, variable.shape)
                variable.assign(value.astype("float32"))
        if _mixed(model, x):
            return
    raise AssertionError("no seed takes every path")


def _decisions(model, x):
    names = ["block1_gate", "cg_gate", "moe_router"]
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    gate, groups, router = (np.asarray(v) for v in probe(x, training=False))
    return gate > 0.5, groups > 0.5, router.argmax(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _gated_model()
    rng = np.random.default_rng(1)
    # Samples of different scales and offsets, so that the pooled features
    # the decisions read differ from sample to sample.
    x = rng.normal(size=(64, 8, 8, 1)) * rng.uniform(0.2, 3, (64, 1, 1, 1))
    x = (x + rng.normal(0, 1, (64, 1, 1, 1))).astype("float32")
    _randomize_decisions(model, x)
    folder = tmp_path_factory.mktemp("gated") / "export"
    converters.export_stages(model, folder, parity_samples=x, verbose=0)
    return model, x, folder


def test_every_path_is_taken(exported):
    model, x, _ = exported
    gate, groups, route = _decisions(model, x)
    assert 0 < gate.mean() < 1
    assert all(0 < groups[:, j].mean() < 1 for j in range(2))
    assert set(route.tolist()) == {0, 1, 2}


def test_manifest_records_gates_routes_and_conditional_edges(exported):
    _, _, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert {"gates", "routes"} <= set(manifest["features"])
    assert [(g["name"], g["groups"]) for g in manifest["gates"]] == [("block1_gate", 1), ("cg_gate", 2)]
    assert [(r["name"], r["experts"]) for r in manifest["routes"]] == [("moe_router", 3)]
    conditions = [
        edge["when"] for stage in manifest["stages"] for edge in stage["next"]
        if edge["when"] != "always"
    ]
    assert conditions == [
        {"gate": "block1_gate", "index": 0},
        {"gate": "cg_gate", "index": 0},
        {"gate": "cg_gate", "index": 1},
        {"route": "moe_router", "index": 0},
        {"route": "moe_router", "index": 1},
        {"route": "moe_router", "index": 2},
    ]


def _branch_stages(chain):
    """{(kind, name, index): stage position} of the conditional stages."""
    position = {name: i for i, name in enumerate(chain.stage_names)}
    found = {}
    for stage in chain.manifest["stages"]:
        for edge in stage["next"]:
            when = edge["when"]
            if when != "always":
                kind = "gate" if "gate" in when else "route"
                found[(kind, when[kind], when["index"])] = position[edge["stage"]]
    return found


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_runtime_decides_as_keras_and_runs_only_the_chosen_branches(exported, mode):
    model, x, folder = exported
    chain = runtime.load(folder)
    result = chain.predict(x, mode=mode, policy=NEVER_EXIT)
    assert (result.exit_index == 1).all()
    gate, groups, route = _decisions(model, x)
    np.testing.assert_array_equal(result.gates["block1_gate"][:, 0], gate[:, 0])
    np.testing.assert_array_equal(result.gates["cg_gate"], groups)
    np.testing.assert_array_equal(result.routes["moe_router"], route)
    branches = _branch_stages(chain)
    expected = {
        ("gate", "block1_gate", 0): gate[:, 0],
        ("gate", "cg_gate", 0): groups[:, 0],
        ("gate", "cg_gate", 1): groups[:, 1],
        **{("route", "moe_router", k): route == k for k in range(3)},
    }
    for key, position in branches.items():
        np.testing.assert_array_equal(result.stages_run[:, position], expected[key], err_msg=str(key))
    unconditional = sorted(set(range(len(chain.stage_names))) - set(branches.values()))
    assert result.stages_run[:, unconditional].all()
    stage_macs = np.array([s["macs"] for s in chain.manifest["stages"]])
    np.testing.assert_array_equal(result.macs, result.stages_run @ stage_macs)
    assert result.macs.max() < chain.total_macs
    # The answer is the model's own.
    logits = np.asarray(model(x, training=False)[1])
    np.testing.assert_allclose(
        result.probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(logits)), atol=1e-5
    )


def _count_invocations(chain):
    rows = {name: 0 for name in chain.stage_names}
    for name, runner in zip(chain.stage_names, chain._runners):
        original = runner.run

        def counting(board, original=original, name=name, runner=runner):
            rows[name] += len(board[runner.inputs[0]])
            return original(board)

        runner.run = counting
    return rows


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_a_skipped_stage_is_never_invoked(exported, mode):
    _, x, folder = exported
    chain = runtime.load(folder)
    rows = _count_invocations(chain)
    result = chain.predict(x, mode=mode, policy=NEVER_EXIT)
    assert [rows[name] for name in chain.stage_names] == result.stages_run.sum(axis=0).tolist()


def test_batch_mode_equals_sample_mode_on_mixed_paths_with_exits(exported):
    _, x, folder = exported
    chain = runtime.load(folder)
    logits = chain.run_all(x)["exit_1"]
    confidence = runtime.policy.softmax(logits).max(axis=1)
    policy = {"exit_1": {"kind": "max_softmax", "threshold": float(np.median(confidence))}}
    batch = chain.predict(x, policy=policy)
    sample = chain.predict(x, mode="sample", policy=policy)
    assert 0 < (batch.exit_index == 0).sum() < len(x)  # some leave early
    for field in ("exit_index", "stages_run", "macs"):
        np.testing.assert_array_equal(getattr(batch, field), getattr(sample, field), err_msg=field)
    for name in batch.gates:
        np.testing.assert_array_equal(batch.gates[name], sample.gates[name])
    np.testing.assert_array_equal(batch.routes["moe_router"], sample.routes["moe_router"])
    np.testing.assert_allclose(batch.probabilities, sample.probabilities, atol=1e-6)
    # A sample that left at exit_1 reached no later gate or route.
    left = batch.exit_index == 0
    assert (batch.routes["moe_router"][left] == -1).all()
    assert not batch.gates["cg_gate"][left].any()
    assert not batch.stages_run[left][:, 3:].any()


def test_calibrate_uses_the_per_sample_cost_of_gated_paths(exported):
    model, x, folder = exported
    chain = runtime.load(folder)
    y = np.asarray(model(x, training=False)[1]).argmax(1)
    values, stages_run, _ = chain._run_all(x, None, None)
    costs = chain.exit_costs(stages_run)
    assert costs.shape == (2, len(x))
    assert len(np.unique(costs[1])) > 1  # gates make the final cost vary
    policy = chain.calibrate(x, y, max_accuracy_drop=0.05)
    assert set(policy.rules) == {"exit_1", "final"}


@pytest.mark.parametrize("force", ["on", "off"])
def test_forced_gates_export_with_parity(exported, tmp_path, force):
    model, x, _ = exported
    with kd.layers.force_gates(model, force):
        converters.export_stages(model, tmp_path / force, parity_samples=x, verbose=0)
        reference = np.asarray(model(x, training=False)[1])
    chain = runtime.load(tmp_path / force)
    result = chain.predict(x, policy=NEVER_EXIT)
    np.testing.assert_allclose(
        result.probabilities, keras.ops.convert_to_numpy(keras.ops.softmax(reference)), atol=1e-5
    )
    gate_stages = [p for (kind, _, _), p in _branch_stages(chain).items() if kind == "gate"]
    assert result.stages_run[:, gate_stages].all() == (force == "on")
    assert result.stages_run[:, gate_stages].any() == (force == "on")


def test_a_model_without_gates_writes_version_1(tmp_path):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    e1 = kd.layers.EarlyExit(3, name="exit_1")(x)
    final = keras.layers.Dense(3, name="final")(keras.layers.GlobalAveragePooling2D()(x))
    converters.export_stages(keras.Model(inputs, [e1, final]), tmp_path / "out", verbose=0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["version"] == 1 and manifest["gates"] == []
    result = runtime.load(tmp_path / "out").predict(np.zeros((2, 8, 8, 1), "float32"))
    assert result.gates == {} and result.routes == {} and result.stages_run[:, 0].all()


def test_a_branch_read_outside_its_merge_is_refused_naming_the_layers():
    inputs = keras.Input((8, 8, 2), name="image")
    body = keras.layers.Conv2D(2, 3, padding="same", name="body")
    fx = body(inputs)
    y = kd.layers.GatedResidual(name="block")([inputs, fx, kd.layers.BlockGate(name="gate")(inputs)])
    leak = keras.layers.Add(name="leak")([y, fx])
    final = kd.layers.EarlyExit(3, name="final")(leak)
    with pytest.raises(PartitionError, match="'leak' reads the output of 'body'.*'block'"):
        partition(keras.Model(inputs, final))


def test_an_exit_inside_a_branch_is_refused():
    inputs = keras.Input((8, 8, 2), name="image")
    fx = keras.layers.Conv2D(2, 3, padding="same", name="body")(inputs)
    inner = kd.layers.EarlyExit(3, name="inner_exit")(fx)
    y = kd.layers.GatedResidual(name="block")([inputs, fx, kd.layers.BlockGate(name="gate")(inputs)])
    final = keras.layers.Dense(3, name="final")(keras.layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, [inner, final])
    with pytest.raises(PartitionError, match="'body'|'inner_exit'"):
        partition(model)


def _edited(folder, edit):
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    return manifest


def _stage(manifest, name):
    return next(s for s in manifest["stages"] if s["name"] == name)


def _first_gate_edge(manifest):
    for stage in manifest["stages"]:
        for edge in stage["next"]:
            if edge["when"] != "always":
                return stage, edge


def _gate_from_wrong_stage(m):
    for stage in m["stages"]:
        for edge in stage["next"]:
            if edge["when"] == {"gate": "cg_gate", "index": 0}:
                stage["next"].remove(edge)
                _stage(m, "stage_3")["next"].append(edge)
                return


def _index_out_of_range(m):
    _first_gate_edge(m)[1]["when"]["index"] = 5


def _unknown_gate(m):
    _first_gate_edge(m)[1]["when"]["gate"] = "nowhere"


def _exit_on_conditional_stage(m):
    _, edge = _first_gate_edge(m)
    m["exits"][0]["stage"] = edge["stage"]
    m["exits"][0]["tensor"] = _stage(m, edge["stage"])["outputs"][0]["name"]


def _backward_edge(m):
    m["stages"][3]["next"].append({"stage": "stage_2", "when": "always"})


def _undeclared_feature(m):
    m["features"].remove("routes")


INVALID = {
    "gate_edge_from_another_stage": (_gate_from_wrong_stage, "must leave the stage that computes gate"),
    "index_out_of_range": (_index_out_of_range, r"'index' must be an int in \[0, 0\]"),
    "unknown_gate": (_unknown_gate, "unknown gate 'nowhere'"),
    "exit_on_conditional_stage": (_exit_on_conditional_stage, "is conditional"),
    "backward_edge": (_backward_edge, "listed later"),
    "undeclared_feature": (_undeclared_feature, "'routes' is non-empty but the feature"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_version_2_manifests_are_refused(exported, case):
    _, _, folder = exported
    edit, message = INVALID[case]
    with pytest.raises(ManifestError, match=message):
        runtime.manifest.validate_manifest(_edited(folder, edit))


def test_the_written_manifest_validates_and_a_copy_round_trips(exported):
    _, _, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    assert runtime.manifest.validate_manifest(copy.deepcopy(manifest)) == manifest


def test_a_gated_routed_model_trained_with_a_budget_exports_and_runs(tmp_path):
    x, y = digits()
    x, y = x[:512], y[:512]
    keras.utils.set_random_seed(0)
    base = kd.models.gated_resnet(
        x.shape[1:], num_classes=10, widths=(8, 16), blocks_per_stage=(2, 2),
        moe_experts=2, exits=True,
    )
    model = kd.models.ComputeBudget(base, budget=0.6, weight=2.0)
    model.compile(
        "adam",
        loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True)] * 2,
    )
    model.fit(x, [y, y], epochs=1, batch_size=64, verbose=0)
    base = model.strip()
    converters.export_stages(base, tmp_path / "out", parity_samples=x[:32], verbose=0)
    chain = runtime.load(tmp_path / "out")
    result = chain.predict(x[:64], mode="sample")
    assert set(result.routes) == {"moe_router"} and len(result.gates) == 3
    # One expert of two at most, so no sample runs every stage.
    assert (result.stages_run.sum(axis=1) < len(chain.stage_names)).all()
    batch = chain.predict(x[:64])
    np.testing.assert_array_equal(batch.stages_run, result.stages_run)


def test_an_int8_gated_routed_export_leaves_out_only_near_tie_flips(exported, tmp_path, capsys):
    model, x, _ = exported
    folder = tmp_path / "int8"
    converters.export_stages(
        model, folder, quantize="int8", representative_data=x, parity_samples=x, verbose=2,
    )
    log = capsys.readouterr().out
    with runtime.load(folder) as chain:
        assert chain.manifest["inputs"][0]["dtype"] == "int8"
        result = chain.predict(x, policy=NEVER_EXIT)
    gate, groups, route = _decisions(model, x)
    walked = np.concatenate([result.gates["block1_gate"], result.gates["cg_gate"]], axis=1)
    gate_flips = (walked != np.concatenate([gate, groups], axis=1)).any(axis=1)
    route_flips = ~gate_flips & (route != result.routes["moe_router"])
    # The quantized walk decides as Keras does except on a few samples
    # (measured: 4 channel-gate flips and 1 route flip of 64), each at a
    # near tie of its decision: a gate's on-off margin, or a route's gap
    # between the top and the chosen expert, below 2% of the largest.
    assert (gate_flips | route_flips).mean() <= 0.15
    margins = parity.decision_margins(model, partition(model), x)
    on_minus_off = np.abs(margins["cg_gate"][gate_flips])
    assert (on_minus_off.min(axis=1) <= 0.05 * np.abs(margins["cg_gate"]).max()).all()
    probabilities = margins["moe_router"][route_flips]
    chosen = probabilities[np.arange(len(probabilities)), result.routes["moe_router"][route_flips]]
    assert (probabilities.max(axis=1) - chosen <= 0.05).all()
    if (gate_flips | route_flips).any():
        assert "took another gate or route at a near tie" in log


def test_a_decision_flip_away_from_its_tie_is_a_parity_error():
    from keras_dynamic.converters.parity import ParityError
    from keras_dynamic.converters.parity import decision_flips

    board = {"gate": np.array([[1.0], [0.0], [1.0]]), "router": np.eye(3)[[0, 1, 2]]}
    margins = {"gate": np.array([[4.0], [-0.1], [3.0]]), "router": np.array(
        [[0.7, 0.1, 0.2], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])}
    reached = np.ones(3, bool)
    decisions = [("gate", "gate", reached), ("route", "router", reached)]
    near_tie = {"gate": {"gate": np.array([[True], [True], [True]])},
                "route": {"router": np.array([0, 0, 2])}}
    # Sample 1 flips its gate at a margin of 0.1 of 4 and then takes another
    # route, which is not compared (the walk is on another path).
    flips = decision_flips(decisions, board, margins, near_tie, "batch", "int8")
    np.testing.assert_array_equal(flips, [False, True, False])
    far = {"gate": {"gate": np.array([[True], [False], [False]])},
           "route": {"router": np.array([0, 1, 2])}}
    with pytest.raises(ParityError, match=r"gate 'gate' in batch mode .* 1 sample\(s\) \(first: sample 2\)"):
        decision_flips(decisions, board, margins, far, "batch", "int8")
    route_far = {"gate": {"gate": np.array([[True], [False], [True]])},
                 "route": {"router": np.array([1, 1, 2])}}
    with pytest.raises(ParityError, match="route 'router'.*first: sample 0"):
        decision_flips(decisions, board, margins, route_far, "batch", "int8")
