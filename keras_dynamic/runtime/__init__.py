"""The TF-free chained runtime: run an export's stages with early exits.

Needs numpy and one TFLite interpreter (ai-edge-litert, tflite-runtime, or
TensorFlow as a last resort); it never imports Keras, and TensorFlow only when
no other interpreter is installed.

Example (``export_dir`` written by `converters.export_stages`; ``x_val``,
``y_val``: labelled digit images of shape (N, 8, 8, 1)):

>>> from keras_dynamic import runtime
>>> with runtime.load(export_dir, num_threads=1) as chain:
...     policy = chain.calibrate(x_val, y_val, max_accuracy_drop=0.01)
...     result = chain.predict(x_val)
>>> result.labels.shape, result.exit_index.shape
((597,), (597,))
>>> bool(result.macs.mean() < chain.total_macs)
True
"""

from keras_dynamic.runtime.accelerators import AcceleratorError
from keras_dynamic.runtime.calibration import calibrate
from keras_dynamic.runtime.chain import Chain
from keras_dynamic.runtime.chain import PredictResult
from keras_dynamic.runtime.chain import load
from keras_dynamic.runtime.errors import FileIntegrityError
from keras_dynamic.runtime.errors import InputError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import NonFiniteOutputError
from keras_dynamic.runtime.files import sha256_file
from keras_dynamic.runtime.manifest import FORMAT
from keras_dynamic.runtime.manifest import VERSION
from keras_dynamic.runtime.manifest import dumps_manifest
from keras_dynamic.runtime.manifest import validate_manifest
from keras_dynamic.runtime.manifest import write_manifest
from keras_dynamic.runtime.policy import ExitRule
from keras_dynamic.runtime.policy import Policy
from keras_dynamic.runtime.stream import FrameStream
from keras_dynamic.runtime.stream import StreamResult
from keras_dynamic.runtime.stream import calibrate_reuse

__all__ = [
    "load",
    "calibrate",
    "Chain",
    "PredictResult",
    "FrameStream",
    "StreamResult",
    "calibrate_reuse",
    "Policy",
    "ExitRule",
    "ManifestError",
    "FileIntegrityError",
    "InputError",
    "NonFiniteOutputError",
    "AcceleratorError",
    "FORMAT",
    "VERSION",
    "sha256_file",
    "validate_manifest",
    "dumps_manifest",
    "write_manifest",
]
