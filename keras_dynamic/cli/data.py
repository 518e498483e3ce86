"""Reading the ``.npz`` data files the commands take."""

import os
import zipfile

import numpy as np


class DataError(ValueError):
    """A data file is missing, unreadable or does not fit the export; names the file."""


def read_npz(path, input_names, *, need_labels):
    """``(inputs, labels or None)`` from an ``.npz`` archive.

    Inputs are ``x`` for a single-input model, or one array per input name;
    labels are ``y``. Object arrays (pickles) are refused: a data file must
    not run code.
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"data file {path!r} does not exist.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"data file {path!r} is not a readable .npz archive ({error}).") from None
    with archive:
        keys = set(archive.files)
        try:
            if len(input_names) == 1 and "x" in keys:
                inputs = archive["x"]
            elif set(input_names) <= keys:
                inputs = {name: archive[name] for name in input_names}
            else:
                expected = "'x'" if len(input_names) == 1 else ""
                names = " or ".join(filter(None, [expected, repr(list(input_names))]))
                raise DataError(
                    f"data file {path!r} holds {sorted(keys)}; the inputs must be under "
                    f"{names}."
                )
            labels = archive["y"] if "y" in keys else None
        except ValueError as error:  # an object array, refused without pickle
            raise DataError(f"data file {path!r}: {error}") from None
    if need_labels and labels is None:
        raise DataError(f"data file {path!r} has no labels: store them as 'y'.")
    return inputs, labels


def first(inputs, count):
    """The first ``count`` samples of an array or a dict of arrays."""
    if isinstance(inputs, dict):
        return {name: value[:count] for name, value in inputs.items()}
    return inputs[:count]


def synthetic_inputs(chain, count, seed=0):
    """Standard-normal inputs of the export's input shapes (float inputs only)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in chain.manifest["inputs"]:
        if not spec["dtype"].startswith("float") and spec.get("quantization") is None:
            raise DataError(
                f"input {spec['name']!r} is {spec['dtype']}: pass real data with --data."
            )
        arrays[spec["name"]] = rng.standard_normal((count, *spec["shape"][1:])).astype("float32")
    return arrays


__all__ = ["DataError", "read_npz", "first", "synthetic_inputs"]
