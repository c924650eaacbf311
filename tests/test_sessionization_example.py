"""The sessionization example and ``statefulstream demo`` give the sessions an offline computation gives."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from statefulstream.sinks import MemorySink

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import sessionization  # noqa: E402

GAP_MS = 30_000
DELAY_MS = 10_000


def offline_sessions(path: pathlib.Path) -> list[tuple[str, int, int, int]]:
    """Sessions closed by the end of the input, computed without the runtime."""
    events: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(event, dict) or not isinstance(event.get("ts"), int) or "user" not in event:
            continue
        events.setdefault(event["user"], []).append(event["ts"])
    final_watermark = max(ts for times in events.values() for ts in times) - DELAY_MS
    closed = []
    for user, times in events.items():
        times.sort()
        start = end = times[0]
        count = 0
        for ts in times:
            if ts > end + GAP_MS:
                closed.append((user, start, end, count))
                start, count = ts, 0
            end = ts
            count += 1
        if end + GAP_MS < final_watermark:
            closed.append((user, start, end, count))
    return sorted(closed)


def as_tuples(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, int]]:
    return sorted((r["user"], r["start"], r["end"], r["events"]) for r in rows)


EXPECTED = offline_sessions(sessionization.DATA)


@pytest.mark.parametrize("batch_size", [None, 1000, 137])
def test_sessions_match_offline_computation_for_any_batch_size(batch_size: int | None) -> None:
    sink = MemorySink()
    app = sessionization.build_app(sink=sink, max_records_per_trigger=batch_size)
    app.run()
    assert len(EXPECTED) > 500
    assert as_tuples(sink.rows) == EXPECTED
    assert len(sink.rows) == len({(r["user"], r["start"]) for r in sink.rows})  # each session once


def demo(*args: str) -> tuple[list[dict[str, Any]], str]:
    done = subprocess.run([sys.executable, "-m", "statefulstream.cli", "demo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line.split("] ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("[batch")]
    return rows, done.stdout


def test_demo_command_prints_every_session_with_all() -> None:
    rows, out = demo("--all")
    assert as_tuples(rows) == EXPECTED
    assert f"{len(EXPECTED)} sessions closed" in out
    assert "5 dead-lettered" in out


def test_demo_command_prints_the_first_sessions_and_the_count() -> None:
    every, _ = demo("--all")
    rows, out = demo()
    from statefulstream.cli import DEMO_SHOWN

    assert rows == every[:DEMO_SHOWN]  # the first sessions, as --all prints them
    assert f"the first {DEMO_SHOWN} of {len(EXPECTED)} sessions shown" in out
    assert f"{len(EXPECTED)} sessions closed" in out
    shown, _ = demo("--show", "3", "--max-records", "500")
    assert len(shown) == 3
