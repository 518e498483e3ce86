"""The command line's docstring examples use the runtime's (see runtime/conftest.py)."""

from keras_dynamic.runtime.conftest import _digits_export_for_examples  # noqa: F401
