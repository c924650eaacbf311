"""A processor app seen from outside: Prometheus figures, ``statefulstream state show``, HTTP state queries.

Expected values are computed from the input records, not read back from the store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from running_app import WAIT_S, running, wait_for
from test_state_queries import get

from statefulstream import App, StatefulProcessor, StatefulProcessorHandle, TimerValues
from statefulstream.checkpoint.cli import state
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.state_query import key_url
from statefulstream.processor import ExpiredTimerInfo
from statefulstream.sources import MemorySource

RECORDS = [{"user": u, "page": p} for u, p in [("ann", "a"), ("bob", "b"), ("ann", "c"), ("ann", "a"), (7, "x")]]
NOW_MS = 1_000
FOLLOW_UP_MS = 60_000


class Pages(StatefulProcessor):
    """Per user: the pages in order (list), visits per page (map), the last page (value), a follow-up timer."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.pages = handle.get_list_state("pages")
        self.visits = handle.get_map_state("visits")
        self.last = handle.get_value_state("last", ttl="1 hour")

    def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
        for row in rows:
            self.pages.append_value(row["page"])
            self.visits.put(row["page"], (self.visits.get(row["page"]) or 0) + 1)
            self.last.update(row["page"])
        self.handle.register_timer(timer_values.get_current_processing_time_in_ms() + FOLLOW_UP_MS)
        yield {"user": key}

    def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                             expired_timer_info: ExpiredTimerInfo) -> Iterator[Any]:
        yield {"user": key, "follow_up": True}


def expected() -> dict[Hashable, dict[str, Any]]:
    out: dict[Hashable, dict[str, Any]] = {}
    for record in RECORDS:
        user = out.setdefault(record["user"], {"pages": [], "visits": {}, "last": None})
        user["pages"].append(record["page"])
        user["visits"][record["page"]] = user["visits"].get(record["page"], 0) + 1
        user["last"] = record["page"]
    return out


def build(checkpoint_dir: str | None, *, metrics_address: str | None = None) -> App:
    app = App("pages", source=MemorySource(RECORDS), checkpoint_dir=checkpoint_dir, clock=lambda: NOW_MS,
              metrics_address=metrics_address, trigger="available_now")
    app.transform_with_state(Pages(), key="user", time_mode="processing_time", sink=MemorySink())
    return app


def test_prometheus_counts_variables_timers_and_ttl(tmp_path: Path) -> None:
    app = build(None)
    app.run()
    sample = app.metrics.registry.get_sample_value
    labels = {"app": "pages"}
    for kind, count in (("value", 1), ("list", 1), ("map", 1)):
        assert sample("statefulstream_processor_state_variables", {**labels, "kind": kind}) == count
    assert sample("statefulstream_processor_state_variables_with_ttl", labels) == 1
    users = len(expected())
    assert sample("statefulstream_processor_timers_registered_total", labels) == users
    assert sample("statefulstream_processor_timers_expired_total", labels) == 0
    assert sample("statefulstream_processor_values_removed_by_ttl_total", labels) == 0


def test_state_show_prints_variables_by_name_and_timers(tmp_path: Path) -> None:
    build(str(tmp_path / "cp")).run()
    runner = CliRunner()
    result = runner.invoke(state, ["show", str(tmp_path / "cp"), "--json", "--limit", "0"])
    assert result.exit_code == 0, result.output
    rows = {(r["key"]): r for r in map(json.loads, result.output.splitlines())}
    want = expected()
    assert set(rows) == set(want)
    for user, values in want.items():
        assert rows[user]["variables"] == values
        assert rows[user]["timers"] == [NOW_MS + FOLLOW_UP_MS]
    one = runner.invoke(state, ["show", str(tmp_path / "cp"), "--key", "7", "--variable", "pages"])
    assert one.exit_code == 0 and one.output.strip() == '7\tpages=["x"]\ttimers [61000]'
    bad = runner.invoke(state, ["show", str(tmp_path / "cp"), "--variable", "nope"])
    assert bad.exit_code != 0 and "no state variable 'nope'" in bad.output and "last, pages, visits" in bad.output


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_http_state_query_serves_variables_by_name(tmp_path: Path, store: str) -> None:
    app = build(str(tmp_path / "cp") if store == "rocksdb" else None, metrics_address="127.0.0.1:0")
    app.trigger = app.trigger.parse("100 milliseconds")
    with running(app) as url:
        wait_for(lambda: app.status.reports and app.status.reports[-1]["source"]["pending_records"] == 0,
                 "the records to be committed")
        for user, values in expected().items():
            status, body = get(f"{url}/state/{key_url(user)}")
            assert status == 200, body
            assert body["value"] == {"variables": values, "timers": [NOW_MS + FOLLOW_UP_MS]}
        status, body = get(f"{url}/state/nobody")
        assert status == 404
        status, body = get(f"{url}/state?prefix=an")
        assert status == 200 and [row["key"] for row in body["rows"]] == ["ann"]


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
def test_a_query_during_a_batch_answers_from_the_last_commit(tmp_path: Path, store: str) -> None:
    """The processor blocks mid-batch after staging appends; queries answer with the last commit's variables.

    (Processing-time mode runs a batch on every trigger, so the last commit is a no-data batch after batch 0.)
    """
    entered, release = threading.Event(), threading.Event()

    class Blocking(Pages):
        def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
            yield from super().handle_input_rows(key, rows, timer_values)
            if key == "block":
                entered.set()
                assert release.wait(WAIT_S), "the test never released the processor"

    source = MemorySource([{"user": "ann", "page": "a"}])
    app = App("pages", source=source, checkpoint_dir=str(tmp_path / "cp") if store == "rocksdb" else None,
              clock=lambda: NOW_MS, metrics_address="127.0.0.1:0")
    app.transform_with_state(Blocking(), key="user", time_mode="processing_time", sink=MemorySink())
    with running(app) as url:
        wait_for(lambda: len(app.status.reports) >= 1, "batch 0 to commit")
        source.add([{"user": "ann", "page": "b"}, {"user": "block", "page": "x"}])
        try:
            assert entered.wait(WAIT_S), "batch 1 never reached the blocking processor"
            assert app.executor is not None
            blocked = app.executor.next_batch_id  # moved only by a commit: the batch being run
            status, body = get(f"{url}/state/ann")
            assert status == 200 and body["batch_id"] == blocked - 1
            assert body["value"]["variables"]["pages"] == ["a"]  # the staged append of "b" is not visible
            assert get(f"{url}/state/block")[0] == 404
        finally:
            release.set()
        wait_for(lambda: get(f"{url}/state/block")[0] == 200, "batch 1 to commit")
        assert get(f"{url}/state/ann")[1]["value"]["variables"]["pages"] == ["a", "b"]
