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

VERBOSE_LEVELS = (0, 1, 2)


class Capture:
    """What was written to descriptor 2 inside a `captured_stderr` block."""

    def __init__(self, file):
        self._file = file

    def text(self) -> str:
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")


@contextlib.contextmanager
def captured_stderr(enabled: bool = True):
    """Redirects file descriptor 2 to a temporary file for the block.

    Yields a `Capture`; its `text()` stays readable after the block. Where
    descriptor 2 cannot be duplicated (a process without one) or
    `enabled` is False, nothing is redirected and `text()` is empty.

    Example:

    >>> import os
    >>> with captured_stderr() as log:
    ...     _ = os.write(2, b"converter noise\\n")
    >>> log.text()
    'converter noise\\n'
    """
    if not enabled:
        yield Capture(None)
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield Capture(None)
        return
    # Unnamed where the system allows: nothing is left if the process dies.
    file = tempfile.TemporaryFile()
    try:
        sys.stderr.flush()
        os.dup2(file.fileno(), 2)
        try:
            yield Capture(file)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
    finally:
        os.close(saved)


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
