"""The one place that picks the Keras implementation and papers over version gaps.

Keras 3 is the default. Quantization-aware training with
tensorflow-model-optimization needs tf_keras, which tfmot selects by setting
``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported; the layers of this
package then run under tf_keras unchanged because their math is written in
TensorFlow ops and they call Keras APIs the way both versions accept.
"""

import os

import tensorflow as tf

if os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() in ("1", "true"):
    import tf_keras as keras  # noqa: F401  (re-exported)

    IS_KERAS_3 = False
else:
    import keras  # noqa: F401  (re-exported)

    IS_KERAS_3 = True

PACKAGE = "keras_dynamic"


def register_serializable(cls):
    """Registers ``cls`` under the ``keras_dynamic`` package for `load_model`."""
    return keras.utils.register_keras_serializable(package=PACKAGE)(cls)


__all__ = ["tf", "keras", "IS_KERAS_3", "PACKAGE", "register_serializable"]
