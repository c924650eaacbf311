"""The timer index of a state store: which rows time out next, in ``(deadline, key)`` order.

Both stores keep one, with the same rule (:meth:`TimerIndex.move`): a row's
timer moves when its timeout changes, and only then. ``due(threshold)``
lists the committed timers below a threshold and costs O(due), never a
scan of every timer:

* :class:`HeapTimerIndex` (memory store): a heap with lazy deletion; a
  removed timer's entry is skipped when it surfaces, and the heap is rebuilt
  when stale entries outnumber live ones, so it stays O(timers).
* :class:`RocksDBTimerIndex` (RocksDB store): a column family whose keys
  are :func:`timer_key` (an 8-byte big-endian deadline offset by 2**63, so
  negative deadlines sort first, then the encoded group key). Moves are
  written into the commit's ``WriteBatch``. A scan seeks to the index's
  *floor* and stops at the threshold (``iterate_upper_bound``): the floor is the lowest deadline a live timer
  may have, committed with the batch, so the tombstones of timers that fired
  or moved before it are never read again, not even after a restart. A
  commit that removes many timers below its new floor deletes them with one
  range deletion instead of one tombstone each (``RANGE_DELETE_MIN``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import struct
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from rocksdict import Rdict, ReadOptions, WriteBatch

from statefulstream.records import NO_TIMEOUT_MS

K = TypeVar("K", bound=Hashable)
"""The key type of an index: group keys (memory) or encoded group keys (RocksDB)."""

MIN_DEADLINE_MS = -(1 << 63)
"""The lowest deadline the persistent index can hold (int64)."""

MAX_DEADLINE_MS = (1 << 63) - 1
"""The highest deadline the persistent index can hold (int64)."""

_DEADLINE = struct.Struct(">Q")
_DEADLINE_OFFSET = 1 << 63
TIMER_PREFIX_BYTES = _DEADLINE.size
"""Length of the deadline prefix of a timer-index key."""

RANGE_DELETE_MIN = 512
"""Removed timers below the new floor from which a commit deletes their range instead of each one.

A range deletion replaces that many tombstones, but every scan pays for each
range deletion in the memtable until it is flushed (~0.5 µs each here), so
only a commit that removes many timers writes one.
"""


def timer_key(deadline_ms: int, key_bytes: bytes) -> bytes:
    """Return the timer-index key of a deadline and an encoded group key.

    >>> timer_key(-1, b"a") < timer_key(0, b"a") < timer_key(1, b"") < timer_key(1, b"a")
    True
    """
    return _DEADLINE.pack(deadline_ms + _DEADLINE_OFFSET) + key_bytes


def deadline_prefix(deadline_ms: int) -> bytes:
    """Return the 8-byte prefix every timer key with this deadline starts with.

    Every timer with a deadline below ``deadline_ms`` sorts before it, so it
    is the exclusive upper bound of a scan for ``deadline < deadline_ms``
    and the inclusive lower bound of one for ``deadline >= deadline_ms``.
    Deadlines outside the int64 range are clamped to it.
    """
    return _DEADLINE.pack(min(max(deadline_ms, MIN_DEADLINE_MS), MAX_DEADLINE_MS) + _DEADLINE_OFFSET)


def split_timer_key(data: bytes) -> tuple[int, bytes]:
    """Return ``(deadline_ms, key_bytes)`` of a timer-index key."""
    return _DEADLINE.unpack_from(data)[0] - _DEADLINE_OFFSET, data[TIMER_PREFIX_BYTES:]


class TimerIndex(ABC, Generic[K]):
    """Ordered ``(deadline, key)`` pairs of the committed rows that have a timeout.

    A store calls :meth:`move` for every row its commit changes and
    :meth:`due` to find expired timers. Each key has at most one timer.
    """

    def move(self, key: K, old_ms: int, new_ms: int) -> None:
        """Record a row's timeout change from ``old_ms`` to ``new_ms`` (``NO_TIMEOUT_MS``: none).

        Nothing happens when they are equal: a row rewritten with the same
        timeout keeps its timer (and writes no tombstone).
        """
        if old_ms == new_ms:
            return
        if old_ms != NO_TIMEOUT_MS:
            self._remove(old_ms, key)
        if new_ms != NO_TIMEOUT_MS:
            self._add(new_ms, key)

    @abstractmethod
    def due(self, threshold_ms: int) -> Iterator[tuple[int, K]]:
        """Yield committed timers with ``deadline < threshold_ms`` in ``(deadline, key)`` order, in O(due)."""

    @abstractmethod
    def _add(self, deadline_ms: int, key: K) -> None:
        """Add the timer ``(deadline_ms, key)``."""

    @abstractmethod
    def _remove(self, deadline_ms: int, key: K) -> None:
        """Remove the timer ``(deadline_ms, key)``."""


class HeapTimerIndex(TimerIndex[Hashable]):
    """The memory store's index: a heap of ``(deadline, seq, key)`` with lazy deletion.

    ``move`` applies at once (the memory store calls it while applying a
    commit). An entry is live while its key's current ``seq`` is its own;
    ties on a deadline come out in the order the timers were set.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Hashable]] = []
        self._live: dict[Hashable, tuple[int, int]] = {}  # key -> (deadline, seq) of its one live entry
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def due(self, threshold_ms: int) -> Iterator[tuple[int, Hashable]]:
        """Yield live timers below the threshold; they stay in the index until a commit moves them."""
        heap, live = self._heap, self._live
        due: list[tuple[int, int, Hashable]] = []
        while heap and heap[0][0] < threshold_ms:
            entry = heapq.heappop(heap)
            if live.get(entry[2]) == entry[:2]:
                due.append(entry)  # stale entries are dropped for good here
        for entry in due:
            heapq.heappush(heap, entry)  # an aborted batch must still find them
        for deadline, _, key in due:
            yield deadline, key

    def _add(self, deadline_ms: int, key: Hashable) -> None:
        seq = next(self._seq)
        self._live[key] = (deadline_ms, seq)
        heapq.heappush(self._heap, (deadline_ms, seq, key))
        if len(self._heap) > 2 * len(self._live) + 64:  # mostly stale: rebuild, so memory stays O(timers)
            self._heap = [(d, s, k) for k, (d, s) in self._live.items()]
            heapq.heapify(self._heap)

    def _remove(self, deadline_ms: int, key: Hashable) -> None:
        self._live.pop(key, None)  # a key has one timer; its heap entry is now stale


class RocksDBTimerIndex(TimerIndex[bytes]):
    """The RocksDB store's index: one column family, keys :func:`timer_key`, empty values.

    A commit stages its moves with :meth:`begin` (into the commit's
    ``WriteBatch``) and :meth:`stage`, then :meth:`finish` writes the
    removals and gives the floor to store with it, and :meth:`committed` or
    :meth:`discard` ends it. ``due`` sees only committed timers.

    The floor: after a complete ``due(T)`` scan no committed timer lies in
    ``[floor, T)`` except the ones it yielded, so the next floor is the
    lowest of ``T``, the yielded timers this commit keeps, and the timers it
    adds. No live timer is ever below the floor. So every timer between the
    old floor and the new one is one the commit removes: :meth:`finish`
    deletes that range at once and writes a tombstone only for the removed
    timers above it.

    Args:
        floor_ms: the committed floor (``MIN_DEADLINE_MS`` when unknown: scan from the start).

    Attributes:
        floor_ms: the committed floor.
        count: the number of committed timers (the store keeps it in ``meta``).
    """

    def __init__(self, floor_ms: int = MIN_DEADLINE_MS) -> None:
        self.floor_ms = floor_ms
        self.count = 0  # committed timers
        self._added = 0  # staged additions
        self._cf: Rdict | None = None
        self._handle: Any = None
        self._batch: WriteBatch | None = None
        self._removed: list[bytes] = []  # staged removals, written by finish() once the new floor is known
        self._added_min = MAX_DEADLINE_MS
        self._scan: tuple[int, list[bytes]] | None = None  # last complete due(): threshold, timers yielded

    def bind(self, cf: Rdict, handle: Any) -> None:
        """Use the ``timers`` column family of an open RocksDB (``handle`` for write-batch writes)."""
        self._cf, self._handle = cf, handle

    def unbind(self) -> None:
        """Let go of the column family (before its RocksDB closes); staged moves and scans are kept."""
        self._cf, self._handle = None, None

    def due(self, threshold_ms: int) -> Iterator[tuple[int, bytes]]:
        """Yield committed timers in ``[floor, threshold_ms)``: reads nothing below the floor."""
        found: list[bytes] = []
        if threshold_ms > self.floor_ms:
            opts = ReadOptions()
            opts.set_iterate_upper_bound(deadline_prefix(threshold_ms))
            # Seeks to the floor (seek_to_first would walk every tombstone below it); read in one go.
            found = list(self._cf.keys(  # type: ignore[union-attr,arg-type]  # raw mode: bytes
                from_key=deadline_prefix(self.floor_ms), read_opt=opts))
        if self._scan is None or threshold_ms >= self._scan[0]:
            self._scan = (threshold_ms, found)
        unpack, offset = _DEADLINE.unpack_from, _DEADLINE_OFFSET  # split_timer_key, inlined: once per timer
        return iter([(unpack(tk)[0] - offset, tk[TIMER_PREFIX_BYTES:]) for tk in found])

    def begin(self, batch: WriteBatch) -> None:
        """Stage the following moves into ``batch`` (a commit's write batch)."""
        self._batch = batch
        self._removed = []
        self._added_min = MAX_DEADLINE_MS
        self._added = 0

    def stage(self, moves: Iterable[tuple[bytes, int, int]]) -> None:
        """Stage timer moves ``(key, old deadline, new deadline)`` (``NO_TIMEOUT_MS``: none).

        The same rule as :meth:`TimerIndex.move`, for all of a commit's rows
        in one loop (this runs once per written row). Additions go into the
        batch now, in key order (RocksDB inserts sorted keys into its memtable
        faster than scattered ones); removals wait for :meth:`finish`.
        """
        pack, removed, added = _DEADLINE.pack, self._removed, []
        for key, old_ms, new_ms in moves:
            if old_ms == new_ms:
                continue
            if old_ms != NO_TIMEOUT_MS:
                removed.append(pack(old_ms + _DEADLINE_OFFSET) + key)
            if new_ms != NO_TIMEOUT_MS:
                added.append(pack(new_ms + _DEADLINE_OFFSET) + key)
        added.sort()
        put, handle = self._batch.put, self._handle  # type: ignore[union-attr]
        for timer in added:
            put(timer, b"", handle)
        if added:
            self._added_min = min(self._added_min, split_timer_key(added[0])[0])
        self._added += len(added)

    def _add(self, deadline_ms: int, key: bytes) -> None:
        self.stage([(key, NO_TIMEOUT_MS, deadline_ms)])

    def _remove(self, deadline_ms: int, key: bytes) -> None:
        self.stage([(key, deadline_ms, NO_TIMEOUT_MS)])

    def staged_count(self) -> int:
        """Return the number of timers once the staged moves are committed."""
        return self.count + self._added - len(self._removed)

    def finish(self) -> int:
        """Write the staged removals into the batch; return the floor once the staged moves are committed.

        Every timer in ``[committed floor, new floor)`` is one of the removals
        (see the class docstring), so when at least ``RANGE_DELETE_MIN`` of
        them are there, that range is deleted at once; the other removals get
        a tombstone each, in key order.
        """
        floor = self.floor_ms
        removed = sorted(self._removed)
        if self._scan is not None:
            threshold, yielded = self._scan
            # A yielded timer stays unless a staged move removes it; the first kept one is the lowest
            # (`yielded` is in deadline order).
            gone = set(removed)
            kept = next((timer for timer in yielded if timer not in gone), None)
            floor = max(threshold, floor)  # nothing was below the floor, nor in [floor, threshold) but `yielded`
            if kept is not None:
                floor = min(floor, split_timer_key(kept)[0])
        floor = min(floor, self._added_min)
        batch, handle = self._batch, self._handle
        if floor > self.floor_ms:
            bound = deadline_prefix(floor)
            below = bisect.bisect_left(removed, bound)
            if below >= RANGE_DELETE_MIN:
                batch.delete_range(deadline_prefix(self.floor_ms), bound, handle)  # type: ignore[union-attr]
                del removed[:below]
        delete = batch.delete  # type: ignore[union-attr]
        for timer in removed:
            delete(timer, handle)
        return floor

    def committed(self, floor_ms: int) -> None:
        """The batch with the staged moves was written: adopt its floor and count, start the next batch."""
        self.floor_ms = floor_ms
        self.count = self.staged_count()
        self.discard()

    def discard(self) -> None:
        """Forget staged moves and scans (the batch was aborted or written)."""
        self._batch = None
        self._removed = []
        self._added_min = MAX_DEADLINE_MS
        self._added = 0
        self._scan = None
