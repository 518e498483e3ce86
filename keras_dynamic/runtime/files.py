"""File safety for export folders: confined reads, strict JSON, hashing, atomic writes.

Every file of an export is read once, through a file descriptor opened
component by component inside the export folder (``openat`` with
``O_NOFOLLOW``), so no symbolic link is followed and nothing outside the
folder is read, even if the folder changes while it is read. The bytes read
are the bytes hashed and the bytes handed to the interpreter.
"""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import secrets
import stat

from keras_dynamic.runtime.errors import FileIntegrityError
from keras_dynamic.runtime.errors import ManifestError
from keras_dynamic.runtime.errors import describe

_CHUNK = 1 << 20
# Longest file-name component of common file systems (ext4, APFS, NTFS) and
# longest path (Linux PATH_MAX), in bytes.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# POSIX systems open relative to a folder descriptor; elsewhere (Windows) the
# path is checked component by component first, then opened.
_OPENAT = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    # A FIFO opened for reading blocks until a writer appears; non-blocking,
    # the open returns and the type check below refuses it.
    | getattr(os, "O_NONBLOCK", 0)
)
# No writer nests JSON more than a handful of levels. Longer ints are refused
# while parsing; shorter out-of-range ones by the checks that name their key.
MAX_DEPTH = 32
MAX_INT_DIGITS = 1000


def sha256_file(path: "str | os.PathLike") -> str:
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
    files exist): absolute paths, drive letters, backslashes, ``..``, empty
    components, control characters (NUL included), text that is not valid
    Unicode and components longer than the file systems allow are refused.
    """
    if not isinstance(relpath, str) or not relpath:
        raise FileIntegrityError(f"{where}: a file path must be a non-empty string.")
    try:
        encoded = relpath.encode("utf-8")
    except UnicodeEncodeError:
        raise FileIntegrityError(
            f"{where}: file path {describe(relpath)} is not valid Unicode (a lone "
            "surrogate)."
        ) from None
    parts = encoded.split(b"/")
    if len(encoded) > MAX_PATH_BYTES or any(len(p) > MAX_NAME_BYTES for p in parts):
        raise FileIntegrityError(
            f"{where}: file path {describe(relpath)} is longer than {MAX_PATH_BYTES} "
            f"bytes or has a component longer than {MAX_NAME_BYTES} bytes."
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in relpath):
        raise FileIntegrityError(
            f"{where}: file path {describe(relpath)} contains a control character."
        )
    pure = pathlib.PurePosixPath(relpath)
    if (
        pure.is_absolute()
        or os.path.isabs(relpath)
        or "\\" in relpath
        or ":" in relpath
    ):
        raise FileIntegrityError(
            f"{where}: file path {describe(relpath)} must be relative to the export "
            "folder (no absolute paths, drive letters or backslashes)."
        )
    if any(part in (b"..", b".", b"") for part in parts):
        raise FileIntegrityError(
            f"{where}: file path {describe(relpath)} may not contain '..', '.' or "
            "empty components."
        )


def resolve_inside(folder, relpath, where):
    """Returns the real path of ``folder/relpath``, refusing anything outside.

    Symlinks are refused outright (even ones pointing inside the folder): an
    export is written by `converters.export_stages` as plain files, so a link
    is a sign of tampering and the file it names could change after the check.
    Used where `os.open` cannot open relative to a folder descriptor.
    """
    root = pathlib.Path(folder).resolve()
    candidate = root.joinpath(*relpath.split("/"))
    current = root
    for part in relpath.split("/"):
        current = current / part
        if current.is_symlink():
            raise FileIntegrityError(
                f"{where}: {describe(relpath)} goes through a symbolic link "
                f"({current.name!r}); export folders hold plain files only."
            )
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root):
        raise FileIntegrityError(
            f"{where}: {describe(relpath)} resolves outside the export folder {root}."
        )
    return resolved


def _open_error(error, relpath, where, folder, link):
    if link:
        return FileIntegrityError(
            f"{where}: {describe(relpath)} goes through a symbolic link; export folders "
            "hold plain files only."
        )
    if error.errno == errno.ENOENT:
        return FileIntegrityError(
            f"{where}: {describe(relpath)} is missing from {folder}."
        )
    return FileIntegrityError(f"{where}: cannot open {describe(relpath)}: {error.strerror}.")


def _open_confined(folder, relpath, where):
    """A read-only descriptor of ``folder/relpath`` reached without following links."""
    if not _OPENAT:
        real = resolve_inside(folder, relpath, where)
        try:
            return os.open(real, _READ_FLAGS)
        except OSError as e:
            raise _open_error(e, relpath, where, folder, False) from None
    try:
        current = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise FileIntegrityError(
            f"{where}: cannot open the export folder {folder}: {e.strerror}."
        ) from None
    *folders, name = relpath.split("/")
    try:
        for part in folders:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            following = _open_at(part, flags, current, relpath, where, folder)
            os.close(current)
            current = following
        return _open_at(name, _READ_FLAGS | os.O_NOFOLLOW, current, relpath, where, folder)
    finally:
        os.close(current)


def _open_at(name, flags, folder_fd, relpath, where, folder):
    try:
        return os.open(name, flags, dir_fd=folder_fd)
    except OSError as e:
        try:
            link = stat.S_ISLNK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
        except OSError:
            link = False
        raise _open_error(e, relpath, where, folder, link) from None


def read_inside(folder, relpath, where, *, size=None, limit=None):
    """Reads a regular file inside ``folder`` once and returns its bytes.

    ``relpath`` is ``/``-separated; no component may be a symbolic link and
    the file must be a regular file (a FIFO, device or folder is refused
    without blocking). With ``size``, a file of any other size is refused
    before a byte is read; with ``limit``, a file larger than that is.

    Raises:
        FileIntegrityError: naming ``where`` and ``relpath``.
    """
    fd = _open_confined(folder, relpath, where)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileIntegrityError(
                f"{where}: {describe(relpath)} is not a regular file (a folder, FIFO, "
                "socket or device)."
            )
        if size is not None and info.st_size != size:
            raise FileIntegrityError(
                f"{where}: size is {info.st_size} bytes but the manifest says "
                f"{size}; the file was changed or truncated."
            )
        if limit is not None and info.st_size > limit:
            raise FileIntegrityError(
                f"{where}: {describe(relpath)} is {info.st_size} bytes, more than the "
                f"{limit} bytes allowed."
            )
        chunks, remaining = [], info.st_size
        while remaining > 0:
            chunk = os.read(fd, min(remaining, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if remaining or os.read(fd, 1):
            raise FileIntegrityError(
                f"{where}: {describe(relpath)} changed size while it was read."
            )
        return b"".join(chunks)
    except OSError as e:
        raise FileIntegrityError(
            f"{where}: cannot read {describe(relpath)}: {e.strerror}."
        ) from None
    finally:
        os.close(fd)


def _object_without_duplicates(pairs):
    """``object_pairs_hook`` refusing duplicate keys.

    JSON leaves duplicates undefined: Python keeps the last, some other
    readers keep the first, so one file could mean two different chains.
    """
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestError(f"the key {describe(key)} appears twice in one object.")
        obj[key] = value
    return obj


def _parse_int(digits):
    # Python refuses ints over 4,300 digits with advice meant for programs;
    # no manifest field needs more than 19 digits (int64), so say so earlier.
    if len(digits) > MAX_INT_DIGITS:
        raise ManifestError(
            f"an integer of {len(digits)} digits; no field takes more than "
            f"{MAX_INT_DIGITS}."
        )
    return int(digits)


def _refuse_constant(name):
    raise ManifestError(f"{name} is not valid JSON (only finite numbers are).")


def _check_depth(document):
    """Refuses nesting deeper than `MAX_DEPTH` (walked without recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ManifestError(f"JSON nested more than {MAX_DEPTH} levels deep.")
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, (dict, list)):
            pending.extend((child, depth + 1) for child in children)


def parse_json(data, source):
    """Parses JSON ``data`` (bytes or str) strictly; every failure is a `ManifestError`.

    Strict means: UTF-8, no duplicate keys, no NaN/Infinity, at most
    `MAX_DEPTH` levels. ``source`` names the file in messages.
    """
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(
            f"{source}: not UTF-8 text (byte {e.start}: {e.reason})."
        ) from None
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_int=_parse_int,
        )
    except ManifestError as e:
        raise ManifestError(f"{source}: {e}") from None
    except RecursionError:
        raise ManifestError(f"{source}: JSON nested too deeply to parse.") from None
    except ValueError as e:  # JSONDecodeError
        raise ManifestError(f"{source}: not valid JSON ({e}).") from None
    try:
        _check_depth(document)
    except ManifestError as e:
        raise ManifestError(f"{source}: {e}") from None
    return document


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
    "read_inside",
    "parse_json",
    "atomic_write_bytes",
    "atomic_write_text",
]
