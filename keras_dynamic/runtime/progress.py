"""Optional progress bars for long runs (tqdm, imported only when a bar may show)."""

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


def open_bar(total, progress, description):
    """A tqdm bar over ``total`` samples, or None where none is to be shown.

    ``progress=None`` (automatic) shows a bar only for calls of at least
    `AUTO_MIN_SAMPLES` samples that run longer than `AUTO_DELAY_SECONDS`,
    on a terminal, and where tqdm is installed (ai-edge-litert installs it);
    ``True`` always shows one (and needs tqdm); ``False`` never does. The
    caller closes the bar. Short calls return before importing anything:
    `predict` on one sample must stay as cheap as it was.
    """
    if progress is False or (progress is None and total < AUTO_MIN_SAMPLES):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        if progress:
            raise ImportError("progress=True needs tqdm (`pip install tqdm`).") from None
        return None
    automatic = progress is None
    return tqdm(
        total=total,
        desc=description,
        unit="sample",
        # tqdm's disable=None turns the bar off where stderr is not a terminal.
        disable=None if automatic else False,
        delay=AUTO_DELAY_SECONDS if automatic else 0.0,
    )


__all__ = ["check_progress", "open_bar"]
