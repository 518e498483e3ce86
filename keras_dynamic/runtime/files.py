"""File safety for export folders: hashing, confined path resolution, atomic writes."""

import contextlib
import hashlib
import os
import pathlib
import secrets
import stat

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


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder.

    `os.replace` within one folder is atomic, so a reader sees the old file or
    the new one, never a half-written one. A replaced file keeps its mode; a
    new one gets the mode `open` would give it (0666 less the umask), not
    the 0600 of `tempfile.mkstemp`. The temporary name has a fixed length,
    so any name the file system accepts for ``path`` works. Errors name
    ``path``, not the temporary file.
    """
    path = pathlib.Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise type(e)(e.errno, f"Cannot write {path}: {e.strerror}") from None
    try:
        if mode is not None:
            os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: "str | os.PathLike", text: str) -> None:
    """`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


__all__ = [
    "sha256_file",
    "check_relative_path",
    "resolve_inside",
    "atomic_write_bytes",
    "atomic_write_text",
]
