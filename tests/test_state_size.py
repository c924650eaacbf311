"""How much state there is: exact row counts as Spark counts them, and a state folder that stays bounded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.checkpoint.cli import checkpoint
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.progress import BatchProgress
from statefulstream.observe.progress_cli import progress as progress_command
from statefulstream.sources import MemorySource
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.rocksdb_dir import MAX_WAL_BYTES
from statefulstream.state.store import CommitRecord, StateRow

INITIAL = {"i1": 1, "i2": 2, "i3": 3}
OPS = [  # batch 0 (with the initial state), then batch 1
    {"user": "a", "op": "update"}, {"user": "b", "op": "update"}, {"user": "i1", "op": "update"},
    {"user": "c", "op": "remove"}, {"user": "d", "op": "remove_keep"},
    {"user": "a", "op": "remove"}, {"user": "d", "op": "update"}, {"user": "i2", "op": "remove_keep"},
]


def counting_app(checkpoint_dir: Path | None, calls: list[tuple[str, str]]) -> App:
    """An app whose handler logs what it did to each key: update, remove, remove but keep a timeout, nothing."""
    app = App("counts", source=MemorySource(OPS), checkpoint_dir=checkpoint_dir, max_records_per_trigger=5)

    @app.flat_map_groups_with_state(key="user", timeout=GroupStateTimeout.PROCESSING_TIME, sink=MemorySink(),
                                    initial_state=INITIAL)
    def handle(user: str, events: list[dict[str, Any]], state: GroupState[int]) -> list[Any]:
        op = events[-1]["op"] if events else "nothing"
        if op == "update":
            state.update((state.get_option() or 0) + 1)
        elif op.startswith("remove"):
            state.remove()
            if op == "remove_keep":  # a row without a value, kept for its timeout
                state.set_timeout_duration("1 hour")
        calls.append((user, op))
        return []

    return app


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "rocksdb"])
def test_row_counts_are_exact_and_counted_as_spark_counts_them(tmp_path: Path, durable: bool) -> None:
    calls: list[tuple[str, str]] = []
    app = counting_app(tmp_path / "cp" if durable else None, calls)
    reports: list[BatchProgress] = []
    ends: list[int] = []  # len(calls) when each batch was reported
    stored: list[int] = []  # rows the store lists after each batch
    app.add_listener(reports.append)
    app.add_listener(lambda _p: ends.append(len(calls)))
    app.add_listener(lambda _p: stored.append(sum(1 for _ in app.executor.store.items())))  # type: ignore[union-attr]
    app.run("available_now")
    assert [r.batch_id for r in reports][:2] == [0, 1]  # then no-data batches (processing-time timeouts)

    # The model: which rows exist after each batch, and what the handler did, from its own log.
    rows = set(INITIAL)  # loaded in batch 0, before any call: not an update
    for report, start, end, in_store in zip(reports, [0, *ends], ends, stored, strict=False):
        done = [op for _, op in calls[start:end]]
        for user, op in calls[start:end]:
            if op in ("update", "remove_keep"):
                rows.add(user)
            elif op == "remove":
                rows.discard(user)
        updated = done.count("update") + done.count("remove_keep")  # kept for its timeout: updated
        assert (report.state_rows_updated, report.state_rows_removed) == (updated, done.count("remove"))
        assert report.state_keys == len(rows) == in_store, report.batch_id
    registry = app.metrics.registry
    assert registry.get_sample_value("statefulstream_state_keys", {"app": "counts"}) == len(rows)
    assert registry.get_sample_value("statefulstream_state_rows_updated_total", {"app": "counts"}) == sum(
        r.state_rows_updated for r in reports)
    if durable:
        files = [p for p in (tmp_path / "cp" / "state").iterdir() if p.is_file()]
        assert reports[-1].state_bytes > 0 and abs(reports[-1].state_bytes - sum(p.stat().st_size for p in files)) \
            < 1 << 20  # RocksDB may have written its info log since
        table = CliRunner().invoke(progress_command, [str(tmp_path / "cp")]).output.splitlines()
        keys_column = table[0].split().index("keys")
        assert [int(line.split()[keys_column]) for line in table[1:]] == [r.state_keys for r in reports]
        shown = json.loads(CliRunner().invoke(checkpoint, ["show", "--json", str(tmp_path / "cp")]).output)
        assert shown["state"]["rows"] == len(rows)
    else:
        assert reports[-1].state_bytes == -1


class TestStateOnDisk:
    """Issue 12: a 2M-event run over ~1,600 keys grew its state folder to 50 MB (5.9 MB after exit).

    The write-ahead log was never recycled: every commit also writes the tiny
    ``meta`` family, whose memtable never fills, so every log file stayed
    live; and every timer move left a tombstone in the timer index.
    """

    def test_state_folder_stays_bounded_on_a_long_run(self, tmp_path: Path) -> None:
        store = RocksDBStateStore(str(tmp_path / "state"))
        store.open({"key": "user"})
        keys, value_bytes, batches = 1600, 1000, 90
        live = keys * (value_bytes + 40)
        written, largest = 0, 0
        for batch_id in range(batches):  # every key rewritten and its timer moved, every batch
            for key in range(keys):
                store.put(key, StateRow({"batch": batch_id, "pad": os.urandom(value_bytes)}, 10_000 * batch_id + key))
            written += live
            list(store.expired(10_000 * batch_id))
            store.commit(CommitRecord(batch_id, {"p": batch_id}, batch_id, 0, 0))
            largest = max(largest, store.disk_bytes())
        store.close()
        assert written > 15 * MAX_WAL_BYTES  # ~140 MB went through the store
        # The write-ahead log stays near MAX_WAL_BYTES (a flush runs in the background), the tables within a few
        # times the live data, RocksDB's own logs within a few MB.
        bound = 2 * MAX_WAL_BYTES + 12 * live + (4 << 20)
        assert largest <= bound, f"state folder reached {largest >> 20} MB for {live >> 20} MB of live state"
