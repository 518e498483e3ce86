import keras
import pytest

import keras_dynamic as kd
from keras_dynamic.converters import PartitionError
from keras_dynamic.converters import partition
from export_models import chain_model
from export_models import dense_connection_model


@pytest.mark.parametrize("num_exits", [1, 2, 3, 4])
def test_one_stage_per_exit_in_order(num_exits):
    plans = partition(chain_model(num_exits))
    assert [p.name for p in plans] == [f"stage_{i}" for i in range(1, num_exits + 1)]
    expected_exits = [f"exit_{i}" for i in range(1, num_exits)] + ["final"]
    assert [p.exit_name for p in plans] == expected_exits
    assert [p.output_names[0] for p in plans] == expected_exits
    assert plans[0].input_names == ["image"]
    for previous, plan in zip(plans, plans[1:]):
        # Without skips a stage takes exactly the trunk tensor of the one before.
        assert plan.input_names == previous.output_names[1:]


@pytest.mark.parametrize("num_exits", [3, 4])
def test_skip_crossing_exits_is_output_once_and_consumed_at_the_end(num_exits):
    plans = partition(chain_model(num_exits, cross_skip=True))
    assert "conv_1" in plans[0].output_names
    assert "conv_1" in plans[-1].input_names
    # The middle stages neither take nor re-emit it.
    for plan in plans[1:-1]:
        assert "conv_1" not in plan.input_names
        assert "conv_1" not in plan.output_names
    assert "cross_skip" in plans[-1].layer_names


def test_every_layer_lands_in_exactly_one_stage():
    model = chain_model(3, cross_skip=True)
    plans = partition(model)
    assigned = [name for plan in plans for name in plan.layer_names]
    assert len(assigned) == len(set(assigned))
    layers = {layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)}
    assert set(assigned) == layers


def test_dense_connections_and_a_plain_final_classifier():
    plans = partition(dense_connection_model())
    assert [p.exit_name for p in plans] == ["exit_1", "exit_2", "final"]
    assert set(plans[-1].input_names) == {"conv_a", "conv_b", "extra"}
    # The second input is only needed by the last stage.
    assert "extra" not in plans[0].input_names


def test_names_are_stable_across_repeated_partitions():
    model = chain_model(3, cross_skip=True)
    first = [(p.input_names, p.output_names) for p in partition(model)]
    second = [(p.input_names, p.output_names) for p in partition(model)]
    assert first == second


def test_model_without_exits_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="no_exit")
    with pytest.raises(PartitionError, match="no_exit.*no EarlyExit"):
        partition(model)


def test_subclassed_model_is_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed_net")
            self.head = kd.layers.EarlyExit(3, pooling=None)

        def call(self, inputs):
            return self.head(inputs)

    model = Subclassed()
    model(keras.ops.zeros((1, 4)))
    with pytest.raises(PartitionError, match="subclassed_net.*not a functional"):
        partition(model)


def test_sequential_model_is_refused():
    model = keras.Sequential(
        [keras.Input((4,)), kd.layers.EarlyExit(3, pooling=None)], name="seq"
    )
    with pytest.raises(PartitionError, match="seq"):
        partition(model)


def test_non_exit_intermediate_output_is_refused():
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(2, 3, name="side_conv")(inputs)
    b = keras.layers.Conv2D(2, 3)(a)
    model = keras.Model(inputs, [a, kd.layers.EarlyExit(2, name="final")(b)])
    with pytest.raises(PartitionError, match="side_conv.*not an EarlyExit"):
        partition(model)


def test_non_model_is_refused():
    with pytest.raises(TypeError, match="keras.Model"):
        partition("model.keras")
