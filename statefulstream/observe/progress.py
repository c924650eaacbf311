"""``BatchProgress``: the per-batch report, like Spark's StreamingQueryProgress.

The executor builds one after every committed batch and hands it to the
app's listeners (metrics, the progress log line, the progress bar).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

PHASES = ("plan", "read", "decode", "handler", "sink", "commit")
"""Phases of a batch, timed in ``BatchProgress.durations_s``."""


@dataclasses.dataclass
class BatchProgress:
    """Figures of one committed batch.

    Attributes:
        app: the app's name.
        batch_id: the batch.
        batch_ts_ms: its processing timestamp.
        replayed: whether it was a replay of a planned-but-uncommitted batch.
        records_read: records the source returned, dead letters included.
        records_processed: records handed to the handler.
        records_late: records dropped as late (event time <= watermark).
        records_late_kept: records behind the watermark that were kept because
            the operator's timeout is not event time (as Spark; counted only).
        records_dead_lettered: dead letters by ``DeadLetter.error`` kind.
        records_filtered: records removed by stateless ``filter``/``flat_map`` steps.
        groups_called: handler calls for keys with data.
        timeouts_fired: handler calls for timed-out keys.
        state_rows_updated: rows the handler wrote back, a row kept only for its
            timeout after ``remove()`` included; loading the initial state is
            not an update (Spark's ``numRowsUpdated``).
        state_rows_removed: rows the handler deleted (Spark's ``numRowsRemoved``).
        state_keys: rows (keys) in the state store after the batch, exact
            (Spark's ``numRowsTotal``; -1 unknown).
        state_bytes: bytes of the state store on disk after the batch (-1: the
            store keeps nothing on disk).
        timers_pending: timers set after the batch, exact (-1 unknown).
        rows_output: rows written to the operator's sinks.
        watermark_ms: eviction watermark the batch ran with.
        next_watermark_ms: watermark of the next batch.
        max_event_time_ms: the largest event time seen in the batch, or None.
        start_offsets / end_offsets: the source range.
        latest_offsets: what the source had available when the batch was
            planned (``latest - end`` per partition is the lag).
        durations_s: seconds per phase (see ``PHASES``).
        sink_retries: retried sink writes during the batch.
        sink_rows: rows written per sink name in the batch (the dead-letter
            sink counts as ``"dead_letters"``); one write per listed sink.
        sink_retries_by_sink: ``sink_retries`` split by sink name.
        pending_records: records available but not yet read when the batch was
            planned (the total lag; -1 unknown).
        data_loss_events: source data lost and gone past while planning or
            reading this batch (``fail_on_data_loss=False``).
        processor: a stateful processor's figures (``ProcessorStats``: variables
            declared by kind, timers registered/deleted/expired, values removed
            by TTL), or ``None`` for other operators.
    """

    app: str
    batch_id: int
    batch_ts_ms: int
    replayed: bool = False
    records_read: int = 0
    records_processed: int = 0
    records_late: int = 0
    records_late_kept: int = 0
    records_dead_lettered: dict[str, int] = dataclasses.field(default_factory=dict)
    records_filtered: int = 0
    groups_called: int = 0
    timeouts_fired: int = 0
    state_rows_updated: int = 0
    state_rows_removed: int = 0
    state_keys: int = -1
    state_bytes: int = -1
    timers_pending: int = -1
    rows_output: int = 0
    watermark_ms: int = 0
    next_watermark_ms: int = 0
    max_event_time_ms: int | None = None
    start_offsets: Mapping[str, int] = dataclasses.field(default_factory=dict)
    end_offsets: Mapping[str, int] = dataclasses.field(default_factory=dict)
    latest_offsets: Mapping[str, int] = dataclasses.field(default_factory=dict)
    durations_s: dict[str, float] = dataclasses.field(default_factory=dict)
    sink_retries: int = 0
    pending_records: int = -1
    processor: dict[str, int] | None = None
    sink_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    sink_retries_by_sink: dict[str, int] = dataclasses.field(default_factory=dict)
    data_loss_events: int = 0

    @property
    def duration_s(self) -> float:
        """Total seconds of the batch."""
        return sum(self.durations_s.values())

    @property
    def processing_rate(self) -> float:
        """Records read per second of batch time."""
        total = self.duration_s
        return self.records_read / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly dict."""
        data = dataclasses.asdict(self)
        data["start_offsets"] = dict(self.start_offsets)
        data["end_offsets"] = dict(self.end_offsets)
        data["latest_offsets"] = dict(self.latest_offsets)
        data["duration_s"] = self.duration_s
        data["processing_rate"] = self.processing_rate
        return data


ProgressListener = Callable[[BatchProgress], None]
"""Called after every committed batch with its report."""


@dataclasses.dataclass(frozen=True)
class BatchFailure:
    """A batch that failed and was not committed (it is replayed on the next start).

    Attributes:
        app: the app's name.
        batch_id: the batch.
        phase: the phase that raised (one of ``PHASES``).
        error: the exception, about to propagate out of ``run_batch``.
        sink: the sink being written (``BatchProgress.sink_rows`` naming) when
            ``phase == "sink"``, else ``None``.
    """

    app: str
    batch_id: int
    phase: str
    error: Exception
    sink: str | None = None


FailureListener = Callable[[BatchFailure], None]
"""Called when a batch fails, before the error propagates; must not raise."""
