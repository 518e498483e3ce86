"""keras-dynamic: dynamic neural networks in Keras 3, deployed as chained TFLite stages."""

from setuptools import find_packages
from setuptools import setup

# Pins, and why:
# - TensorFlow 2.21 / Keras 3.15 is the pair the converters are verified on:
#   stage cutting relies on Keras 3 functional internals, conversion on the
#   2.21 TFLite converter's signature handling.
# - ai-edge-litert 2.3 is the interpreter the runtime is verified against
#   (signature runners, XNNPACK on by default).
# - tensorflow-model-optimization 0.8 only works with tf_keras (Keras 2),
#   which must match the TensorFlow minor version.
TENSORFLOW = "tensorflow==2.21.*"
TENSORFLOW_CPU = "tensorflow-cpu==2.21.*"
KERAS = "keras>=3.15,<4"
LITERT = "ai-edge-litert==2.3.*"

setup(
    name="keras-dynamic",
    version="0.1.0",
    description=(
        "Dynamic neural networks (early exits, gates, dynamic convolution) "
        "for Keras 3, exported as chained TFLite stages for edge devices."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_dynamic", "keras_dynamic.*", "converters", "converters.*"]),
    # The runtime needs only numpy and a TFLite interpreter (see extras).
    install_requires=["numpy>=1.23"],
    extras_require={
        "tensorflow": [TENSORFLOW, KERAS],
        # Same as [tensorflow] without the CUDA wheels: CI and CPU-only machines.
        "tensorflow-cpu": [TENSORFLOW_CPU, KERAS],
        "runtime": [LITERT],
        "qat": [TENSORFLOW, "tf_keras==2.21.*", "tensorflow-model-optimization==0.8.*"],
        "demo": ["scikit-learn>=1.3"],
        "test": ["pytest>=8", "pytest-xdist>=3", "scikit-learn>=1.3"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
