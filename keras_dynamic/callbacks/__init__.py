"""Keras callbacks of keras-dynamic."""

from keras_dynamic.callbacks.temperature import TemperatureScheduler

__all__ = ["TemperatureScheduler"]
