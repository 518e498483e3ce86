"""Model inputs for the parity check and int8 calibration, in each input's dtype and range.

Arrays are keyed by the manifest's input names (`partition.input_names`);
users key theirs by the input layers' names, or by the manifest's names.
"""

import keras
import numpy as np

from keras_dynamic.converters.partition import input_names

# Random parity samples when the caller gives none: enough rows for the
# per-sample check to see samples coupled in a batch.
RANDOM_COUNT = 8
# Integer inputs with no consumer that says their range (an Embedding's
# input_dim): token ids, class ids or pixel values fit in [0, 256).
DEFAULT_INTEGER_HIGH = 256


def _inputs(model):
    """`(layer name, manifest name, tensor)` per model input."""
    return [
        (tensor._keras_history[0].name, name, tensor)
        for tensor, name in zip(model.inputs, input_names(model))
    ]


def _cast(value, tensor, where):
    """`value` as an array of the input's dtype and shape; refuses lossy casts."""
    dtype = np.dtype(tensor.dtype)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: not an array ({error}).") from None
    expected = tuple(tensor.shape[1:])
    if array.ndim != len(tensor.shape) or array.shape[1:] != expected:
        raise ValueError(
            f"{where}: expected shape (samples, {', '.join(map(str, expected))}). "
            f"Received: {array.shape}"
        )
    if len(array) == 0:
        raise ValueError(
            f"{where} is empty (0 samples): pass at least one sample."
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"{where}: expected numbers for a {dtype.name} input. Received "
            f"dtype {array.dtype.name}."
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))[0])
        raise ValueError(
            f"{where}: contains NaN or Inf (first at sample {bad}); pass finite values."
        )
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if array.dtype.kind == "f" and not (
            np.isfinite(array).all() and (array == np.round(array)).all()
        ):
            raise ValueError(
                f"{where}: the input is {dtype.name}, but the values are not all "
                "whole numbers."
            )
        if array.min() < info.min or array.max() > info.max:
            raise ValueError(
                f"{where}: values in [{array.min()}, {array.max()}] do not fit the "
                f"input's dtype {dtype.name}."
            )
    return np.ascontiguousarray(array.astype(dtype))


def as_inputs(model, data, argument: str, limit: "int | None" = None) -> dict:
    """`data` (an array for one input, or a dict) as `{manifest name: array}`.

    Each array is cast to its input's dtype (refusing values the dtype cannot
    hold) and cut to `limit` samples. `argument` names the user's argument
    in errors.
    """
    inputs = _inputs(model)
    if isinstance(data, dict):
        known = {key for layer, name, _ in inputs for key in (layer, name)}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ValueError(
                f"`{argument}` has keys {unknown} that name no input of model "
                f"'{model.name}'; its inputs are {[layer for layer, _, _ in inputs]}."
            )
        values = {}
        for layer, name, _ in inputs:
            if layer not in data and name not in data:
                raise ValueError(
                    f"`{argument}` has no array for input '{layer}' of model "
                    f"'{model.name}'."
                )
            values[name] = data[layer] if layer in data else data[name]
    elif len(inputs) == 1:
        values = {inputs[0][1]: data}
    else:
        raise ValueError(
            f"Model '{model.name}' has {len(inputs)} inputs: pass `{argument}` "
            "as a dict keyed by input name."
        )
    arrays = {
        name: _cast(values[name], tensor, f"`{argument}` input '{layer}'")[:limit]
        for layer, name, tensor in inputs
    }
    sizes = {name: len(array) for name, array in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"`{argument}`: the inputs have different sample counts {sizes}.")
    return arrays


# int8 calibration: the first MAX_REPRESENTATIVE_SAMPLES samples are used;
# fewer than MIN_REPRESENTATIVE_SAMPLES give activation ranges no one should
# trust (the TFLite documentation suggests 100 to 500).
MAX_REPRESENTATIVE_SAMPLES = 200
MIN_REPRESENTATIVE_SAMPLES = 16


def calibration_inputs(model, representative_data) -> dict:
    """`representative_data` as ``{input name: array}`` for int8 calibration, checked."""
    calibration = as_inputs(
        model, representative_data, "representative_data", limit=MAX_REPRESENTATIVE_SAMPLES
    )
    count = len(next(iter(calibration.values())))
    if count < MIN_REPRESENTATIVE_SAMPLES:
        raise ValueError(
            f"quantize='int8' calibrates every stage's activation ranges on "
            f"`representative_data`: {count} sample(s) is too few, pass at least "
            f"{MIN_REPRESENTATIVE_SAMPLES} (100 to 500 typical inputs calibrate well)."
        )
    return calibration


def integer_range(tensor) -> tuple:
    """`[low, high)` of values an integer input takes.

    The smallest `input_dim` of the Embedding layers it feeds; else the
    whole range of an 8-bit dtype (pixels); else [0, `DEFAULT_INTEGER_HIGH`).
    """
    info = np.iinfo(np.dtype(tensor.dtype))
    layer = tensor._keras_history[0]
    # The input layer's outbound nodes are the layers that read the input.
    dims = [
        node.operation.input_dim
        for node in layer._outbound_nodes
        if isinstance(node.operation, keras.layers.Embedding)
    ]
    if dims:
        return 0, min(dims)
    if info.bits == 8:
        return info.min, info.max + 1
    return 0, DEFAULT_INTEGER_HIGH


def random_inputs(model, count: int = RANDOM_COUNT, seed: int = 0) -> dict:
    """Seeded samples for every input: standard normal floats, integers in `integer_range`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for _, name, tensor in _inputs(model):
        dtype = np.dtype(tensor.dtype)
        shape = (count, *tensor.shape[1:])
        if dtype.kind in "iu":
            low, high = integer_range(tensor)
            arrays[name] = rng.integers(low, high, shape).astype(dtype)
        else:
            arrays[name] = rng.standard_normal(shape).astype(dtype)
    return arrays


def in_model_order(model, arrays: dict) -> list:
    """The arrays as `model` takes them: a list in `model.inputs` order."""
    return [arrays[name] for name in input_names(model)]


__all__ = ["as_inputs", "random_inputs", "integer_range", "in_model_order"]
