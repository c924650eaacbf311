"""The device_alerting example (a stateful processor) pages what an offline reading of its input says.

The input is the shipped recording with readings delivered twice: a few
batches later (inside the dedup TTL: ignored) and much later (past it: a new
reading). The expected alerts are computed per device from the data alone, in
batch numbers (one batch per recorded second): no timers, no state API.
"""

from __future__ import annotations

import json
import pathlib
import random
import sys
from collections import Counter
from typing import Any

import pytest

from statefulstream.durations import parse_duration_ms
from statefulstream.sinks import MemorySink
from statefulstream.sources.file import FileSource

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import alerting  # noqa: E402
import device_alerting as da  # noqa: E402

Alert = tuple[int, str, str, str]
"""(batch id, device, alert_id, action)"""
PER_BATCH = alerting.SAMPLE_RECORDS_PER_SECOND
SILENCE_BATCHES = da.SILENCE_MS // 1000
ESCALATE_BATCHES = da.ESCALATE_MS // 1000
DEDUP_BATCHES = parse_duration_ms(da.DEDUP_TTL, name="ttl") // 1000


def with_repeats(lines: list[str], rng: random.Random) -> list[str]:
    """Insert copies of some error readings 3 batches later (within the TTL) and 40 later (past it)."""
    out = list(lines)
    errors = [i for i, line in enumerate(lines[:-50 * PER_BATCH]) if '"error"' in line]
    for index in sorted(rng.sample(errors, 150), reverse=True):
        out.insert(index + rng.choice((3, 40)) * PER_BATCH, lines[index])
    return out


def readings_by_batch(lines: list[str]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Fresh readings per device per batch, after dedup by (device, ts) within the TTL."""
    accepted_at: dict[tuple[str, int], int] = {}
    fresh: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for index, line in enumerate(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or "device" not in event:
            continue
        batch, ident = index // PER_BATCH, (event["device"], event["ts"])
        if ident in accepted_at and batch < accepted_at[ident] + DEDUP_BATCHES:
            continue
        accepted_at[ident] = batch
        fresh.setdefault(event["device"], {}).setdefault(batch, []).append(event)
    return fresh


def device_alerts(device: str, batches: dict[int, list[dict[str, Any]]], last_batch: int) -> list[Alert]:
    """One device's alerts in order, walking its batches (input first, then what is due at the batch's end)."""
    alerts: list[Alert] = []
    window: list[str] = []
    opened: dict[str, int] = {}  # rule -> batch it opened in
    escalated: set[str] = set()
    last_spoke: int | None = None

    def resolve(batch: int, rule: str) -> None:
        if rule in escalated:
            escalated.discard(rule)
            alerts.append((batch, device, da.escalated(rule), "resolve"))
        del opened[rule]
        alerts.append((batch, device, rule, "resolve"))

    for batch in range(last_batch + 1):
        rows = batches.get(batch, [])
        if rows:
            if da.SILENT in opened:
                resolve(batch, da.SILENT)
            for row in rows:
                window = [*window, row["status"]][-da.WINDOW:]
                errors = window.count("error")
                if da.ERROR_RATE not in opened and len(window) == da.WINDOW and errors >= da.TRIGGER_ERRORS:
                    opened[da.ERROR_RATE] = batch
                    alerts.append((batch, device, da.ERROR_RATE, "trigger"))
                elif da.ERROR_RATE in opened and errors <= da.RESOLVE_ERRORS:
                    resolve(batch, da.ERROR_RATE)
            last_spoke = batch
        for rule, since in sorted(opened.items()):
            if since + ESCALATE_BATCHES == batch and rule not in escalated:
                escalated.add(rule)
                alerts.append((batch, device, da.escalated(rule), "trigger"))
        if last_spoke is not None and last_spoke + SILENCE_BATCHES == batch and da.SILENT not in opened:
            opened[da.SILENT] = batch
            alerts.append((batch, device, da.SILENT, "trigger"))
    return alerts


def as_tuples(sink: MemorySink) -> list[Alert]:
    return [(batch, row["key"], row["alert_id"], row["action"])
            for batch, rows in sorted(sink.batches.items()) for row in rows]


@pytest.mark.timeout(120)
def test_alerts_match_an_offline_reading_of_the_input(tmp_path: pathlib.Path) -> None:
    lines = with_repeats(alerting.DATA.read_text().splitlines(), random.Random(5))
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    sink = MemorySink()
    app = da.build_app(FileSource(tmp_path / "events.jsonl"), sink,
                       clock=alerting.ReplayClock(alerting.SAMPLE_START_MS, 1000),
                       max_records_per_trigger=PER_BATCH)
    app.run()
    assert app.executor is not None and app.executor.last_progress is not None
    last_batch = app.executor.last_progress.batch_id  # the final no-data batch

    expected = [a for device, batches in sorted(readings_by_batch(lines).items())
                for a in device_alerts(device, batches, last_batch)]
    got = as_tuples(sink)
    assert Counter(got) == Counter(expected)
    for device in {a[1] for a in expected}:  # and in the same order per device
        assert [a for a in got if a[1] == device] == [a for a in expected if a[1] == device], device
    kinds = Counter((a[2], a[3]) for a in expected)
    assert kinds[(da.SILENT, "trigger")] and kinds[(da.ERROR_RATE, "trigger")]
    assert kinds[(da.escalated(da.SILENT), "trigger")]
    assert kinds[(da.ERROR_RATE, "resolve")] and kinds[(da.SILENT, "resolve")]


def test_processor_figures_count_ttl_removals_and_timers(tmp_path: pathlib.Path) -> None:
    sink = MemorySink()
    reports: list[Any] = []
    app = da.build_app(sink=sink)
    app.add_listener(reports.append)
    app.run()
    figures = [r.processor for r in reports]
    assert all(f is not None and f["list_state_vars"] == 1 and f["map_state_vars"] == 2 for f in figures)
    assert sum(f["values_removed_by_ttl"] for f in figures) > 0
    fired = sum(f["timers_expired"] for f in figures)
    triggers = sum(1 for rows in sink.batches.values() for row in rows
                   if row["action"] == "trigger" and row["alert_id"] in (da.SILENT, "silent-escalated"))
    assert fired >= triggers > 0
