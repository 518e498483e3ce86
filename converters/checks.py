"""What a model must be for export, checked before anything is converted.

Each check names what is wrong (the input, tensor, layer or stage) and what
to do, instead of leaving TensorFlow to fail later with a message about
`NoneType`, `AssignVariableOp` or a missing builtin kernel.
"""

import keras

from keras_dynamic.converters import macs
from keras_dynamic.converters.partition import PartitionError
from keras_dynamic.runtime import manifest as schema

# Dtype policies whose layers compute in half precision.
_HALF = frozenset({"float16", "bfloat16", "mixed_float16", "mixed_bfloat16"})
_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")


def require_tensorflow_backend(function: str) -> None:
    """Refuses to export from a Keras backend other than TensorFlow."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{function} needs the TensorFlow backend of Keras (the TFLite "
            f"converter traces the model with TensorFlow); this process runs "
            f"Keras on {backend!r}. Save the model with model.save('model.keras'), "
            "then in a process started with KERAS_BACKEND=tensorflow: "
            "model = keras.models.load_model('model.keras'), and export that."
        )


def half_precision_layers(model) -> list:
    """Names of the layers of `model` (nested ones too) that compute in float16/bfloat16."""
    return [
        layer.name
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if layer.dtype_policy.compute_dtype in ("float16", "bfloat16")
    ]


def _float32_config(config):
    if isinstance(config, dict):
        if (
            config.get("class_name") in _POLICY_CLASSES
            and isinstance(config.get("config"), dict)
            and config["config"].get("name") in _HALF
        ):
            return "float32"
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def _float32_layer(layer):
    config = _float32_config(layer.get_config())
    if isinstance(layer, keras.layers.Lambda):
        # The function is this process's own code, not a file's.
        return layer.__class__.from_config(config, safe_mode=False)
    return layer.__class__.from_config(config)


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` rebuilt under the float32 dtype policy, with its weights.

    TFLite's builtin kernels take float32 (float16 weights are a
    quantization option of the converter, not a compute dtype), so a
    mixed_float16 model is exported as this copy.
    """
    try:
        copy = keras.models.clone_model(model, clone_function=_float32_layer)
        copy.set_weights(model.get_weights())
    except Exception as error:  # any layer's from_config may fail its own way
        raise PartitionError(
            f"Model '{model.name}' computes in half precision (mixed_float16 or "
            "float16), which TFLite's builtin kernels do not take, and it could "
            f"not be rebuilt in float32 automatically: {error}. Rebuild it after "
            "keras.mixed_precision.set_global_policy('float32'), copy the weights "
            "with set_weights(model.get_weights()) and export that."
        ) from error
    return copy


def is_quantization_aware(model) -> bool:
    """Whether `model` came from `keras_dynamic.quantization.quantize_aware`."""
    from keras_dynamic.quantization import ActivationQuantizer, QuantizeWrapper

    return any(
        isinstance(layer, (QuantizeWrapper, ActivationQuantizer)) for layer in model.layers
    )


def plain_model(model: keras.Model) -> keras.Model:
    """`model` as the exporters take it: without fake quantization, in float32.

    A quantization-aware model is exported as its `strip_quantization` (the
    same layers and trained weights); a mixed_float16 one as `float32_copy`.
    """
    if is_quantization_aware(model):
        from keras_dynamic.quantization import strip_quantization

        model = strip_quantization(model)
    if half_precision_layers(model):
        model = float32_copy(model)
    return model


def check_inputs(model) -> None:
    """Every model input has fixed sizes (but the batch) and a dtype the runtime reads."""
    for tensor in model.inputs:
        name = tensor._keras_history[0].name
        if any(dim is None for dim in tensor.shape[1:]):
            raise PartitionError(
                f"Input '{name}' of model '{model.name}' has shape "
                f"{tuple(tensor.shape)}: export needs a fixed size for every "
                "dimension but the batch (TFLite stages are static, which is "
                "what lets delegates run them). Build the model on fixed sizes, "
                "e.g. keras.Input((224, 224, 3)), copy the weights with "
                "set_weights(model.get_weights()) and export that."
            )
        _check_dtype(tensor, f"Input '{name}' of model '{model.name}'")


def _check_dtype(tensor, where):
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if dtype not in schema.DTYPES:
        raise PartitionError(
            f"{where} is {dtype}; stage tensors can be "
            f"{', '.join(sorted(schema.DTYPES))}."
        )


def check_stage_tensors(plans) -> None:
    """Every tensor between stages has fixed sizes and a dtype the runtime reads."""
    for plan in plans:
        for name, tensor in zip(plan.output_names, plan.model.outputs):
            where = f"Tensor '{name}' (an output of stage '{plan.name}')"
            if any(dim is None for dim in tensor.shape[1:]):
                raise PartitionError(
                    f"{where} has shape {tuple(tensor.shape)}: tensors between "
                    "stages need a fixed size for every dimension but the batch."
                )
            _check_dtype(tensor, where)


def trace_stateless(plan):
    """The stage's inference graph (`macs.trace`); refuses layers that write variables."""
    concrete = macs.trace(plan.model)
    writers = macs.variable_writers(concrete, plan.model)
    if writers:
        raise PartitionError(
            f"Stage '{plan.name}': layer(s) {', '.join(map(repr, writers))} "
            "assign variables when called (a stateful layer: a counter, a "
            "running statistic updated at inference, a random state). An "
            "exported stage is a fixed function of its inputs; make the "
            "update happen only when training=True or remove the layer."
        )
    return concrete


__all__ = [
    "require_tensorflow_backend",
    "half_precision_layers",
    "float32_copy",
    "is_quantization_aware",
    "plain_model",
    "check_inputs",
    "check_stage_tensors",
    "trace_stateless",
]
