"""The batch size an export's signatures fix, and why.

Stage signatures take any batch size unless a layer cannot convert that way:

* a dynamic convolution in the ``"mix_kernels"`` form folds the batch into
  the channels of one convolution (`dynamic_conv.signature_batch_size`);
* a recurrent layer (`keras.layers.RNN` and its subclasses: `LSTM`, `GRU`,
  `SimpleRNN`, also inside `Bidirectional`) that is not unrolled becomes a
  TFLite WHILE loop over the time steps, whose tensor lists the converter
  only legalizes with a static batch (TF 2.21: "'tf.TensorListReserve' op
  requires element_shape to be static").

Either fixes every signature to a batch of 1; the runtime then feeds one
sample per call in every mode. A recurrent layer built with ``unroll=True``
converts to plain builtins at any batch (and, without the WHILE loop, stays
delegable to GPU and NPU delegates).
"""

from __future__ import annotations

import keras

from keras_dynamic.converters import dynamic_conv


def looped_recurrent_layers(model) -> list:
    """The recurrent layers of ``model`` that run as a loop over time.

    Example:

    >>> import keras
    >>> inputs = keras.Input((5, 3))
    >>> x = keras.layers.GRU(4, return_sequences=True, name="gru")(inputs)
    >>> x = keras.layers.LSTM(4, unroll=True, name="unrolled")(x)
    >>> [layer.name for layer in looped_recurrent_layers(keras.Model(inputs, x))]
    ['gru']
    """
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.RNN) and not layer.unroll
    ]


def signature_batch_size(model, forms) -> int | None:
    """1 where a layer of ``model`` needs a static batch (see above), else None.

    Args:
        model: the Keras model being exported.
        forms: ``{layer name: form}`` of its dynamic convolutions, as
            `dynamic_conv.forms_applied` yields it.
    """
    if dynamic_conv.signature_batch_size(forms) == 1 or looped_recurrent_layers(model):
        return 1
    return None
