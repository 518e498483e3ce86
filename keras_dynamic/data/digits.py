"""Real handwritten digits for tests and the demo, with no download.

scikit-learn ships the UCI optical digits set (1797 images, 8x8, 10
classes) inside the package, so this works on a fresh offline machine.
"""

from __future__ import annotations

import dataclasses

import numpy as np

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError as error:
    raise ImportError(
        "keras_dynamic.data needs scikit-learn, which ships the digits: "
        'pip install "keras-dynamic[demo]"'
    ) from error


@dataclasses.dataclass(frozen=True)
class DigitsSplits:
    """Train/validation/test splits of the digits.

    Images are `(n, s, s, 1)` float32 in [0, 1]; labels are int32.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10


def _count(name, size, total):
    if isinstance(size, float) and 0.0 < size < 1.0:
        return int(round(size * total))
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    raise ValueError(
        f"`{name}` must be a positive int (samples) or a float in (0, 1) "
        f"(fraction of all {total} samples). Received: {name}={size!r}"
    )


def load_digits_splits(
    image_size: int = 32,
    val_size: int | float = 360,
    test_size: int | float = 540,
    seed: int = 0,
) -> DigitsSplits:
    """Loads scikit-learn's digits as stratified train/val/test image arrays.

    Pixels (0..16) are scaled to [0, 1] and the 8x8 images are upsampled to
    `image_size` by nearest neighbour (pure NumPy, so it is cheap), giving
    inputs of a size a CNN with a few downsampling blocks can use. The
    validation split is for calibrating exit thresholds, the test split for
    reporting; both are stratified by class.

    Args:
        image_size: side of the square output images, >= 8.
        val_size: validation samples (int) or fraction of all samples.
        test_size: test samples (int) or fraction of all samples.
        seed: seed of the split.

    Returns:
        A `DigitsSplits`; the training split is what is left (897 samples
        with the defaults).

    Example:

    >>> from keras_dynamic.data import load_digits_splits
    >>> splits = load_digits_splits(image_size=16)
    >>> splits.x_train.shape, splits.x_val.shape, splits.x_test.shape
    ((897, 16, 16, 1), (360, 16, 16, 1), (540, 16, 16, 1))
    """
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size < 8
    ):
        raise ValueError(
            "`image_size` must be an int >= 8. "
            f"Received: image_size={image_size!r}"
        )
    digits = load_digits()
    images = digits.images.astype("float32") / 16.0
    labels = digits.target.astype("int32")
    total = len(labels)
    n_val = _count("val_size", val_size, total)
    n_test = _count("test_size", test_size, total)
    if n_val + n_test >= total:
        raise ValueError(
            f"`val_size` + `test_size` must leave training samples out of "
            f"{total}. Received: val_size={val_size!r}, test_size={test_size!r}"
        )
    source = (np.arange(image_size) * 8) // image_size
    images = images[:, source][:, :, source][..., np.newaxis]

    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=n_test, stratify=labels, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed
    )
    return DigitsSplits(x_train, y_train, x_val, y_val, x_test, y_test)
