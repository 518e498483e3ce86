"""``python -m keras_dynamic.cli``: the same as the ``keras-dynamic`` command."""

from keras_dynamic.cli import entry_point

entry_point()
