"""A stateful-processor job that can SIGKILL itself at a chosen point (used by test_processor_recovery.py).

Usage: ``python tests/processor_fault_job.py INPUT_DIR CHECKPOINT_DIR OUTPUT_DIR`` with ``FAULT_KILL``
as in ``fault_job.py`` (the same kill points; ``handler`` is the start of every processor handler call).

The processor keeps, per user, the session's event ids (a ListState), events per page (a MapState) and
the session start (a ValueState), and two event-time timers: the session end (gap after the last event,
moved on each input) and a "long session" mark one minute after the start. Everything it outputs and
stores depends only on the input and the watermark, so every run must end with the same files and state.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterator
from typing import Any

from fault_job import MAX_RECORDS_PER_BATCH, SESSION_GAP_MS, KillableFileSource, around, reached

from statefulstream import App, StatefulProcessor, StatefulProcessorHandle, TimerValues
from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.processor import ExpiredTimerInfo
from statefulstream.state.rocksdb import RocksDBStateStore

LONG_SESSION_MS = 60_000


class Sessions(StatefulProcessor):
    """Sessions with a gap timer and a long-session timer per user."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.ids = handle.get_list_state("ids")
        self.pages = handle.get_map_state("pages")
        self.start = handle.get_value_state("start")
        self.end = handle.get_value_state("end")

    def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
        reached("handler")
        if self.start.get() is None:
            self.start.update(rows[0]["ts"])
            self.handle.register_timer(rows[0]["ts"] + LONG_SESSION_MS)
        end = self.end.get()
        for row in rows:
            self.ids.append_value(row["id"])
            page = row["id"] % 5
            self.pages.put(page, (self.pages.get(page) or 0) + 1)
            end = row["ts"] if end is None else max(end, row["ts"])
        if self.end.get() is not None:  # move the gap timer (a timer behind the watermark fires this batch)
            self.handle.delete_timer(self.end.get() + SESSION_GAP_MS)
        self.end.update(end)
        self.handle.register_timer(end + SESSION_GAP_MS)
        yield {"kind": "progress", "user": key, "events": len(list(self.ids.get())), "last_id": rows[-1]["id"]}

    def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                             expired_timer_info: ExpiredTimerInfo) -> Iterator[Any]:
        reached("handler")
        ts = expired_timer_info.get_expiry_time_in_ms()
        start, end = self.start.get(), self.end.get()
        if end is not None and ts == end + SESSION_GAP_MS:
            yield {"kind": "closed", "user": key, "start": start, "end": end, "ids": list(self.ids.get()),
                   "pages": sorted(self.pages.items())}
            for other in self.handle.list_timers():
                self.handle.delete_timer(other)
            self.ids.clear()
            self.pages.clear()
            self.start.clear()
            self.end.clear()
        else:
            yield {"kind": "long", "user": key, "start": start, "events": len(list(self.ids.get()))}


def build(input_dir: str, checkpoint_dir: str, output_dir: str) -> App:
    around(FilePlanLog, "write", None, "plan")
    around(JsonlFileSink, "write", "sink_before", "sink_after")
    around(RocksDBStateStore, "commit", "commit_before", "commit_after")
    app = App("fault-processor", source=KillableFileSource(input_dir), checkpoint_dir=checkpoint_dir,
              trigger="available_now", max_records_per_trigger=MAX_RECORDS_PER_BATCH)
    app.transform_with_state(Sessions(), key="user", event_time="ts", watermark_delay="10 seconds",
                             time_mode="event_time", sink=JsonlFileSink(output_dir))
    return app


if __name__ == "__main__":
    build(*sys.argv[1:4]).run()
