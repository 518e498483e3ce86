"""keras-dynamic: dynamic neural networks in Keras 3, exported as chained TFLite stages.

The Keras side (layers, losses, callbacks, models) is imported lazily so that
``import keras_dynamic.runtime`` works on an edge device where only numpy and a
TFLite interpreter are installed.

Example:

>>> import keras_dynamic as kd
>>> kd.__version__
'0.1.0'
"""

import importlib

__version__ = "0.1.0"

_LAZY_SUBMODULES = (
    "layers",
    "losses",
    "callbacks",
    "models",
    "data",
    "runtime",
    "converters",
)

__all__ = ["__version__", *_LAZY_SUBMODULES]


def __getattr__(name):
    # PEP 562: importing keras_dynamic.layers pulls in Keras/TensorFlow, so it
    # happens only on first attribute access, never for the runtime alone.
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
