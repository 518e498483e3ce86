"""Keras model -> per-stage TFLite files + manifest.json for keras_dynamic.runtime.

Export needs TensorFlow (the converter traces the model with it) and runs
on Keras's TensorFlow backend.
"""

import sys as _sys

from keras_dynamic.converters.logs import captured_stderr as _captured_stderr

# Importing TensorFlow prints a banner (oneDNN, CPU instructions) to file
# descriptor 2; a script that imports the converters first stays quiet.
try:
    with _captured_stderr() as _log:
        from keras_dynamic.converters.conditional import export_conditional
        from keras_dynamic.converters.export import ParityError
        from keras_dynamic.converters.export import export_stages
        from keras_dynamic.converters.partition import PartitionError
        from keras_dynamic.converters.partition import partition
        from keras_dynamic.converters.static import export_static
        from keras_dynamic.converters.tflite import ConversionError
except ModuleNotFoundError as _error:
    if _error.name != "tensorflow":
        _sys.stderr.write(_log.text())
        raise
    raise ModuleNotFoundError(
        "keras_dynamic.converters needs TensorFlow: pip install "
        "'keras-dynamic[tensorflow]' (or '[tensorflow-cpu]'). Models trained "
        "on another Keras backend are exported from their saved .keras file "
        "in a process running Keras on TensorFlow.",
        name="tensorflow",
    ) from _error
except BaseException:
    # What was printed may say why the import failed.
    _sys.stderr.write(_log.text())
    raise

__all__ = [
    "export_stages",
    "export_static",
    "export_conditional",
    "partition",
    "ConversionError",
    "ParityError",
    "PartitionError",
]
