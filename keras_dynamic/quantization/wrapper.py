"""`QuantizeWrapper`: runs a layer on fake-quantized weights and fake-quantizes its outputs."""

import keras

from keras_dynamic.quantization.activation_quantizer import ActivationQuantizer
from keras_dynamic.quantization.fake_quant import fake_quantize_weight
from keras_dynamic.quantization.weights import quantized_weights


@keras.saving.register_keras_serializable(package="keras_dynamic")
class QuantizeWrapper(keras.layers.Wrapper):
    """The quantization-aware form of one layer; `quantize_aware` places them.

    The wrapped layer runs unchanged, but every filter it reads (see
    `quantized_weights`) is first rounded to its per-channel int8 grid; the
    gradient reaches the float weights straight through. This works for any
    layer, keras-dynamic's included, because the substitution happens where
    Keras reads variable values (a `keras.StatelessScope`), not in the
    layer's code. Updates the layer makes to its state (moving statistics,
    seeds) and the losses it adds are carried out of that scope.

    The wrapper takes the wrapped layer's name, so a model's output names
    (and the losses keyed by them) stay the same.

    Args:
        layer: the layer to wrap; its weights are shared, not copied.
        quantize_outputs: one boolean per output of the layer: whether that
            output is a tensor of the int8 graph (see `quantize_aware`).
        ema_decay: of the output quantizers' range tracking.

    Example:

    >>> import numpy as np
    >>> dense = keras.layers.Dense(3)
    >>> dense.build((None, 4))
    >>> wrapped = QuantizeWrapper(dense, quantize_outputs=(True,))
    >>> y = wrapped(np.ones((2, 4), "float32"), training=True)
    >>> tuple(y.shape), wrapped.name == dense.name
    ((2, 3), True)
    """

    def __init__(self, layer, quantize_outputs=(True,), ema_decay=0.99, **kwargs):
        if not layer.built:
            # Its variables must exist before the wrapper maps them to their
            # quantized values.
            raise ValueError(
                f"QuantizeWrapper: layer '{layer.name}' is not built. Build it "
                "first (call it once, or layer.build(input_shape)); "
                "quantize_aware does this for a whole model."
            )
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.quantize_outputs = tuple(bool(flag) for flag in quantize_outputs)
        self.ema_decay = ema_decay
        self.output_quantizers = [
            ActivationQuantizer(ema_decay=ema_decay, name=f"output_quantizer_{index}")
            if flag
            else None
            for index, flag in enumerate(self.quantize_outputs)
        ]
        self._weight_axes = quantized_weights(layer)

    def build(self, *args, **kwargs):
        # Built here, not on first call: a JAX training step must find every
        # variable already made.
        for quantizer in self.output_quantizers:
            if quantizer is not None and not quantizer.built:
                quantizer.build(())
        self.built = True

    def _quantized_state(self):
        mapping = []
        for variable in self.layer.variables:
            value = variable.value
            axes = self._weight_axes.get(id(variable))
            if axes is not None:
                value = fake_quantize_weight(value, axes)
            mapping.append((variable, value))
        return mapping

    def call(self, *args, training=None, **kwargs):
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        scope = keras.StatelessScope(
            state_mapping=self._quantized_state(), collect_losses=True
        )
        before = dict(scope.state_mapping)
        with scope:
            outputs = self.layer(*args, **kwargs)
        for variable in self.layer.variables:
            value = scope.get_current_value(variable)
            if value is not before[id(variable)]:
                variable.assign(value)
        if scope.losses:
            self.add_loss(scope.losses)
        return self._quantize_outputs(outputs, training)

    def _quantize_outputs(self, outputs, training):
        flat = keras.tree.flatten(outputs)
        if len(flat) != len(self.quantize_outputs):
            raise ValueError(
                f"QuantizeWrapper '{self.name}': the layer returned {len(flat)} "
                f"tensors, but quantize_outputs has {len(self.quantize_outputs)} "
                "entries."
            )
        flat = [
            quantizer(tensor, training=training) if quantizer is not None else tensor
            for quantizer, tensor in zip(self.output_quantizers, flat)
        ]
        return keras.tree.pack_sequence_as(outputs, flat)

    def compute_output_spec(self, *args, **kwargs):
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "quantize_outputs": list(self.quantize_outputs),
            "ema_decay": self.ema_decay,
        }
