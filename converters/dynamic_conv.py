"""Which inference form each dynamic convolution of an export takes.

`export_stages(..., dynamic_conv_form="auto")` (the default) picks the form
per layer by the rule below, measured on this project's CPU benchmarks
(BENCHMARKS.md, "Dynamic convolution inference forms"):

* A full convolution (`CondConv2D`, `DynamicConv2D`) whose input height and
  width are known takes `"patch_matmul"`: its batched matmul has a runtime
  operand that XNNPACK runs, at the MACs of one convolution and any batch
  (1.6x the static CIFAR CNN against 4.1x for `"mix_outputs"` and 4.3x for
  `"mix_kernels"`).
* A depthwise one (`DepthwiseCondConv2D`) takes `"mix_outputs"`: K static
  depthwise convolutions, on XNNPACK at any batch (2.2x the static separable
  CNN). `"mix_kernels"` is faster at batch 1 (1.7x) but fixes every stage
  signature of the export to batch 1, and the tap sum of `"patch_matmul"`
  is slower (2.5x); pass `dynamic_conv_form="mix_kernels"` for an export
  that only ever runs one sample at a time.
* int8 exports take `"mix_outputs"` everywhere: its convolutions have
  constant filters, quantized per channel and run by XNNPACK (4.6x the int8
  static CNN), while the int8 BATCH_MATMUL of `"patch_matmul"` runs on the
  reference kernel (19x). `"mix_kernels"` cannot be quantized at all (an
  int8 CONV_2D needs a constant per-channel filter) and is refused.
* A layer whose input height or width is unknown takes `"mix_outputs"`
  (`"patch_matmul"` slices the input at fixed positions).
"""

from __future__ import annotations

import contextlib

from keras_dynamic.layers._dynamic_conv_base import INFERENCE_FORMS
from keras_dynamic.layers._dynamic_conv_base import DynamicConvBase
from keras_dynamic.layers._sublayers import sublayers

AUTO = "auto"
EXPORT_FORMS = (AUTO, None, *INFERENCE_FORMS)


def check_form(form):
    """Raises a ValueError naming the choices when `form` is not one."""
    if form not in EXPORT_FORMS:
        raise ValueError(
            f"`dynamic_conv_form` must be one of {EXPORT_FORMS}. "
            f"Received: dynamic_conv_form={form!r}"
        )


def dynamic_conv_layers(model):
    """Every dynamic convolution inside `model`, nested models included."""
    return sublayers(model, DynamicConvBase)


def auto_form(layer, quantize=None):
    """The inference form `"auto"` gives `layer` (see the module docstring).

    Example:

    >>> import keras, keras_dynamic as kd
    >>> from keras_dynamic.converters.dynamic_conv import auto_form
    >>> inputs = keras.Input((8, 8, 3))
    >>> conv = kd.layers.CondConv2D(4, 3)
    >>> _ = conv(inputs)
    >>> auto_form(conv), auto_form(conv, quantize="int8")
    ('patch_matmul', 'mix_outputs')
    """
    if quantize == "int8" or layer._depthwise:
        return "mix_outputs"
    shapes = [node.input_tensors[0].shape for node in layer._inbound_nodes]
    if not shapes or any(None in shape[1:3] for shape in shapes):
        return "mix_outputs"
    return "patch_matmul"


@contextlib.contextmanager
def forms_applied(model, form, quantize=None):
    """Sets the export's inference forms for the block; yields them by layer.

    Args:
        model: the Keras model being exported.
        form: one of `EXPORT_FORMS`: `"auto"` picks per layer (`auto_form`),
            `None` keeps each layer's own form, a form name sets it on all.
        quantize: the export's `quantize` option (`auto` depends on it).

    Yields:
        `{layer name: form}` for every dynamic convolution of `model`. Each
        layer's own form is restored when the block ends, also on error.

    Raises:
        ValueError: for an int8 export with a `"mix_kernels"` layer.
    """
    check_form(form)
    layers = dynamic_conv_layers(model)
    previous = [layer.inference_form for layer in layers]
    try:
        for layer in layers:
            if form == AUTO:
                layer.inference_form = auto_form(layer, quantize)
            elif form is not None:
                layer.inference_form = form
        forms = {layer.name: layer.inference_form for layer in layers}
        _check_quantizable(forms, quantize)
        yield forms
    finally:
        for layer, old in zip(layers, previous):
            layer.inference_form = old


def _check_quantizable(forms, quantize):
    mixed = [name for name, form in forms.items() if form == "mix_kernels"]
    if quantize == "int8" and mixed:
        raise ValueError(
            f"Dynamic convolution(s) {mixed} use inference_form='mix_kernels', "
            "whose filter is computed at run time: an int8 CONV_2D needs a "
            "constant filter, so it cannot be quantized. Export with "
            "dynamic_conv_form='auto' or 'mix_outputs' (constant filters, "
            "quantized per channel), or set those layers' inference_form."
        )


def signature_batch_size(forms):
    """The batch size stage signatures must fix, or None for any batch.

    `"mix_kernels"` folds the batch into the channels of one convolution,
    which TFLite builtins convert only with a static batch of 1.

    Args:
        forms: `{layer name: form}` as `forms_applied` yields it.
    """
    return 1 if "mix_kernels" in forms.values() else None
