"""keras-dynamic: dynamic neural networks in Keras 3, exported as chained TFLite stages.

The Keras side (layers, losses, callbacks, models) is imported lazily so that
``import keras_dynamic.runtime`` works on an edge device where only numpy and a
TFLite interpreter are installed. Its serializable objects are registered with
Keras as soon as Keras is imported, before or after this package, so that
``keras.models.load_model`` finds them after a plain ``import keras_dynamic``.

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
    "quantization",
    "data",
    "runtime",
    "converters",
)
# The modules whose import registers keras_dynamic's Keras serializables.
_REGISTERING_SUBMODULES = ("layers", "losses", "models", "quantization")

__all__ = ["__version__", *_LAZY_SUBMODULES]


def __getattr__(name):
    # PEP 562: importing keras_dynamic.layers pulls in Keras and its backend,
    # so it happens only on first attribute access, never for the runtime
    # alone.
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def _register_with_keras(keras_module):
    del keras_module  # the import of our modules is what registers them
    for name in _REGISTERING_SUBMODULES:
        importlib.import_module(f"{__name__}.{name}")


try:
    # wrapt ships with every extra that installs Keras (TensorFlow depends on
    # it too); its post-import hook runs now if Keras is already imported,
    # else right after Keras is, so this import never pulls Keras in itself.
    import wrapt
except ImportError:  # an edge install: no Keras to register with
    pass
else:
    wrapt.register_post_import_hook(_register_with_keras, "keras")
