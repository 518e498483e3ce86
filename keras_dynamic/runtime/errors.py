"""Exceptions of the runtime. All are `ValueError`s so callers can catch one type."""


class ManifestError(ValueError):
    """The manifest (or a policy file) is malformed or disagrees with the model files."""


class FileIntegrityError(ManifestError):
    """A file named by the manifest is missing, unsafe, resized or tampered with."""


class InputError(ValueError):
    """An input given to `Chain.predict` / `Chain.run_all` does not fit the model."""


__all__ = ["ManifestError", "FileIntegrityError", "InputError"]
