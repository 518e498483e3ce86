"""Keras model -> per-stage TFLite files + manifest.json for keras_dynamic.runtime."""

from keras_dynamic.converters.export import ParityError
from keras_dynamic.converters.export import export_stages
from keras_dynamic.converters.partition import PartitionError
from keras_dynamic.converters.partition import partition
from keras_dynamic.converters.static import export_static
from keras_dynamic.converters.tflite import ConversionError

__all__ = [
    "export_stages",
    "export_static",
    "partition",
    "ConversionError",
    "ParityError",
    "PartitionError",
]
