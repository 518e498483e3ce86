"""Quantization-aware training in Keras 3, for every layer of keras-dynamic.

The flow users of tensorflow-model-optimization know, on any backend:

    qat = kd.quantization.quantize_aware(model)   # fake int8 weights and activations
    qat.compile(...); qat.fit(...)                # trains `model`'s weights
    plain = kd.quantization.strip_quantization(qat)
    export_stages(plain, out_dir, quantize="int8", representative_data=...)

See `rewrite.py` for where the fake quantization goes and why.
"""

# Keras before any module of this package (see keras_dynamic/layers/__init__.py).
import keras  # noqa: F401

from keras_dynamic.quantization.activation_quantizer import ActivationQuantizer
from keras_dynamic.quantization.fake_quant import fake_quantize_weight
from keras_dynamic.quantization.rewrite import quantize_aware, strip_quantization
from keras_dynamic.quantization.weights import quantized_weights
from keras_dynamic.quantization.wrapper import QuantizeWrapper

__all__ = [
    "ActivationQuantizer",
    "QuantizeWrapper",
    "fake_quantize_weight",
    "quantize_aware",
    "quantized_weights",
    "strip_quantization",
]
