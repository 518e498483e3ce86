"""Small real datasets that install with the package's dependencies."""

from keras_dynamic.data.digits import DigitsSplits
from keras_dynamic.data.digits import load_digits_splits

__all__ = ["DigitsSplits", "load_digits_splits"]
