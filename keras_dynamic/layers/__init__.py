"""Keras layers of keras-dynamic: exits, gates and dynamic convolutions."""

from keras_dynamic.layers.early_exit import EarlyExit

__all__ = ["EarlyExit"]
