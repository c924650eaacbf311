"""``ProgressBar``: records done of records available, for ``available_now`` / backfill runs.

Drawn with tqdm (rate and ETA included) on a terminal, silent otherwise, so
logs of cron jobs and containers stay clean. ``App.run`` attaches one as a
listener when the trigger is ``available_now``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from statefulstream.observe.progress import BatchProgress


class ProgressBar:
    """A progress bar fed by batch reports.

    The total is what was available when the first batch was planned
    (``records_read + pending_records`` of the first report): the target of an
    ``available_now`` run.

    Args:
        name: shown before the bar (the app's name).
        stream: where to draw; default ``sys.stderr``. Nothing is drawn
            unless it is a terminal.

    Attributes:
        enabled: whether the bar is drawn (the stream is a terminal).
    """

    def __init__(self, name: str, *, stream: TextIO | None = None) -> None:
        self.name = name
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty()
        self._bar: Any = None  # a tqdm bar, made (and tqdm imported) on the first report

    def on_batch(self, progress: BatchProgress) -> None:
        """Advance by the batch's records (a ``ProgressListener``); the first report sets the total."""
        if not self.enabled:
            return
        if self._bar is None:
            # Imported here: most runs are not on a terminal and never draw (tqdm costs ~2 MB of memory).
            from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

            total = progress.records_read + progress.pending_records if progress.pending_records >= 0 else None
            self._bar = tqdm(desc=self.name, total=total, unit="rec", unit_scale=True, file=self._stream,
                             dynamic_ncols=True)
        self._bar.update(progress.records_read)

    def close(self) -> None:
        """Finish the bar's line. Idempotent."""
        if self._bar is not None:
            self._bar.close()
