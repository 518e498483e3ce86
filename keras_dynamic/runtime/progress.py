"""Optional progress bars for long runs (tqdm, imported only when a bar may show)."""

import contextlib

# Calls on fewer samples than this never show a bar unless asked to.
AUTO_MIN_SAMPLES = 1000
# An automatic bar appears only once a call has run this long (seconds).
AUTO_DELAY_SECONDS = 2.0


def check_progress(progress):
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(
            "`progress` must be True, False or None (automatic). "
            f"Received: progress={progress!r}"
        )


@contextlib.contextmanager
def progress_bar(total, progress, description):
    """Yields ``advance(count)`` for a tqdm bar over ``total`` samples, or None.

    ``progress=None`` (automatic) shows a bar only for calls of at least
    `AUTO_MIN_SAMPLES` samples that run longer than `AUTO_DELAY_SECONDS`,
    on a terminal, and where tqdm is installed (ai-edge-litert installs it);
    ``True`` always shows one (and needs tqdm); ``False`` never does.
    """
    check_progress(progress)
    if progress is False or (progress is None and total < AUTO_MIN_SAMPLES):
        yield None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        if progress:
            raise ImportError(
                "progress=True needs tqdm (`pip install tqdm`)."
            ) from None
        yield None
        return
    automatic = progress is None
    bar = tqdm(
        total=total,
        desc=description,
        unit="sample",
        # tqdm's disable=None turns the bar off where stderr is not a terminal.
        disable=None if automatic else False,
        delay=AUTO_DELAY_SECONDS if automatic else 0.0,
    )
    try:
        yield bar.update
    finally:
        bar.close()


__all__ = ["check_progress", "progress_bar"]
