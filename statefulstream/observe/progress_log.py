"""Progress reports: one short line per batch at INFO, a JSON report at DEBUG, the last N kept.

The report is shaped like Spark's ``StreamingQueryProgress``: batch id,
input rows, input and processing rates, phase durations, event time and
watermark, state operator figures, source offsets and lag, sink figures.
With a checkpoint, report N is kept as ``<checkpoint_dir>/progress/N.json``
(the last ``keep`` of them); ``statefulstream progress DIR`` shows them.

>>> from statefulstream.observe.progress import BatchProgress
>>> report = progress_report(BatchProgress(app="a", batch_id=3, batch_ts_ms=0, records_read=10,
...                                        durations_s={"read": 0.5, "handler": 1.5}), None)
>>> report["batch_id"], report["num_input_rows"], report["processed_rows_per_second"], report["duration_ms"]["total"]
(3, 10, 5.0, 2000.0)
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from statefulstream.observe.progress import BatchProgress
from statefulstream.timeutil import format_ms

logger = logging.getLogger(__name__)

report_logger = logging.getLogger("statefulstream.observe.progress")
"""Where the one-line JSON reports go, at DEBUG."""

batch_logger = logging.getLogger("statefulstream.batches")
"""One short line per committed batch, at INFO (see :func:`batch_line`)."""


def progress_report(progress: BatchProgress, since_last_s: float | None) -> dict[str, Any]:
    """Build the report of one batch.

    Args:
        progress: the batch's figures.
        since_last_s: seconds since the previous batch's report (the input
            rate's denominator, as Spark's ``inputRowsPerSecond``), or ``None``
            for the first batch of a run (the rate is then ``None``).
    """
    p = progress
    end = p.end_offsets
    return {
        "app": p.app,
        "batch_id": p.batch_id,
        "timestamp": format_ms(p.batch_ts_ms),
        "replayed": p.replayed,
        "num_input_rows": p.records_read,
        "input_rows_per_second": p.records_read / since_last_s if since_last_s else None,
        "processed_rows_per_second": p.processing_rate,
        "duration_ms": {**{k: v * 1000 for k, v in p.durations_s.items()}, "total": p.duration_s * 1000},
        "records": {"read": p.records_read, "processed": p.records_processed, "late_dropped": p.records_late,
                    "late_kept": p.records_late_kept, "filtered": p.records_filtered,
                    "dead_lettered": dict(p.records_dead_lettered)},
        "event_time": {"watermark": format_ms(p.watermark_ms), "next_watermark": format_ms(p.next_watermark_ms),
                       "max": format_ms(p.max_event_time_ms)},
        "state_operator": {"groups_called": p.groups_called, "timeouts_fired": p.timeouts_fired,
                           "rows_updated": p.state_rows_updated, "rows_removed": p.state_rows_removed,
                           "keys": p.state_keys, "bytes": p.state_bytes,
                           "timers_pending": p.timers_pending},
        "source": {"start_offsets": dict(p.start_offsets), "end_offsets": dict(end),
                   "latest_offsets": dict(p.latest_offsets),
                   "lag": {part: max(0, pos - end.get(part, 0)) for part, pos in p.latest_offsets.items()},
                   "pending_records": p.pending_records, "data_loss_events": p.data_loss_events},
        "sink": {"rows_output": p.rows_output, "rows": dict(p.sink_rows), "retries": dict(p.sink_retries_by_sink)},
    }


def batch_line(progress: BatchProgress) -> str:
    """The INFO line of one batch: id, records, output rows, watermark, duration.

    >>> batch_line(BatchProgress(app="a", batch_id=3, batch_ts_ms=0, records_read=10, records_processed=9,
    ...                          rows_output=2, watermark_ms=60_000, durations_s={"handler": 0.25}))
    "app 'a' batch 3: 10 records read, 9 processed, 2 rows out, watermark 1970-01-01T00:01:00.000Z, 0.250 s"
    """
    p = progress
    return (f"app {p.app!r} batch {p.batch_id}{' (replayed)' if p.replayed else ''}: {p.records_read} records "
            f"read, {p.records_processed} processed, {p.rows_output} rows out, watermark {format_ms(p.watermark_ms)}, "
            f"{p.duration_s:.3f} s")


class ProgressLog:
    """Logs each batch (a line at INFO, the JSON report at DEBUG) and keeps the last ``keep`` reports.

    Args:
        directory: where reports are kept (``<checkpoint_dir>/progress``), or
            ``None`` to only log them.
        keep: how many reports to keep (>= 1).
        monotonic: clock of the input rate.
        recent: also append each report here (the status page's history;
            give it a ``maxlen`` to bound it).
    """

    def __init__(self, directory: str | None, *, keep: int = 100,
                 monotonic: Callable[[], float] = time.monotonic,
                 recent: collections.deque[dict[str, Any]] | None = None) -> None:
        self.directory = directory
        self.keep = keep
        self.recent = recent
        self._monotonic = monotonic
        self._last_s: float | None = None
        self._pruned = False

    def on_batch(self, progress: BatchProgress) -> None:
        """Log and keep one batch's report (a ``ProgressListener``).

        Writing the file is best effort: the batch is already committed, and
        a full disk must not stop the stream for a report.
        """
        now = self._monotonic()
        since = now - self._last_s if self._last_s is not None else None
        self._last_s = now
        if batch_logger.isEnabledFor(logging.INFO):
            batch_logger.info("%s", batch_line(progress))
        if self.directory is None and self.recent is None and not report_logger.isEnabledFor(logging.DEBUG):
            return
        report = progress_report(progress, since)
        line = orjson.dumps(report)
        report_logger.debug("%s", line.decode())
        if self.directory is not None:
            try:
                self._keep(progress.batch_id, line)
            except OSError as exc:
                logger.warning("app %r: cannot keep the progress report of batch %d in %s: %s",
                               progress.app, progress.batch_id, self.directory, exc)
        if self.recent is not None:
            self.recent.append(report)  # after the file: the page never shows a batch the checkpoint lacks

    def _keep(self, batch_id: int, line: bytes) -> None:
        directory = str(self.directory)
        if not self._pruned:
            os.makedirs(directory, exist_ok=True)
            self._pruned = True
            for old in report_ids(directory)[:-self.keep]:
                os.remove(os.path.join(directory, f"{old}.json"))
        path = os.path.join(directory, f"{batch_id}.json")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(line + b"\n")
        os.replace(tmp, path)  # a reader never sees half a report
        try:
            os.remove(os.path.join(directory, f"{batch_id - self.keep}.json"))
        except FileNotFoundError:
            pass


def report_ids(directory: str) -> list[int]:
    """Return the batch ids of the reports kept in ``directory``, ascending (none before the first report)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(name[:-5]) for name in names if name.endswith(".json") and name[:-5].isdigit())


def read_reports(directory: str, last: int | None = None) -> list[dict[str, Any]]:
    """Return the kept reports of ``directory`` (the last ``last`` of them), oldest first."""
    ids = report_ids(directory)
    if last is not None:
        ids = ids[-last:] if last > 0 else []
    reports = []
    for batch_id in ids:
        try:
            with open(os.path.join(directory, f"{batch_id}.json"), "rb") as f:
                reports.append(orjson.loads(f.read()))
        except FileNotFoundError:
            continue  # purged by the running app since the listing
    return reports
