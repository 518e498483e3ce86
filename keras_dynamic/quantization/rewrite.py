"""The quantization-aware training flow: `quantize_aware` -> `fit` -> `strip_quantization` -> export.

`quantize_aware(model)` returns a copy of the model (the original keeps its
float weights, as with tensorflow-model-optimization's `quantize_model`), in which each layer with filters runs on fake-quantized weights
and each tensor that the int8 export keeps as a tensor is fake-quantized:

* every float model input;
* every layer output, except the outputs of layers that move values without
  changing them (pooling by maximum, reshapes, dropout: TFLite gives their
  output the scale of their input) and outputs whose every consumer is a
  BatchNormalization or a ReLU, which the converter folds into the op before
  them, so the tensor in between never exists in the int8 graph.

Inside a keras-dynamic layer (an exit head, a gate, a router, a dynamic
convolution) the weights are fake-quantized but the intermediate tensors are
not; only the layer's outputs are. Training the wrapped model with `fit` (any
backend) teaches the weights to live on the int8 grid; `strip_quantization`
returns the plain model, which `export_stages(..., quantize="int8",
representative_data=...)` exports; the converter calibrates the activation
ranges again on the representative data, through the chain.
"""

import keras

from keras_dynamic.models._graph import check_functional, functional_nodes
from keras_dynamic.quantization.activation_quantizer import ActivationQuantizer
from keras_dynamic.quantization.weights import quantized_weights
from keras_dynamic.quantization.wrapper import QuantizeWrapper

# Their output has the scale of their input in TFLite's int8 graph.
_SCALE_PRESERVING = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Permute,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Identity,
)
_RELU_ACTIVATIONS = ("relu", "relu6")


def quantize_aware(model, ema_decay=0.99):
    """A quantization-aware copy of the functional `model`, with its weights.

    Args:
        model: a functional `keras.Model`, built.
        ema_decay: the activation ranges' moving-average decay in training.

    Returns:
        A functional model with the same inputs, outputs and output names;
        compile and `fit` it as the original. Its layers are copies of
        `model`'s (wrapped in `QuantizeWrapper` where they have filters or
        quantized outputs); training it leaves `model` as it was.

    Example:

    >>> import numpy as np, keras
    >>> import keras_dynamic as kd
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    >>> outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> qat = kd.quantization.quantize_aware(model)
    >>> qat.compile("adam", "mse")
    >>> _ = qat.fit(np.ones((4, 8, 8, 1)), np.zeros((4, 2)), verbose=0)
    >>> plain = kd.quantization.strip_quantization(qat)  # trained; `model` is not
    >>> [type(layer).__name__ for layer in plain.layers]
    ['InputLayer', 'Conv2D', 'Flatten', 'Dense']
    """
    check_functional(model, "quantize_aware")
    if any(isinstance(layer, (QuantizeWrapper, ActivationQuantizer)) for layer in model.layers):
        raise ValueError(
            f"quantize_aware: model '{model.name}' is already quantization-aware. "
            "Call strip_quantization first to get the plain model back."
        )
    model = _copy(model)
    quantize_flags = _output_flags(model)
    wrappers = {}

    def clone_function(layer):
        flags = quantize_flags.get(id(layer), ())
        if not quantized_weights(layer) and not any(flags):
            return layer
        if id(layer) not in wrappers:
            wrappers[id(layer)] = QuantizeWrapper(
                layer, quantize_outputs=flags, ema_decay=ema_decay
            )
        return wrappers[id(layer)]

    inputs = keras.tree.map_structure(
        lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name),
        model.input,
    )
    quantized_inputs = {
        id(t): ActivationQuantizer(ema_decay=ema_decay, name=f"{t.name}_quantizer")(t)
        if "float" in keras.backend.standardize_dtype(t.dtype)
        else t
        for t in keras.tree.flatten(inputs)
    }

    def call_function(layer, *args, **kwargs):
        args, kwargs = keras.tree.map_structure(
            lambda x: quantized_inputs.get(id(x), x), (args, kwargs)
        )
        return layer(*args, **kwargs)

    return keras.models.clone_model(
        model,
        input_tensors=inputs,
        clone_function=clone_function,
        call_function=call_function,
    )


def strip_quantization(model):
    """The plain model inside a `quantize_aware` model: same layers and weights, no fake quantization.

    Args:
        model: a model `quantize_aware` returned (or loaded from its `.keras`
            file).

    Returns:
        A functional model of the wrapped layers (shared, with the weights
        quantization-aware training left), ready for `export_stages(..., quantize="int8")`.
    """
    check_functional(model, "strip_quantization")

    def clone_function(layer):
        return layer.layer if isinstance(layer, QuantizeWrapper) else layer

    def call_function(layer, *args, **kwargs):
        if isinstance(layer, ActivationQuantizer):
            return args[0]
        return layer(*args, **kwargs)

    return keras.models.clone_model(
        model, clone_function=clone_function, call_function=call_function
    )


def _copy(model):
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception as error:  # any layer's from_config may fail its own way
        raise ValueError(
            f"quantize_aware: model '{model.name}' could not be copied with "
            f"keras.models.clone_model ({error}). Every layer needs a "
            "get_config that from_config can rebuild."
        ) from error
    return copy


def _output_flags(model):
    """`{id(layer): (quantize output 0?, ...)}` by the rules of the module docstring."""
    consumers = {}
    for node in functional_nodes(model):
        for tensor in node.input_tensors:
            operation, _, index = tensor._keras_history
            consumers.setdefault((id(operation), index), []).append(node.operation)
    model_outputs = {
        (id(t._keras_history[0]), t._keras_history[2]) for t in keras.tree.flatten(model.output)
    }
    flags = {}
    for node in functional_nodes(model):
        layer = node.operation
        layer_flags = []
        for index, _ in enumerate(node.outputs):
            key = (id(layer), index)
            folded = key not in model_outputs and all(
                _folds_its_input(consumer) for consumer in consumers.get(key, ())
            )
            layer_flags.append(not isinstance(layer, _SCALE_PRESERVING) and not folded)
        previous = flags.get(id(layer), [False] * len(layer_flags))
        flags[id(layer)] = tuple(a or b for a, b in zip(previous, layer_flags))
    return flags


def _folds_its_input(layer):
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.ReLU)):
        return True
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", "") in _RELU_ACTIVATIONS
    return False
