"""Keras model -> per-stage TFLite files + manifest.json for keras_dynamic.runtime."""

from converters.export import ParityError
from converters.export import export_stages
from converters.partition import PartitionError
from converters.partition import partition
from converters.static import export_static
from converters.tflite import ConversionError

__all__ = [
    "export_stages",
    "export_static",
    "partition",
    "ConversionError",
    "ParityError",
    "PartitionError",
]
