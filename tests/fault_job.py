"""A file-source sessionization job that can SIGKILL itself at a chosen point (used by test_recovery.py).

Usage: ``python tests/fault_job.py INPUT_DIR CHECKPOINT_DIR OUTPUT_DIR``, with
``FAULT_KILL=<phase>:<n>`` to kill the process the n-th time it reaches
``phase`` (counted within this process):

* ``plan``: right after a batch's plan is logged, before anything is read;
* ``read``: before the source reads the planned range;
* ``handler``: at the start of a handler call;
* ``sink_before`` / ``sink_after``: around the sink's write of a batch;
* ``commit_before`` / ``commit_after``: around the state store's atomic commit;
* ``create_opened`` / ``create_written`` / ``create_published``: inside a new
  store's first commit: its staging RocksDB is open, the batch is written
  there, the staging directory was renamed into place.

Without ``FAULT_KILL`` it runs the input to its end (trigger ``available_now``)
and exits 0. The hooks wrap the real FileSource, JsonlFileSink, FilePlanLog
and RocksDBStateStore; nothing else is replaced.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.records import Offsets
from statefulstream.sources.base import ReadResult
from statefulstream.sources.file import FileSource
from statefulstream.state import rocksdb as rocksdb_store
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.rocksdb_dir import STAGING_INFIX

SESSION_GAP_MS = 15_000
MAX_RECORDS_PER_BATCH = 30

_phase, _, _nth = os.environ.get("FAULT_KILL", "").partition(":")
_seen = 0


def reached(phase: str) -> None:
    """SIGKILL this process the n-th time the configured phase is reached."""
    global _seen
    if phase == _phase:
        _seen += 1
        if _seen == int(_nth):
            os.kill(os.getpid(), signal.SIGKILL)


def around(cls: type, method: str, before: str | None, after: str | None) -> None:
    """Wrap ``cls.method`` with kill points (this script only: the job's own process)."""
    original: Callable[..., Any] = getattr(cls, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if before:
            reached(before)
        result = original(self, *args, **kwargs)
        if after:
            reached(after)
        return result

    setattr(cls, method, wrapper)


def around_creation() -> None:
    """Kill points inside a new store's first commit (the functions the store module calls)."""
    open_rocksdb, publish = rocksdb_store.open_rocksdb, rocksdb_store.publish

    def opened(path: str, *, read_only: bool) -> Any:
        db = open_rocksdb(path, read_only=read_only)
        if STAGING_INFIX in os.path.basename(path):
            reached("create_opened")
        return db

    def published(staging: str, path: str) -> None:
        reached("create_written")
        publish(staging, path)
        reached("create_published")

    rocksdb_store.open_rocksdb, rocksdb_store.publish = opened, published  # type: ignore[assignment]


class KillableFileSource(FileSource):
    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        reached("read")
        return super().read(start, end)


def build(input_dir: str, checkpoint_dir: str, output_dir: str) -> App:
    around(FilePlanLog, "write", None, "plan")
    around(JsonlFileSink, "write", "sink_before", "sink_after")
    around(RocksDBStateStore, "commit", "commit_before", "commit_after")
    around_creation()
    app = App("fault-sessions", source=KillableFileSource(input_dir), checkpoint_dir=checkpoint_dir,
              trigger="available_now", max_records_per_trigger=MAX_RECORDS_PER_BATCH)

    @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                    output_mode="append", timeout=GroupStateTimeout.EVENT_TIME,
                                    sink=JsonlFileSink(output_dir))
    def sessionize(user: str, events: list[dict[str, Any]], state: GroupState[dict[str, Any]]) -> Iterator[dict]:
        reached("handler")
        if state.has_timed_out:
            session = state.get()
            state.remove()
            yield {"kind": "closed", "user": user, **session}
            return
        session = state.get_option() or {"start": events[0]["ts"], "end": events[0]["ts"], "ids": []}
        for event in events:
            session["start"] = min(session["start"], event["ts"])
            session["end"] = max(session["end"], event["ts"])
            session["ids"].append(event["id"])
        state.update(session)
        # Out-of-order files can put the session's end behind the watermark; a timeout may not be.
        state.set_timeout_timestamp(max(session["end"] + SESSION_GAP_MS, state.get_current_watermark_ms()))
        yield {"kind": "progress", "user": user, "events": len(session["ids"]), "last_id": events[-1]["id"]}

    return app


if __name__ == "__main__":
    build(*sys.argv[1:4]).run()
