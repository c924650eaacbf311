"""An ordered bytes -> bytes namespace beside the state rows, committed with them.

``StagedKV`` holds a batch's writes in memory (sorted, so range scans merge
them with the committed entries in key order) over a committed backend:
``MemoryKV`` for ``MemoryStateStore``, ``RocksDBKV`` (the ``kv`` column
family) for ``RocksDBStateStore``. The store that owns it applies the staged
writes in its own commit (the same RocksDB ``WriteBatch`` as the rows and the
commit record), or drops them on abort. Stateful processors keep their
variables and timers here (``statefulstream.processor.layout``); each list
element and map entry is its own key, so an append rewrites nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from rocksdict import Rdict, ReadOptions, WriteBatch
from sortedcontainers import SortedDict  # type: ignore[import-untyped]

KV_COLUMN_FAMILY = "kv"
"""The RocksDB column family of the namespace."""


def prefix_end(prefix: bytes) -> bytes | None:
    """Return the smallest key above every key starting with ``prefix`` (``None``: no bound).

    >>> prefix_end(b"ab"), prefix_end(b"a\\xff"), prefix_end(b"\\xff")
    (b'ac', b'b', None)
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class CommittedKV(Protocol):
    """The committed entries a ``StagedKV`` reads through."""

    def get(self, key: bytes) -> bytes | None:
        """Return the committed value of ``key``, or ``None``."""

    def range(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Yield committed entries with ``lo <= key < hi`` (``hi=None``: no bound) in key order."""


class _Empty:
    """The committed side of a store that has never committed."""

    def get(self, key: bytes) -> bytes | None:
        return None

    def range(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return iter(())


class MemoryKV:
    """Committed entries in a sorted dict (``MemoryStateStore``)."""

    def __init__(self, entries: SortedDict | None = None) -> None:
        self.entries: SortedDict = SortedDict() if entries is None else entries

    def get(self, key: bytes) -> bytes | None:
        """Return the committed value of ``key``, or ``None``."""
        value: bytes | None = self.entries.get(key)
        return value

    def range(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Yield committed entries in ``[lo, hi)`` in key order."""
        entries = self.entries
        for key in list(entries.irange(lo, hi, inclusive=(True, False))):
            yield key, entries[key]

    def apply(self, writes: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Apply staged writes (``None`` deletes)."""
        entries = self.entries
        for key, value in writes:
            if value is None:
                entries.pop(key, None)
            else:
                entries[key] = value


class RocksDBKV:
    """Committed entries in the ``kv`` column family of an open store (raw mode)."""

    def __init__(self, column_family: Rdict) -> None:
        self.cf = column_family

    def get(self, key: bytes) -> bytes | None:
        """Return the committed value of ``key``, or ``None``."""
        value: bytes | None = self.cf.get(key)
        return value

    def range(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Yield committed entries in ``[lo, hi)`` in key order (one RocksDB iterator, bounded)."""
        opts = ReadOptions()
        if hi is not None:
            opts.set_iterate_upper_bound(hi)
        it = self.cf.iter(opts)
        it.seek(lo)
        while it.valid():
            yield it.key(), it.value()
            it.next()


class SnapshotKV:
    """Committed entries of a RocksDB snapshot of the ``kv`` family: readable from any thread."""

    def __init__(self, snapshot: Any) -> None:
        self._snapshot = snapshot

    def get(self, key: bytes) -> bytes | None:
        """Return the value of ``key`` in the snapshot, or ``None``."""
        it = self._snapshot.iter()
        it.seek(key)
        return it.value() if it.valid() and it.key() == key else None

    def range(self, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Yield the snapshot's entries in ``[lo, hi)`` in key order."""
        it = self._snapshot.iter()  # ReadOptions of our own would replace the snapshot's: bound by hand
        it.seek(lo)
        while it.valid() and (hi is None or it.key() < hi):
            yield it.key(), it.value()
            it.next()


@dataclasses.dataclass(frozen=True)
class KVSnapshot:
    """The committed namespace as of one batch, for a reader on another thread (state queries).

    Attributes:
        entries: the committed entries (read through a fresh ``StagedKV``).
        batch_id: the batch whose commit it shows, or ``None`` before the first.
        batch_ts_ms: that batch's processing time (TTL visibility), or ``None``.
    """

    entries: CommittedKV
    batch_id: int | None
    batch_ts_ms: int | None


class StagedKV:
    """An ordered namespace: a batch's staged writes over the committed entries.

    Reads (``get``, ``range``, ``scan``) see staged writes first. Writes are
    kept until the owning store's ``commit`` takes them (``staged``/``write_to``) or ``discard`` drops them
    (after the commit, or on abort). Not thread-safe: the batch
    thread uses it.
    """

    def __init__(self, committed: CommittedKV | None = None) -> None:
        self._committed: CommittedKV = committed if committed is not None else _Empty()
        self._staged: SortedDict = SortedDict()

    def bind(self, committed: CommittedKV | None) -> None:
        """Read committed entries from ``committed`` (``None``: nothing committed)."""
        self._committed = committed if committed is not None else _Empty()

    # --- reads

    def get(self, key: bytes) -> bytes | None:
        """Return the value of ``key`` (staged first), or ``None``."""
        staged = self._staged
        if key in staged:
            value: bytes | None = staged[key]
            return value
        return self._committed.get(key)

    def range(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """Return the entries in ``[lo, hi)`` in key order, staged writes merged in.

        A list, not an iterator: callers may write while they walk it.
        """
        staged = self._staged
        out: list[tuple[bytes, bytes]] = []
        pending = [(k, staged[k]) for k in staged.irange(lo, hi, inclusive=(True, False))]
        i = 0
        for key, value in self._committed.range(lo, hi):
            while i < len(pending) and pending[i][0] < key:
                if pending[i][1] is not None:
                    out.append(pending[i])
                i += 1
            if i < len(pending) and pending[i][0] == key:
                if pending[i][1] is not None:
                    out.append(pending[i])
                i += 1
                continue
            out.append((key, value))
        out.extend(p for p in pending[i:] if p[1] is not None)
        return out

    def scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Return the entries whose key starts with ``prefix``, in key order."""
        return self.range(prefix, prefix_end(prefix))

    # --- writes

    def put(self, key: bytes, value: bytes) -> None:
        """Stage ``key = value``."""
        self._staged[key] = value

    def delete(self, key: bytes) -> None:
        """Stage the removal of ``key``."""
        self._staged[key] = None

    def delete_prefix(self, prefix: bytes) -> int:
        """Stage the removal of every key starting with ``prefix``; return how many there were."""
        keys = [k for k, _ in self.scan(prefix)]
        for key in keys:
            self._staged[key] = None
        return len(keys)

    # --- commit protocol (called by the owning store)

    def staged(self) -> list[tuple[bytes, Any]]:
        """Return the staged writes in key order (value ``None`` deletes)."""
        return list(self._staged.items())

    def write_to(self, batch: WriteBatch, column_family: Any) -> None:
        """Add the staged writes to a RocksDB write batch, in ``column_family`` (a handle)."""
        put, delete = batch.put, batch.delete
        for key, value in self._staged.items():
            if value is None:
                delete(key, column_family)
            else:
                put(key, value, column_family)

    def discard(self) -> None:
        """Drop the staged writes: the owning store has committed them, or aborts."""
        self._staged.clear()
