"""NumPy references shared by the layer tests (not a test module)."""

import numpy as np


def numpy_conv(x, kernel, strides, padding, dilation, depthwise):
    """One example: x (H, W, C), kernel (kh, kw, C, O) -> (H', W', out)."""
    kh, kw, channels, out = kernel.shape
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    height, width = x.shape[:2]
    if padding == "same":
        out_h, out_w = -(-height // strides[0]), -(-width // strides[1])
        pad_h = max((out_h - 1) * strides[0] + span_h - height, 0)
        pad_w = max((out_w - 1) * strides[1] + span_w - width, 0)
        x = np.pad(
            x,
            [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)],
        )
    else:
        out_h = (height - span_h) // strides[0] + 1
        out_w = (width - span_w) // strides[1] + 1
    patches = np.stack(
        [
            x[
                i * dilation[0] : i * dilation[0] + (out_h - 1) * strides[0] + 1 : strides[0],
                j * dilation[1] : j * dilation[1] + (out_w - 1) * strides[1] + 1 : strides[1],
            ]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=2,
    )  # (H', W', kh*kw, C)
    flat = kernel.reshape(kh * kw, channels, out)
    if depthwise:
        return np.einsum("hwpc,pco->hwco", patches, flat).reshape(out_h, out_w, -1)
    return np.einsum("hwpc,pco->hwo", patches, flat)
