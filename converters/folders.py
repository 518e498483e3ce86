"""Export folders that appear whole or not at all.

An export is built in a staging folder beside its destination and renamed
into place. Staging folders are named `.keras_dynamic-<kind>-<host>-<pid>-<random>`:
the name (a fixed 45 characters, whatever the destination's) says which
process on which host made it, so that the next export can remove the ones
left by an export that was killed, and only those.
"""

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time

from keras_dynamic.runtime import manifest as schema

# A folder whose process is gone is stale at once; one whose process cannot be
# checked (another host, or a PID reused since) once it is this old.
STALE_SECONDS = 24 * 3600
_NAME = re.compile(r"\.keras_dynamic-(partial|old)-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}")
# Temporaries of `runtime.files.atomic_write_bytes`: left by a killed
# `save_policy()`, they are part of an export folder, not user files.
_WRITE_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{16}")
_MAX_MANIFEST_BYTES = 16 << 20


def _host():
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid):
    if os.name == "nt":
        # os.kill(pid, 0) would send CTRL_C_EVENT there; rely on age alone.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(match, entry):
    host, pid = match.group(2), int(match.group(3))
    if host == _host() and pid != os.getpid() and not _alive(pid):
        return True
    try:
        age = time.time() - entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    return age > STALE_SECONDS


def remove_stale(parent: str) -> list:
    """Removes staging folders in `parent` left by killed exports; returns their paths.

    Only folders named like ours whose process is gone (same host) or that
    are older than `STALE_SECONDS` go; a running export's folder stays.
    """
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if (
            match
            and entry.is_dir(follow_symlinks=False)
            and _stale(match, entry)
        ):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def make_staging(parent: str, kind: str = "partial") -> str:
    """Creates an empty staging folder in `parent` and returns its path.

    `os.mkdir` applies the umask, so the export gets the mode any folder of
    the user gets (`tempfile.mkdtemp` would make it 0700).
    """
    remove_stale(parent)
    prefix = f".keras_dynamic-{kind}-{_host()}-{os.getpid()}-"
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def check_destination(out_dir: str, overwrite: bool) -> None:
    """Refuses an `out_dir` that exists, unless it is a previous export to replace.

    A previous export is a real folder (not a link) holding a manifest.json
    with this project's `format` and nothing but the files that manifest
    lists (and temporaries of an interrupted manifest write).
    """
    if not os.path.lexists(out_dir):
        return
    if not overwrite:
        raise FileExistsError(
            f"Export folder '{out_dir}' already exists; pass overwrite=True "
            "to replace a previous export."
        )
    refuse = f"overwrite=True replaces only a previous export, and '{out_dir}'"
    if os.path.islink(out_dir):
        raise FileExistsError(f"{refuse} is a symbolic link. Nothing was changed.")
    if not os.path.isdir(out_dir):
        raise FileExistsError(f"{refuse} is a file. Nothing was changed.")
    cwd = os.path.realpath(os.getcwd())
    real = os.path.realpath(out_dir)
    if os.path.commonpath([cwd, real]) == real:
        raise FileExistsError(
            f"{refuse} is the current directory or contains it. Nothing was "
            "changed."
        )
    listed = _listed_files(out_dir, refuse)
    unexpected = sorted(
        name
        for name in os.listdir(out_dir)
        if name not in listed and not _WRITE_TEMPORARY.fullmatch(name)
    )
    if unexpected:
        shown = ", ".join(repr(n) for n in unexpected[:5])
        more = f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""
        raise FileExistsError(
            f"{refuse} holds files its manifest does not list ({shown}{more}). "
            "Move them elsewhere or choose another folder. Nothing was changed."
        )


def _listed_files(out_dir, refuse):
    """Names of manifest.json and the top-level entries its `files` list."""
    path = os.path.join(out_dir, schema.MANIFEST_NAME)
    try:
        info = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST_BYTES:
            raise ValueError
        with open(path, "rb") as file:
            manifest = json.loads(file.read())
        if manifest.get("format") != schema.FORMAT:
            raise ValueError
        names = {entry["path"].split("/")[0] for entry in manifest["files"]}
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise FileExistsError(
            f"{refuse} has no {schema.MANIFEST_NAME} written by keras_dynamic "
            f"(format {schema.FORMAT!r}). Nothing was changed."
        ) from None
    return names | {schema.MANIFEST_NAME}


# renameat2(2) flags (linux/fs.h).
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(source, target, flags):
    """One renameat2 call; False where the system or file system lacks it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if call(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), target)


def move_into_place(staging: str, out_dir: str) -> None:
    """Renames the finished `staging` folder to `out_dir`, replacing a previous export.

    On Linux the replacement is one `renameat2(RENAME_EXCHANGE)`: at every
    moment `out_dir` is the old complete export or the new one. Where the
    system or file system lacks it, the old export is renamed aside first,
    so `out_dir` is missing for the instant between two renames (never
    half-written).
    """
    if not os.path.lexists(out_dir):
        # NOREPLACE: a plain rename would silently replace an empty folder
        # created at out_dir meanwhile.
        if not _renameat2(staging, out_dir, _RENAME_NOREPLACE):
            os.rename(staging, out_dir)
        return
    if _renameat2(staging, out_dir, _RENAME_EXCHANGE):
        # staging now holds the previous export.
        shutil.rmtree(staging, ignore_errors=True)
        return
    aside = make_staging(os.path.dirname(out_dir), kind="old")
    os.rename(out_dir, os.path.join(aside, "export"))
    os.rename(staging, out_dir)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(parent: str):
    """Yields a new staging folder in `parent`; removes what is left of it at the end.

    After `move_into_place` nothing is left; after an error, the partial export.
    """
    staging = make_staging(parent)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "check_destination",
    "make_staging",
    "move_into_place",
    "remove_stale",
    "staging_folder",
]
