"""The package layout that pyproject.toml cannot express statically.

The export code lives in the top-level `converters/` folder of the
repository (the project's layout) but installs as `keras_dynamic.converters`:
an unrelated PyPI package already owns the name `converters`. Metadata,
dependencies and extras are in pyproject.toml.
"""

from setuptools import find_packages
from setuptools import setup

PACKAGES = find_packages(include=["keras_dynamic", "keras_dynamic.*"])
CONVERTERS = ["keras_dynamic.converters"] + [
    f"keras_dynamic.converters.{name}" for name in find_packages("converters")
]

setup(
    packages=PACKAGES + CONVERTERS,
    package_dir={"keras_dynamic.converters": "converters"},
)
