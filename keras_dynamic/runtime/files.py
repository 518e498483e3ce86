"""File safety for export folders: hashing, confined path resolution, atomic writes."""

import hashlib
import os
import pathlib
import tempfile

from keras_dynamic.runtime.errors import FileIntegrityError

_CHUNK = 1 << 20


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB chunks.

    Example:

    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_file(f.name)[:16]
    'ba7816bf8f01cfea'
    >>> os.remove(f.name)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_relative_path(relpath, where):
    """Refuses paths that could name something outside an export folder.

    Checked on the text alone (the manifest may be validated before the
    files exist): absolute paths, drive letters, backslashes, ``..`` and
    empty components are refused.
    """
    if not isinstance(relpath, str) or not relpath:
        raise FileIntegrityError(f"{where}: a file path must be a non-empty string.")
    pure = pathlib.PurePosixPath(relpath)
    if (
        pure.is_absolute()
        or os.path.isabs(relpath)
        or "\\" in relpath
        or ":" in relpath
    ):
        raise FileIntegrityError(
            f"{where}: file path {relpath!r} must be relative to the export "
            "folder (no absolute paths, drive letters or backslashes)."
        )
    if any(part in ("..", ".", "") for part in relpath.split("/")):
        raise FileIntegrityError(
            f"{where}: file path {relpath!r} may not contain '..', '.' or "
            "empty components."
        )


def resolve_inside(folder, relpath, where):
    """Returns the real path of ``folder/relpath``, refusing anything outside.

    Symlinks are refused outright (even ones pointing inside the folder): an
    export is written by `converters.export_stages` as plain files, so a link
    is a sign of tampering and the file it names could change after the check.
    """
    check_relative_path(relpath, where)
    root = pathlib.Path(folder).resolve()
    candidate = root.joinpath(*relpath.split("/"))
    current = root
    for part in relpath.split("/"):
        current = current / part
        if current.is_symlink():
            raise FileIntegrityError(
                f"{where}: {relpath!r} goes through a symbolic link "
                f"({current.name!r}); export folders hold plain files only."
            )
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise FileIntegrityError(
            f"{where}: {relpath!r} resolves outside the export folder {root}."
        )
    if not resolved.is_file():
        raise FileIntegrityError(
            f"{where}: {relpath!r} is missing from the export folder {root}."
        )
    return resolved


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` through a temporary file in the same folder.

    `os.replace` within one folder is atomic, so a reader sees the old file or
    the new one, never a half-written one.
    """
    path = pathlib.Path(path)
    # mkstemp creates the file 0600; keep the mode the file had (or 0644) so
    # replacing a manifest does not make it unreadable to other users.
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


__all__ = [
    "sha256_file",
    "check_relative_path",
    "resolve_inside",
    "atomic_write_text",
]
