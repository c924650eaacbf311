"""Read committed RocksDB state from another thread: a snapshot of the ``state`` (or ``kv``) column family.

Only committed batches ever reach RocksDB (a batch's changes are staged in
memory until its one atomic write), so any RocksDB read is committed state.
A RocksDB snapshot pins one sequence number, so a listing is consistent: it
never mixes two batches. Nothing here takes a lock of the batch loop or
touches the store's (single-threaded) row cache.

Prefix listings work on the encoded keys (msgpack, ``codec.py``): a string
key is a length header followed by its UTF-8 bytes, so ``"user-"`` matches
one byte range per possible header, visited in key order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from statefulstream.errors import StateError
from statefulstream.state.store import CommittedView, StateRow

_ATTEMPTS = 100  # commits between reading the commit record and taking the snapshot are rare; retry then


def _pack_key(key: Hashable) -> bytes:
    # Byte-identical to Codec.encode_key for the URL forms' types (str, int, float, bool, None, tuples),
    # with a packer of its own: the store's packer belongs to the loop's thread.
    return bytes(msgpack.packb(key, use_bin_type=True))


def string_prefix_ranges(prefix: str) -> list[tuple[bytes, int]]:
    """Return ``(start bytes, header length)`` per msgpack string header a key with ``prefix`` can have.

    Fixed-length headers (fixstr, str8) give one exact range per length;
    str16/str32 keys (256+ bytes) are one range each, filtered by the caller
    (the header length says where the text starts). In key order.

    >>> [(start[:2], header) for start, header in string_prefix_ranges("a" * 30)][:3]
    [(b'\\xbea', 1), (b'\\xbfa', 1), (b'\\xd9 ', 2)]
    """
    text = prefix.encode()
    n = len(text)
    ranges = [(bytes([0xA0 | length]) + text, 1) for length in range(n, 32)]
    ranges += [(bytes([0xD9, length]) + text, 2) for length in range(max(n, 32), 256)]
    ranges += [(b"\xda", 3), (b"\xdb", 5)]
    return ranges


class RocksDBView(CommittedView):
    """A snapshot of committed rows (see the module docstring).

    Args:
        snapshot: a RocksDB snapshot of the ``state`` column family.
        batch_id: the batch whose commit the snapshot shows.
        decode_row / decode_key: the store's decoders (thread-safe: msgpack unpacking only).
    """

    def __init__(self, snapshot: Any, batch_id: int | None, decode_row: Callable[[bytes], StateRow],
                 decode_key: Callable[[bytes], Hashable]) -> None:
        self._snapshot = snapshot
        self.batch_id = batch_id
        self._decode_row = decode_row
        self._decode_key = decode_key

    def get(self, key: Hashable) -> StateRow | None:
        """Return the committed row of ``key``, or ``None``."""
        try:
            kb = _pack_key(key)
        except (TypeError, ValueError, OverflowError):
            return None  # a key that cannot be encoded cannot be stored either
        it = self._snapshot.iter()
        it.seek(kb)
        return self._decode_row(it.value()) if it.valid() and it.key() == kb else None

    def scan(self, prefix: str | None, limit: int) -> list[tuple[Hashable, StateRow]]:
        """Return at most ``limit`` rows in key-bytes order: of ``str`` keys starting with ``prefix``, or all."""
        rows: list[tuple[Hashable, StateRow]] = []
        ranges = [(b"", 0)] if prefix is None else string_prefix_ranges(prefix)
        text = b"" if prefix is None else prefix.encode()
        it = self._snapshot.iter()
        for start, header in ranges:
            # Exact ranges start with the whole prefix; the str16/str32 ranges only with their type byte.
            exact = prefix is None or header <= 2
            it.seek(start)
            while it.valid() and len(rows) < limit:
                kb: bytes = it.key()
                if not kb.startswith(start):
                    break
                if exact or kb[header:].startswith(text):
                    rows.append((self._decode_key(kb), self._decode_row(it.value())))
                it.next()
            if len(rows) >= limit:
                break
        return rows


def take_view(column_families: dict[str, Any], commit_key: bytes, decode_row: Callable[[bytes], StateRow],
              decode_key: Callable[[bytes], Hashable]) -> RocksDBView | None:
    """Snapshot the ``state`` family and name the batch it shows; ``None`` when the store is not open.

    Raises:
        StateError: commits kept landing in between (a starved reader thread).
    """
    taken = snapshot_at_commit(column_families, "state", commit_key)
    if taken is None:
        return None
    snapshot, commit = taken
    return RocksDBView(snapshot, None if commit is None else int(commit["batch_id"]), decode_row, decode_key)


def snapshot_at_commit(column_families: dict[str, Any], name: str,
                       commit_key: bytes) -> tuple[Any, dict[str, Any] | None] | None:
    """Snapshot column family ``name``; return it with the commit record it shows (``None``: not open).

    The commit record is read before and after the snapshot (a seqlock): the
    commit writes every family and the record atomically, so an unchanged
    record means the snapshot shows exactly that batch.

    Raises:
        StateError: commits kept landing in between (a starved reader thread).
    """
    family, meta = column_families.get(name), column_families.get("meta")
    if family is None or meta is None:
        return None
    for _ in range(_ATTEMPTS):
        before = meta.get(commit_key)
        snapshot = family.snapshot()
        if meta.get(commit_key) == before:
            return snapshot, None if before is None else json.loads(before)
    raise StateError("commits kept landing while a state query took its snapshot; ask again")
