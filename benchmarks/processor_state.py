"""A growing per-key list: a processor's ``ListState`` vs a list inside ``GroupState``, on RocksDB.

Each batch appends one reading to every key's history. The ``GroupState``
handler re-encodes and rewrites the whole list each time (one state row per
key); the processor appends one entry (``ListState.append_value``: the
element and the list's counter). It prints the seconds per batch spent in the
handler and the commit, at the start and at the end of the run, for both::

    python benchmarks/processor_state.py --keys 1000 --batches 200

A figure, not a test: run it on a quiet machine and read the trend (the
GroupState cost grows with the list length; the processor's stays flat).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Hashable, Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from statefulstream import App, GroupState, StatefulProcessor, StatefulProcessorHandle, TimerValues  # noqa: E402
from statefulstream.sink import Sink  # noqa: E402
from statefulstream.sources import MemorySource  # noqa: E402


class NullSink(Sink):
    """Drops rows (the benchmark measures state, not output)."""

    name = "null"

    def write(self, batch_id: int, rows: list[Any]) -> None:
        """Drop ``rows``."""


class History(StatefulProcessor):
    """Appends each reading to the key's ``ListState``."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.readings = handle.get_list_state("readings")

    def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
        for row in rows:
            self.readings.append_value(row["v"])
        return iter(())


def grouped_history(key: Hashable, rows: list[Any], state: GroupState[list[int]]) -> Iterator[Any]:
    """Appends each reading to a list kept as the key's whole ``GroupState`` value."""
    history = state.get_option() or []
    history.extend(row["v"] for row in rows)
    state.update(history)
    return iter(())


def run(kind: str, keys: int, batches: int) -> list[float]:
    """Run ``batches`` batches of one reading per key; return the seconds of each batch's handler and commit."""
    source = MemorySource([{"k": k, "v": {"batch": b, "status": "ok", "latency_ms": 41}}
                           for b in range(batches) for k in range(keys)])
    with tempfile.TemporaryDirectory() as checkpoint:
        app = App(f"bench-{kind}", source=source, checkpoint_dir=checkpoint, max_records_per_trigger=keys)
        if kind == "processor":
            app.transform_with_state(History(), key="k", sink=NullSink())
        else:
            app.flat_map_groups_with_state(key="k", sink=NullSink())(grouped_history)
        times: list[float] = []
        app.add_listener(lambda p: times.append(p.durations_s.get("handler", 0.0) + p.durations_s.get("commit", 0.0)))
        app.run("available_now")
    return times


def main() -> None:
    """Parse arguments, run both kinds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    window = max(1, args.batches // 10)
    for kind in ("groupstate", "processor"):
        started = time.perf_counter()
        times = run(kind, args.keys, args.batches)
        first, last = sum(times[:window]) / window, sum(times[-window:]) / window
        print(f"{kind:>10}: {first * 1000:7.1f} ms/batch (handler + commit) over the first {window} batches, "
              f"{last * 1000:7.1f} ms/batch over the last {window} (lists of {args.batches} readings); "
              f"{time.perf_counter() - started:.1f} s in all")
    print(f"command: python benchmarks/processor_state.py --keys {args.keys} --batches {args.batches}")


if __name__ == "__main__":
    main()
