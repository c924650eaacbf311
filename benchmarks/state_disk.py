"""State on disk over a long run: the size of ``<checkpoint>/state`` after every batch, by kind of file.

Runs a sessionization job (FileSource -> event-time sessions -> a null sink,
RocksDB checkpoint, ``available_now``) over ``--events`` generated events of
``--users`` users and prints, every ``--every`` batches, the state folder's
bytes split into write-ahead log (``*.log``), tables (``*.sst``) and the rest
(RocksDB's info logs, manifest, options), then the largest size seen, the
size after exit, and the exact row count. Issue 12 saw 50 MB for ~1,600 keys
at 2M events (5.9 MB after exit)::

    python benchmarks/state_disk.py --events 2000000 --users 1600
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import harness

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from statefulstream import App, GroupState, GroupStateTimeout  # noqa: E402
from statefulstream.observe.progress import BatchProgress  # noqa: E402
from statefulstream.sink import Sink  # noqa: E402
from statefulstream.sources.file import FileSource  # noqa: E402


class NullSink(Sink):
    """Drops every row: only the state is measured."""

    name = "null"

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Drop the rows."""


def generate(path: str, events: int, users: int, seed: int = 7) -> None:
    """Write time-ordered click events; a user pauses for longer than the gap now and then."""
    rng = random.Random(seed)
    t = 1_700_000_000_000
    with open(path, "w") as out:
        for n in range(events):
            t += rng.randint(0, 40)
            out.write(json.dumps({"user": f"u{rng.randrange(users)}", "ts": t, "n": n}) + "\n")


def folder(path: str) -> collections.Counter[str]:
    """Bytes of the state folder by kind: wal, sst, other."""
    sizes: collections.Counter[str] = collections.Counter()
    for entry in os.scandir(path) if os.path.isdir(path) else ():
        kind = "wal" if entry.name.endswith(".log") else "sst" if entry.name.endswith(".sst") else "other"
        try:
            sizes[kind] += entry.stat().st_size
        except FileNotFoundError:  # RocksDB removed an obsolete file meanwhile
            continue
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_size_args(parser, events=500_000, users=1_600)
    parser.add_argument("--batch", type=int, default=10_000, help="max records per batch")
    parser.add_argument("--every", type=int, default=10, help="print every N batches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "input"))
        generate(os.path.join(tmp, "input", "events.jsonl"), args.events, args.users)
        checkpoint = os.path.join(tmp, "checkpoint")
        state_dir = os.path.join(checkpoint, "state")
        app = App("state-disk", source=FileSource(os.path.join(tmp, "input")), checkpoint_dir=checkpoint,
                  trigger="available_now", max_records_per_trigger=args.batch)

        @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="10 seconds",
                                        timeout=GroupStateTimeout.EVENT_TIME, sink=NullSink())
        def sessions(user: str, events: list[dict[str, Any]], state: GroupState[dict[str, int]]) -> list[Any]:
            if state.has_timed_out:
                state.remove()
                return []
            session = state.get_option() or {"count": 0, "end": 0}
            session["count"] += len(events)
            session["end"] = max(session["end"], events[-1]["ts"])
            state.update(session)
            state.set_timeout_timestamp(max(session["end"] + harness.GAP_MS, state.get_current_watermark_ms() + 1))
            return []

        largest = 0

        def report(progress: BatchProgress) -> None:
            nonlocal largest
            sizes = folder(state_dir)
            largest = max(largest, sum(sizes.values()))
            if progress.batch_id % args.every == 0:
                print(f"batch {progress.batch_id:>5}: {progress.state_keys:>7,} rows  "
                      f"{progress.state_bytes / 2**20:7.1f} MB  (wal {sizes['wal'] / 2**20:5.1f}, "
                      f"sst {sizes['sst'] / 2**20:5.1f}, other {sizes['other'] / 2**20:4.1f})", flush=True)

        app.add_listener(report)
        began = time.perf_counter()
        app.run()
        after = sum(folder(state_dir).values())
        rows = app.executor.last_progress.state_keys if app.executor and app.executor.last_progress else -1
        print(f"command: python benchmarks/state_disk.py --events {args.events} --users {args.users} "
              f"--batch {args.batch}")
        print(f"  {args.events:,} events in {time.perf_counter() - began:.1f} s; {rows:,} rows at the end")
        print(f"  state folder: largest {largest / 2**20:.1f} MB during the run, {after / 2**20:.1f} MB after exit")


if __name__ == "__main__":
    main()
