"""The standard job's semantics inlined, with nothing else: about the least a pure-Python runtime of it can cost.

``run_floor.py`` (the workload's floor) folds events into per-user state and
writes one RocksDB batch per 100k events. The standard job must do more than
that (SEMANTICS.md): hand each key its whole records, in arrival order, with
keys sorted; a ``GroupState`` per call; the event-time watermark, late records
dropped; an event-time timeout per key, kept in a deadline-ordered index in
RocksDB, with a handler call for each one that expires; one synced write per
batch holding the rows, the timer moves and the batch's end; a last no-data
batch once the watermark moved. This module does exactly that, in one
function, for the standard workload only: no source or sink abstraction, no
line positions or dead letters, no plan log, progress or metrics, an unbounded
row cache, no checks of its input. It runs the benchmark's own handler
(``harness.sessionize``) on the RocksDB options the runtime uses.

What it costs against the floor is what the contract costs; what the runtime
costs above it is the runtime's own (``standard.py --semantics-floor`` prints
both ratios).
"""

from __future__ import annotations

import gc
import struct
from collections import defaultdict
from collections.abc import Callable
from itertools import compress, islice, repeat
from operator import countOf, itemgetter
from typing import Any

import msgpack
import orjson
from rocksdict import ReadOptions, WriteBatch, WriteOptions

from statefulstream.records import NO_TIMEOUT_MS
from statefulstream.state.codec import DEFAULT_CODEC
from statefulstream.state.rocksdb_dir import open_rocksdb
from statefulstream.state.timers import MIN_DEADLINE_MS, TIMER_PREFIX_BYTES, deadline_prefix, timer_key

WATERMARK_DELAY_MS = 10_000
_TIMEOUT = struct.Struct(">q")  # a row: its timeout, then the msgpack value (the runtime's row layout)
_unpack_timeout, _pack_timeout = _TIMEOUT.unpack_from, _TIMEOUT.pack
_pack_key, _pack_value = DEFAULT_CODEC.pack_key, DEFAULT_CODEC.pack_value  # the runtime's packers, called directly


class CallState:
    """The ``GroupState`` methods the standard handler uses, reset for every call (A.1)."""

    __slots__ = ("value", "defined", "updated", "removed", "timeout", "timed_out", "watermark")

    @property
    def has_timed_out(self) -> bool:
        """True in the call made because the key's timeout expired."""
        return self.timed_out

    def get(self) -> Any:
        """The stored value (the key must have one)."""
        if not self.defined:
            raise KeyError("no state")
        return self.value

    def get_option(self) -> Any:
        """The stored value or ``None``."""
        return self.value if self.defined else None

    def update(self, value: Any) -> None:
        """Set the value."""
        self.value, self.defined, self.updated, self.removed = value, True, True, False

    def remove(self) -> None:
        """Remove the value."""
        self.value, self.defined, self.updated, self.removed = None, False, False, True

    def set_timeout_timestamp(self, ms: int) -> None:
        """Time the key out once the watermark passes ``ms`` (not before the current watermark)."""
        if type(ms) is not int or ms < self.watermark:
            raise ValueError(f"bad timeout {ms!r}")
        self.timeout = ms


def run(events_path: str, batch: int, db_dir: str, handler: Callable[[Any, list[Any], Any], Any]) -> list[Any]:
    """Run the standard job over ``events_path`` (``key="user"``, ``event_time="ts"``); return its output rows."""
    db = open_rocksdb(db_dir, read_only=False)
    rows_cf, timers_cf = db.get_column_family("state"), db.get_column_family("timers")
    h_rows, h_timers, h_meta = (db.get_column_family_handle(n) for n in ("state", "timers", "meta"))
    synced = WriteOptions()
    synced.sync = True
    get_ts, get_user = itemgetter("ts"), itemgetter("user")
    cache: dict[bytes, bytes | None] = {}
    state = CallState()
    out: list[Any] = []
    watermark = late_watermark = -1
    floor = MIN_DEADLINE_MS  # no timer below it
    batch_id, ran_no_data = 0, False
    with open(events_path, "rb") as f:
        while True:
            lines = list(islice(f, batch))
            if not lines:
                if ran_no_data:
                    break
                ran_no_data = True  # one no-data batch: the watermark moved after the last one
            gc.disable()
            records = list(map(orjson.loads, lines))
            del lines
            if countOf(map(type, records), dict) != len(records):
                raise ValueError("a line is not a JSON object")
            times = list(map(get_ts, records))
            if times and min(times) < late_watermark:
                on_time = [t >= late_watermark for t in times]
                records, times = list(compress(records, on_time)), list(compress(times, on_time))
            groups: defaultdict[Any, list[Any]] = defaultdict(list)
            for key, record in zip(map(get_user, records), records, strict=True):
                groups[key].append(record)
            keys = sorted(groups)
            kbs = list(map(_pack_key, keys))
            stored = list(map(cache.get, kbs, repeat(cache)))  # `cache` itself marks a miss
            for i, raw in enumerate(stored):
                if raw is cache:
                    stored[i] = rows_cf.get(kbs[i])
            writes: list[tuple[bytes, bytes | None, int]] = []  # key, new row (None: delete), old timeout
            state.watermark = watermark
            pop = groups.pop
            for key, kb, raw in zip(keys, kbs, stored, strict=True):
                old = _call(state, handler, out, key, pop(key), raw, False)
                if state.updated or state.removed or state.timeout != old:
                    writes.append((kb, _row(state), old))
            if watermark > floor:  # expired timers of keys without data
                bound = ReadOptions()
                bound.set_iterate_upper_bound(deadline_prefix(watermark))
                with_data = set(kbs)
                for timer in list(timers_cf.keys(from_key=deadline_prefix(floor), read_opt=bound)):
                    kb = timer[TIMER_PREFIX_BYTES:]
                    if kb in with_data:
                        continue
                    raw = cache[kb] if kb in cache else rows_cf.get(kb)
                    old = _call(state, handler, out, msgpack.unpackb(kb), [], raw, True)
                    writes.append((kb, _row(state), old))
                new_floor = watermark
            else:
                new_floor = floor
            latest = max(times, default=None)
            del records, groups, times
            gc.enable()
            commit = WriteBatch(raw_mode=True)
            added, removed = [], []
            for kb, row, old in writes:
                new = NO_TIMEOUT_MS if row is None else _unpack_timeout(row)[0]
                if row is None:
                    commit.delete(kb, h_rows)
                else:
                    commit.put(kb, row, h_rows)
                cache[kb] = row
                if new != old:
                    if new != NO_TIMEOUT_MS:
                        added.append((new, kb))
                    if old != NO_TIMEOUT_MS:
                        removed.append(timer_key(old, kb))
            added.sort()
            for deadline, kb in added:
                commit.put(timer_key(deadline, kb), b"", h_timers)
            if added:
                new_floor = min(new_floor, added[0][0])
            below = deadline_prefix(new_floor)
            if new_floor > floor:  # every timer below the new floor is gone: one range deletion
                commit.delete_range(deadline_prefix(floor), below, h_timers)
            for timer in sorted(removed):
                if timer >= below:
                    commit.delete(timer, h_timers)
            commit.put(b"commit", orjson.dumps({"batch_id": batch_id, "end": f.tell(), "floor": new_floor}), h_meta)
            db.write(commit, synced)
            floor, late_watermark, batch_id = new_floor, watermark, batch_id + 1
            if latest is not None:
                watermark = max(watermark, latest - WATERMARK_DELAY_MS)
    db.close()
    return out


def _call(state: CallState, handler: Callable[[Any, list[Any], Any], Any], out: list[Any], key: Any,
          values: list[Any], raw: bytes | None, timed_out: bool) -> int:
    """One handler call on the stored row ``raw``; returns the row's stored timeout."""
    if raw is None:
        old, state.value, state.defined = NO_TIMEOUT_MS, None, False
    else:
        old, state.value, state.defined = _unpack_timeout(raw)[0], msgpack.unpackb(raw[_TIMEOUT.size:]), True
    state.updated = state.removed = False
    state.timeout, state.timed_out = NO_TIMEOUT_MS, timed_out
    out.extend(handler(key, values, state))
    return old


def _row(state: CallState) -> bytes | None:
    """The row to write back after a call, ``None`` to delete it (no value and no timeout)."""
    if not state.defined and state.timeout == NO_TIMEOUT_MS:
        return None
    return _pack_timeout(state.timeout) + _pack_value(state.value if state.defined else None)
