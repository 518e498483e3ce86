"""What an export shows: TensorFlow's log captured, one line per step, a progress bar.

TensorFlow's C++ logging, the MLIR converter and the TFLite interpreter write
to the process's file descriptor 2 directly (`TF_CPP_MIN_LOG_LEVEL` counts
only when set before TensorFlow loads), so an export prints about 25 lines
of it unless descriptor 2 itself is redirected while it runs.

This module imports neither TensorFlow nor Keras: a script can silence
TensorFlow's import banner with `captured_stderr` before importing it.
"""

import contextlib
import os
import sys
import tempfile
import threading

VERBOSE_LEVELS = (0, 1, 2)


class Capture:
    """What was written to descriptor 2 inside a `captured_stderr` block."""

    def __init__(self, file=None, start=0):
        self._file = file
        self._start = start
        self._end = start

    def _close(self):
        self._end = os.lseek(self._file.fileno(), 0, os.SEEK_CUR)

    def text(self) -> str:
        if self._file is None:
            return ""
        # pread: the offset is shared with descriptor 2, which may still
        # point at this file for another block.
        size = self._end - self._start
        return os.pread(self._file.fileno(), size, self._start).decode("utf-8", "replace")


class _Redirect:
    """Descriptor 2's one redirection, shared by nested and concurrent blocks.

    Only the first block to enter redirects and only the last to leave
    restores, so blocks in several threads cannot restore each other's file.
    """

    lock = threading.Lock()
    depth = 0
    saved = None
    file = None


@contextlib.contextmanager
def captured_stderr(enabled: bool = True):
    """Redirects file descriptor 2 to a temporary file for the block.

    Yields a `Capture`; its `text()` (what the block's span wrote, including
    other threads' writes) stays readable after the block. Where descriptor 2
    cannot be duplicated (a process without one) or `enabled` is False,
    nothing is redirected and `text()` is empty.

    Example:

    >>> import os
    >>> with captured_stderr() as log:
    ...     _ = os.write(2, b"converter noise\\n")
    >>> log.text()
    'converter noise\\n'
    """
    capture = _enter() if enabled else None
    if capture is None:
        yield Capture()
        return
    try:
        yield capture
    finally:
        _leave(capture)


def _enter():
    with _Redirect.lock:
        if _Redirect.depth == 0:
            try:
                saved = os.dup(2)
            except OSError:
                return None
            # Unnamed where the system allows: nothing is left if the process dies.
            _Redirect.file = tempfile.TemporaryFile()
            sys.stderr.flush()
            os.dup2(_Redirect.file.fileno(), 2)
            _Redirect.saved = saved
        _Redirect.depth += 1
        sys.stderr.flush()
        return Capture(_Redirect.file, os.lseek(_Redirect.file.fileno(), 0, os.SEEK_CUR))


def _leave(capture):
    with _Redirect.lock:
        sys.stderr.flush()
        capture._close()
        _Redirect.depth -= 1
        if _Redirect.depth == 0:
            os.dup2(_Redirect.saved, 2)
            os.close(_Redirect.saved)
            _Redirect.saved = _Redirect.file = None


def check_verbose(verbose) -> int:
    """Validates a `verbose=` argument (0, 1 or 2) and returns it."""
    if isinstance(verbose, bool) or verbose not in VERBOSE_LEVELS:
        raise ValueError(
            f"`verbose` must be one of {VERBOSE_LEVELS}. Received: verbose={verbose!r}"
        )
    return verbose


class Progress:
    """One line per finished step on stdout, and a tqdm bar on a terminal.

    `verbose=0` prints nothing; 1 prints `step` lines; 2 adds `detail`
    lines. The bar shows only where stdout is a terminal and tqdm (which
    ai-edge-litert installs) is importable; lines are printed above it.
    """

    def __init__(self, verbose: int, total: int, description: str):
        self._verbose = verbose
        self._bar = None
        if verbose >= 1:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total,
                    desc=description,
                    unit="step",
                    file=sys.stdout,
                    # None: off where stdout is not a terminal (logs, pipes).
                    disable=None,
                    leave=False,
                    bar_format="{desc}: {n_fmt}/{total_fmt} {bar} {elapsed}",
                )

    def _print(self, line):
        if self._bar is not None and not self._bar.disable:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def step(self, line: str, advance: int = 1) -> None:
        """Prints `line` (verbose >= 1) and moves the bar on."""
        if self._verbose >= 1:
            self._print(line)
        self.advance(advance)

    def detail(self, line: str) -> None:
        """Prints `line` at verbose=2 only."""
        if self._verbose >= 2:
            self._print(line)

    def advance(self, count: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def progress(verbose: int, total: int, description: str):
    """Yields a `Progress`; closes its bar when the block ends."""
    reporter = Progress(verbose, total, description)
    try:
        yield reporter
    finally:
        reporter.close()


__all__ = ["captured_stderr", "check_verbose", "Capture", "Progress", "progress"]
