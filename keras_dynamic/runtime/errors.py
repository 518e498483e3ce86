"""Exceptions of the runtime. All are `ValueError`s so callers can catch one type."""

import reprlib


class ManifestError(ValueError):
    """The manifest (or a policy file) is malformed or disagrees with the model files."""


class FileIntegrityError(ManifestError):
    """A file named by the manifest is missing, unsafe, resized, tampered with or unusable."""


class InputError(ValueError):
    """An input given to `Chain.predict` / `Chain.run_all` does not fit the model."""


class NonFiniteOutputError(InputError):
    """An exit gave NaN or Inf for some inputs (the model overflowed on them).

    Attributes:
        exit_names: the exits whose values are not finite.
        rows: ``(K,)`` indices (into the call's inputs) of the samples concerned.
    """

    def __init__(self, message, *, exit_names, rows):
        super().__init__(message)
        self.exit_names = exit_names
        self.rows = rows


class _Short(reprlib.Repr):
    def repr_int(self, x, level):
        # repr of an int over 4300 digits raises; the size is what matters.
        if x.bit_length() > 128:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _Short()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 8
_SHORT.maxlevel = 3
_SHORT.maxlong = 40
# Hard cap on what a message embeds, whatever the value's type.
_MAX_CHARS = 200


def describe(value):
    """A bounded ``repr`` for error messages: never more than 200 characters.

    Received values can be huge (a 15 KB string, a deeply nested list); the
    message keeps their start and shape only.

    >>> len(describe("x" * 15_000))
    80
    >>> describe([[[[1]]]])
    '[[[[...]]]]'
    """
    text = _SHORT.repr(value)
    if len(text) > _MAX_CHARS:
        text = text[: _MAX_CHARS - 3] + "..."
    return text


__all__ = [
    "ManifestError",
    "FileIntegrityError",
    "InputError",
    "NonFiniteOutputError",
    "describe",
]
