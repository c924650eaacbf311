"""What the status page and ``statefulstream status`` show: chart series and a summary, from progress reports.

Both read the progress reports of ``progress_log`` (the page from the last N
kept in memory, the command from those kept in the checkpoint), so every
number shown is a number of a report. ``StatusBoard`` is the live side: the
bounded history, the app's configuration and where its loop is.

>>> reports = [{"batch_id": 4, "timestamp": "2026-01-01T00:00:10.000Z", "num_input_rows": 5,
...             "input_rows_per_second": 2.5, "processed_rows_per_second": 50.0,
...             "duration_ms": {"read": 60.0, "handler": 40.0, "total": 100.0},
...             "records": {"late_dropped": 1, "dead_lettered": {"decode": 2}},
...             "event_time": {"watermark": "2026-01-01T00:00:04.000Z"},
...             "state_operator": {"keys": 3, "bytes": 900, "timers_pending": 3, "timeouts_fired": 0},
...             "source": {"lag": {"events:0": 7}}, "sink": {"retries": {}}}]
>>> series(reports)["watermark_lag_s"], series(reports)["dead_lettered"]
([6.0], [2])
>>> [(row["key"], row["value"]) for row in summary(reports)][:3]
[('batch', 4), ('timestamp', '2026-01-01T00:00:10.000Z'), ('input_rows', 5)]
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from statefulstream.observe.health import Health
from statefulstream.observe.progress import PHASES

DEFAULT_HISTORY = 300
"""Batches the status page keeps in memory (its charts' width)."""

Report = dict[str, Any]


def _epoch_s(iso: str | None) -> float | None:
    try:
        return None if iso is None else datetime.datetime.fromisoformat(iso).timestamp()
    except ValueError:  # "out of range (N ms)": a time an older version stored (timeutil.format_ms)
        return None


def watermark_lag_s(report: Report) -> float | None:
    """Seconds the batch's watermark is behind its processing timestamp (``None`` before any watermark)."""
    ts, wm = _epoch_s(report.get("timestamp")), _epoch_s(report["event_time"].get("watermark"))
    if ts is None or wm is None or wm <= 0:
        return None
    return round(ts - wm, 3)


def _keys(reports: Sequence[Report], pick: Callable[[Report], dict[str, Any]]) -> list[str]:
    return sorted({name for report in reports for name in pick(report)})


def series(reports: Sequence[Report]) -> dict[str, Any]:
    """Return chart columns, one value per report (``None`` where a report has no figure).

    Keys: ``batch_id``, ``input_rows_per_second``, ``processed_rows_per_second``,
    ``duration_ms`` (per phase of ``PHASES``), ``state_keys``, ``state_bytes``,
    ``timers_pending``, ``timers_fired``, ``watermark_lag_s``, ``late``,
    ``dead_lettered``, ``source_lag`` (per partition), ``sink_retries`` (per sink).
    """
    def column(pick: Callable[[Report], Any]) -> list[Any]:
        return [pick(report) for report in reports]

    def figure(value: int) -> int | None:
        return None if value < 0 else value  # -1: the store does not know

    partitions = _keys(reports, lambda r: r["source"]["lag"])
    sinks = _keys(reports, lambda r: r["sink"]["retries"])
    return {
        "batch_id": column(lambda r: r["batch_id"]),
        "input_rows_per_second": column(lambda r: r["input_rows_per_second"]),
        "processed_rows_per_second": column(lambda r: r["processed_rows_per_second"]),
        "duration_ms": {phase: [r["duration_ms"].get(phase, 0.0) for r in reports] for phase in PHASES},
        "state_keys": column(lambda r: figure(r["state_operator"]["keys"])),
        "state_bytes": column(lambda r: figure(r["state_operator"]["bytes"])),
        "timers_pending": column(lambda r: figure(r["state_operator"].get("timers_pending", -1))),
        "timers_fired": column(lambda r: r["state_operator"]["timeouts_fired"]),
        "watermark_lag_s": column(watermark_lag_s),
        "late": column(lambda r: r["records"]["late_dropped"]),
        "dead_lettered": column(lambda r: sum(r["records"]["dead_lettered"].values())),
        "source_lag": {p: [r["source"]["lag"].get(p) for r in reports] for p in partitions},
        "sink_retries": {s: [r["sink"]["retries"].get(s, 0) for r in reports] for s in sinks},
    }


def summary(reports: Sequence[Report]) -> list[dict[str, Any]]:
    """Return the latest batch's figures as ``{"key", "label", "value"}`` rows (empty without reports).

    Values are numbers, text, ``None`` (unknown) or a dict (per partition, per sink).
    """
    if not reports:
        return []
    last = reports[-1]
    state = last["state_operator"]
    figures: list[tuple[str, str, Any]] = [
        ("batch", "last committed batch", last["batch_id"]),
        ("timestamp", "its processing time", last["timestamp"]),
        ("input_rows", "input rows", last["num_input_rows"]),
        ("input_rows_per_second", "input rows/s", last["input_rows_per_second"]),
        ("processed_rows_per_second", "processed rows/s", last["processed_rows_per_second"]),
        ("duration_ms", "batch duration (ms)", last["duration_ms"]["total"]),
        ("state_keys", "state rows", None if state["keys"] < 0 else state["keys"]),
        ("state_bytes", "state bytes", None if state["bytes"] < 0 else state["bytes"]),
        ("timers_pending", "timers pending", None if state.get("timers_pending", -1) < 0 else state["timers_pending"]),
        ("timers_fired", "timers fired", state["timeouts_fired"]),
        ("watermark", "watermark", last["event_time"].get("watermark") if _epoch_s(
            last["event_time"].get("watermark")) else None),
        ("watermark_lag_s", "watermark lag (s)", watermark_lag_s(last)),
        ("late", "late rows dropped", last["records"]["late_dropped"]),
        ("dead_lettered", "dead-lettered", sum(last["records"]["dead_lettered"].values())),
        ("source_lag", "source lag", dict(last["source"]["lag"])),
        ("sink_retries", "sink retries", dict(last["sink"]["retries"])),
    ]
    return [{"key": key, "label": label, "value": value} for key, label, value in figures]


class StatusBoard:
    """The live status of one app: its recent reports, configuration, trigger and loop state.

    Args:
        app: the app's name.
        config: the app's configuration, secrets already masked (``config_view``).
        health: the app's ``Health`` (where the loop is).
        next_batch: the id of the batch the loop runs or waits for, or ``None`` when it is not running.
        history: how many batches to keep (the ``maxlen`` of :attr:`reports`).

    Attributes:
        reports: the last ``history`` progress reports, oldest first; the
            ``ProgressLog`` appends to it on the loop's thread.
        trigger: the running trigger's text, set by ``App.run``.
    """

    def __init__(self, app: str, config: Callable[[], dict[str, Any]], health: Health,
                 next_batch: Callable[[], int | None], history: int = DEFAULT_HISTORY) -> None:
        self.app = app
        self._config = config
        self._health = health
        self._next_batch = next_batch
        self.reports: collections.deque[Report] = collections.deque(maxlen=history)
        self.trigger = "-"

    def document(self) -> dict[str, Any]:
        """Return what ``/api/status`` serves: app, loop, config, summary, series and the reports."""
        reports = list(self.reports)  # one atomic copy: the loop may append meanwhile
        alive, health = self._health.liveness()
        loop = {**health, "running": alive or health.get("status") == "stuck", "trigger": self.trigger,
                "current_batch": self._next_batch()}
        return {"app": self.app, "loop": loop, "config": self._config(), "summary": summary(reports),
                "series": series(reports), "reports": reports}
