"""``RocksDBStateStore``: durable state, the timer index and commit records in one RocksDB.

Layout (one RocksDB directory, ``<checkpoint_dir>/state``), four column families:

* ``state``: encoded group key -> 8-byte big-endian timeout (``NO_TIMEOUT_MS`` = none)
  followed by the msgpack value (``codec.Codec``).
* ``timers``: the ``timers.RocksDBTimerIndex``, one entry per row with a timeout.
* ``kv``: the ordered namespace of ``state.kv`` (stateful processors'
  variables and timers; empty for ``*_groups_with_state`` operators).
* ``meta``: ``format_version``, ``signature`` (the operator signature, JSON),
  ``commit`` (the last ``CommitRecord``, JSON), ``num_rows`` (the exact row
  count) and ``timer_floor`` (no live timer is below it).

A batch's changes are staged in memory and written by ``commit`` as ONE
``WriteBatch`` with a synced WAL: state puts/deletes, timer moves, the row
count, the timer floor and the commit record land together or not at all.

``open`` never writes: it opens RocksDB read-only (and does not create a
missing store), so an app that then refuses to start because the offsets log
is damaged leaves the checkpoint byte for byte as it was. The first
``commit`` reopens it read-write; the very first commit of a new store
builds it aside and renames it into place (``rocksdb_dir``), so a kill at
any moment leaves either no store or a committed one. An exclusive
``flock`` on the store directory keeps a second app off a checkpoint in use.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import struct
import threading
from collections import deque
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from typing import Any

from rocksdict import Rdict, WriteBatch, WriteOptions

from statefulstream.errors import StateCorruptedError, StateError
from statefulstream.records import NO_TIMEOUT_MS
from statefulstream.state.codec import DEFAULT_CODEC, Codec, StateEncodeError
from statefulstream.state.kv import KV_COLUMN_FAMILY, KVSnapshot, RocksDBKV, SnapshotKV, StagedKV
from statefulstream.state.rocksdb_dir import (
    COLUMN_FAMILIES,
    META_COMMIT,
    REMEDY,
    check_meta,
    create_rocksdb_checkpoint,
    disk_bytes,
    has_column_family,
    is_new,
    lock_dir,
    meta_items,
    normalize_signature,
    open_rocksdb,
    publish,
    read_meta,
    remove_abandoned,
    staging_dir,
)
from statefulstream.state.rocksdb_view import snapshot_at_commit, take_view
from statefulstream.state.store import CommitRecord, CommittedView, StateRow, StateStore
from statefulstream.state.timers import MIN_DEADLINE_MS, RocksDBTimerIndex

logger = logging.getLogger(__name__)

DEFAULT_CACHE_KEYS = 100_000
"""Rows kept in the in-memory cache in front of RocksDB."""

_TIMEOUT = struct.Struct(">q")
_pack_timeout = _TIMEOUT.pack
_MISSING = object()
_new_row = functools.partial(tuple.__new__, StateRow)  # StateRow((value, timeout)) without its Python __new__
_EXPIRED_CHUNK = 512  # timers read per multi-get while walking the index


class RocksDBStateStore(StateStore):
    """The durable ``StateStore``: RocksDB via rocksdict, msgpack values, a bounded row cache.

    Args:
        path: the store directory (``<checkpoint_dir>/state``); created by the first commit.
        cache_keys: committed rows kept in memory (encoded, so every read returns a
            fresh object). Memory is bounded by this, not by the number of keys.
        codec: encodes values and keys (default ``codec.DEFAULT_CODEC``).
        read_only: for inspection: take no lock (a running app may hold it) and
            refuse ``commit``. See :func:`inspect_store`.

    The contract is ``StateStore``'s. Beyond it: ``snapshot(dest)`` makes a
    consistent copy; ``open`` writes nothing (see the module docstring).
    Not thread-safe: one executor thread uses it; only ``snapshot`` and
    ``committed_view`` may be called from another thread.
    """

    def __init__(self, path: str, cache_keys: int = DEFAULT_CACHE_KEYS, *, codec: Codec = DEFAULT_CODEC,
                 read_only: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.read_only = read_only
        self._cache_keys = max(0, int(cache_keys))
        self._codec = codec
        self._db: Rdict | None = None
        self._db_path = self.path  # a staging directory until a new store's first commit is published
        self._writable = False
        self._new = False
        self._signature = ""
        self._lock_fd: int | None = None
        self._cf: dict[str, Rdict] = {}
        self._handles: dict[str, Any] = {}
        self._timers = RocksDBTimerIndex()
        self._kv = StagedKV()
        self._num_rows = 0
        self._cache: dict[bytes, bytes | None] = {}
        # This batch's writes in call order, (key bytes, row bytes or None to delete): appending is
        # cheaper than a dict insert per handler call; a dict is built when they are read (last write wins).
        self._writes: list[tuple[bytes, bytes | None]] = []
        # The keys of the batch's last get_many and their encodings: expired_except's skip set reuses them
        # instead of encoding the keys called with data a second time.
        self._read: tuple[Sequence[Hashable], list[bytes]] = ((), [])
        # Bound once: put_value runs once per handler call.
        self._stage, self._pack_key, self._pack_value = self._writes.append, codec.pack_key, codec.pack_value
        self._sync = WriteOptions()
        self._sync.sync = True
        # Held while RocksDB is reopened (read-write, or at the first commit's rename), so that
        # ``snapshot`` and ``committed_view`` from another thread never see a closing database.
        self._swap = threading.Lock()

    @property
    def signature(self) -> dict[str, Any]:
        """The operator signature given to ``open`` (as stored: JSON data)."""
        return dict(json.loads(self._signature)) if self._signature else {}

    @property
    def timer_floor_ms(self) -> int:
        """No committed timer has a deadline below this; ``expired`` starts reading here."""
        return self._timers.floor_ms

    # --- lifecycle

    def open(self, signature: Mapping[str, Any]) -> CommitRecord | None:
        """Open read-only, check format version and signature, return the last commit.

        A missing or empty directory is a new store: nothing is created until the
        first commit, and ``None`` is returned. Staging directories of a run
        killed during its first commit are removed (they never held a commit).

        Raises:
            IncompatibleStateError: another format version or operator signature.
            StateCorruptedError: RocksDB or the metadata cannot be read.
            StateError: another process has the store open.
        """
        self.close()
        self._signature = normalize_signature(signature)
        if not self.read_only:
            remove_abandoned(self.path)
        if is_new(self.path):
            self._new = True
            return None
        if not self.read_only:
            self._lock_fd = lock_dir(self.path)
        try:
            self._attach(open_rocksdb(self.path, read_only=True), self.path)
            meta = read_meta(self._db, self.path)  # type: ignore[arg-type]
            check_meta(self.path, meta, self._signature)
        except BaseException:
            self.close()
            raise
        self._num_rows = self._count("state") if meta.num_rows is None else meta.num_rows
        self._timers.count = self._count("timers") if meta.num_timers is None else meta.num_timers
        self._timers.floor_ms = MIN_DEADLINE_MS if meta.timer_floor_ms is None else meta.timer_floor_ms
        last = meta.commit
        logger.info("state store %r opened at batch %s (%d rows)", self.path,
                    None if last is None else last.batch_id, self._num_rows)
        return last

    def _count(self, family: str) -> int:
        # A store written before the counts were kept: count once; the next commit stores them.
        logger.info("state store %r: counting its %s once (written by an older statefulstream)", self.path, family)
        return sum(1 for _ in self._cf[family].keys())

    def close(self) -> None:
        """Release RocksDB and the directory lock; staged changes are dropped. Idempotent."""
        with self._swap:
            self._detach()
        self._cache.clear()
        self._writes.clear()
        self._read = ((), [])
        self._kv.discard()
        self._timers = RocksDBTimerIndex()
        self._num_rows = 0
        if self._new and self._db_path != self.path:
            shutil.rmtree(self._db_path, ignore_errors=True)  # a staging store that never committed
        self._db_path = self.path
        self._new = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _attach(self, db: Rdict, path: str) -> None:
        self._db, self._db_path = db, path
        names = [name for name in COLUMN_FAMILIES if name != KV_COLUMN_FAMILY or has_column_family(path, name)]
        self._cf = {name: db.get_column_family(name) for name in names}
        self._handles = {name: db.get_column_family_handle(name) for name in names}
        self._timers.bind(self._cf["timers"], self._handles["timers"])
        self._kv.bind(RocksDBKV(self._cf[KV_COLUMN_FAMILY]) if KV_COLUMN_FAMILY in self._cf else None)

    def _detach(self) -> None:
        db, self._db = self._db, None
        # Column-family objects keep RocksDB alive: drop them before closing.
        self._cf, self._handles = {}, {}
        self._timers.unbind()
        self._kv.bind(None)
        self._writable = False
        if db is not None:
            db.close()

    def _ensure_writable(self) -> None:
        if self._writable:
            return
        if self.read_only:
            msg = f"state store {self.path} was opened read-only (for inspection); it cannot commit"
            raise StateError(msg, path=self.path)
        with self._swap:
            self._detach()
            if self._new:  # built aside, renamed into place by the first commit (see rocksdb_dir)
                path = staging_dir(self.path)
                self._db_path = path
                self._lock_fd = lock_dir(path)
            else:
                path = self.path
            self._attach(open_rocksdb(path, read_only=False), path)
            self._writable = True

    def _publish(self) -> None:
        """Move a new store's first commit into place; the lock moves with the directory."""
        with self._swap:
            staging = self._db_path
            self._detach()
            publish(staging, self.path)
            self._new = False
            self._attach(open_rocksdb(self.path, read_only=False), self.path)
            self._writable = True

    # --- reads

    def _committed(self, kbs: Sequence[bytes], *, taken: bool = False) -> list[bytes | None]:
        """Return committed row bytes of encoded keys: cache first, then one RocksDB get per miss.

        ``taken``: the keys leave the cache and misses are not added (a commit re-inserts its rows).

        Single gets, not one multi-get: rocksdict's multi-get costs ~0.5 µs per absent key (every new
        group), a single get ~0.2 µs (and ~0.8 against ~1 µs for a present one).
        """
        cache = self._cache
        out: list[Any] = list(map(cache.pop if taken else cache.get, kbs, itertools.repeat(_MISSING)))
        # Counted first (a C-level pass), indexed only when something is missing.
        missing = [i for i, raw in enumerate(out) if raw is _MISSING] if out.count(_MISSING) else []
        if missing:
            misses: list[Any] = [kbs[i] for i in missing]
            fetched: list[bytes | None] = (
                list(map(self._cf["state"].get, misses)) if self._db is not None else [None] * len(missing))
            if len(missing) == len(out):  # nothing cached (new keys, a cold start): no per-key loop
                out = list(fetched)
            else:
                for i, raw in zip(missing, fetched, strict=True):
                    out[i] = raw
            if self._cache_keys and not taken:
                cache.update(zip(misses, fetched, strict=True))
                self._trim_cache()
        return out

    def _trim_cache(self) -> None:
        """Evict the oldest rows beyond ``cache_keys``: a plain dict keeps insertion order, and commit re-inserts
        the rows it writes, so rows in use stay."""
        cache = self._cache
        excess = len(cache) - self._cache_keys
        if excess > 0:
            deque(map(cache.__delitem__, list(itertools.islice(cache, excess))), maxlen=0)

    def _decode(self, raw: bytes) -> StateRow:
        row = self._decode_rows((raw,))[0]
        assert row is not None
        return row

    def _decode_rows(self, raws: Sequence[bytes | None]) -> list[StateRow | None]:
        """Each present row decoded (``None`` stays ``None``): the timeout prefix, then the value; values are
        decoded in one pass."""
        values = iter(self._codec.decode_many([raw[_TIMEOUT.size:] for raw in raws if raw is not None]))
        unpack = _TIMEOUT.unpack_from
        return [None if raw is None else _new_row((next(values), unpack(raw)[0])) for raw in raws]

    def get_many(self, keys: Sequence[Hashable]) -> list[StateRow | None]:
        """Return each key's row, staged changes first, then cache, then RocksDB."""
        try:
            kbs = list(map(self._codec.pack_key, keys))
        except Exception:  # noqa: BLE001 - encode_key says which key and why
            kbs = [self._codec.encode_key(k) for k in keys]
        self._read = (keys, kbs)
        if self._writes:
            staged = dict(self._writes)
            raws: list[Any] = [staged.get(kb, _MISSING) for kb in kbs]
            missing = [i for i, raw in enumerate(raws) if raw is _MISSING]
            for i, raw in zip(missing, self._committed([kbs[i] for i in missing]), strict=True):
                raws[i] = raw
        else:
            raws = self._committed(kbs)
        return self._decode_rows(raws)

    def expired(self, threshold_ms: int) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows with a timeout below ``threshold_ms`` in ``(deadline, key bytes)`` order.

        Reads the timer index from its floor up to the threshold, plus one
        multi-get per chunk of timers: O(expired), not O(state) nor O(timers ever set).

        Raises:
            StateCorruptedError: a timer points at a row that is not there.
        """
        return self.expired_except(threshold_ms, ())

    def expired_except(self, threshold_ms: int, skip: Collection[Hashable]) -> Iterator[tuple[Hashable, StateRow]]:
        """:meth:`expired` without the timers of keys in ``skip`` (compared encoded), which are not read."""
        if self._db is None:
            return
        due = self._timers.due(threshold_ms)
        if skip:
            skipped = self._encoded_skip(skip)
            due = iter([timer for timer in due if timer[1] not in skipped])
        decode_key, unpack = self._codec.decode_key, _TIMEOUT.unpack_from
        while chunk := list(itertools.islice(due, _EXPIRED_CHUNK)):
            kbs = [kb for _, kb in chunk]
            raws = self._committed(kbs)
            for (deadline, kb), raw in zip(chunk, raws, strict=True):
                if raw is None or unpack(raw)[0] != deadline:
                    msg = (f"state store {self.path}: the timer index has a timer at {deadline} for key "
                           f"{decode_key(kb)!r} that its state row does not have. {REMEDY}")
                    raise StateCorruptedError(msg, path=self.path)
            yield from zip(map(decode_key, kbs), self._decode_rows(raws), strict=True)

    def _encoded_skip(self, skip: Collection[Hashable]) -> set[bytes]:
        """Encoded keys whose timers ``expired_except`` may leave out: all of ``skip``, or only the keys of the last
        ``get_many`` when every one of them is in ``skip`` (those are encoded already: the executor's case, where
        ``skip`` is the keys it read with data, ~0.2 µs each saved)."""
        keys, kbs = self._read
        if keys and all(map(skip.__contains__, keys)):
            return set(kbs)
        try:
            return set(map(self._codec.pack_key, skip))
        except Exception:  # noqa: BLE001 - a key that cannot be encoded has no row to skip: read them all
            return set()

    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield every committed row in key-bytes order (inspection, tests)."""
        if self._db is None:
            return
        decode_key = self._codec.decode_key
        for kb, raw in self._cf["state"].items():
            yield decode_key(kb), self._decode(raw)  # type: ignore[arg-type]  # raw mode: always bytes

    def num_rows(self) -> int:
        """Return the exact number of committed rows (kept in ``meta``, moved by every commit)."""
        return self._num_rows

    def disk_bytes(self) -> int:
        """Return the bytes of the store directory's files (0 before the first commit)."""
        return 0 if self._new else disk_bytes(self.path)

    def num_timers(self) -> int:
        """Return the exact number of committed timers (kept in ``meta``, moved by every commit)."""
        return self._timers.count

    def committed_view(self) -> CommittedView | None:
        """Return a snapshot of the committed rows for another thread (``rocksdb_view``); no cache.

        ``None`` until the first commit is in place: the staging store of a new
        checkpoint is renamed under its readers' feet.
        """
        with self._swap:  # held by the loop only while RocksDB is reopened or the first commit renamed
            if self._new:
                return None
            return take_view(self._cf, META_COMMIT, self._decode, self._codec.decode_key)

    def committed_kv(self) -> KVSnapshot | None:
        """Return a snapshot of the committed ``kv`` family for another thread (as ``committed_view``)."""
        with self._swap:
            taken = None if self._new else snapshot_at_commit(self._cf, KV_COLUMN_FAMILY, META_COMMIT)
        if taken is None:
            return None
        snapshot, commit = taken
        return KVSnapshot(SnapshotKV(snapshot), None if commit is None else int(commit["batch_id"]),
                          None if commit is None else int(commit["batch_ts_ms"]))

    # --- writes

    def put(self, key: Hashable, row: StateRow) -> None:
        """Stage a row; its value is encoded now, so a bad type fails at the call that stored it.

        Raises:
            codec.StateEncodeError: the value or key holds a type the codec cannot store, or the
                timeout is outside the int64 range.
        """
        self.put_value(key, row.value, row.timeout_ms)

    def put_value(self, key: Hashable, value: Any, timeout_ms: int) -> None:
        """Stage ``StateRow(value, timeout_ms)`` (see :meth:`put`), encoded now."""
        try:
            self._stage((self._pack_key(key), _pack_timeout(timeout_ms) + self._pack_value(value)))
        except Exception as exc:  # noqa: BLE001 - say what could not be stored
            raise self._encode_error(key, value, timeout_ms, exc) from exc

    def _encode_error(self, key: Hashable, value: Any, timeout_ms: int, exc: Exception) -> Exception:
        """The error for a row that cannot be staged: which key, and what in it the codec refused."""
        if isinstance(exc, struct.error):
            return StateEncodeError(f"state of key {key!r}: timeout {timeout_ms} is outside the range a stored "
                                    f"timeout can hold (a signed 64-bit number of epoch milliseconds)")
        try:
            self._codec.encode_key(key)
            self._codec.encode(value)
        except StateEncodeError as error:
            return StateEncodeError(f"state of key {key!r}: {error}")
        return exc  # not an encoding problem: as it was raised

    def delete(self, key: Hashable) -> None:
        """Stage the removal of a key's row and timer."""
        try:
            kb = self._codec.pack_key(key)
        except Exception:  # noqa: BLE001 - encode_key says which key and why
            kb = self._codec.encode_key(key)
        self._writes.append((kb, None))

    def staged_changes(self) -> Mapping[bytes, bytes | None]:
        """The batch's staged rows as stored: encoded key -> encoded row, ``None`` for a removal.

        A scale-out partition task writes these to its changelog topic, in the
        same Kafka transaction as the batch's outputs (``statefulstream.scaleout``).
        """
        return dict(self._writes)

    def stage_encoded(self, key: bytes, row: bytes | None) -> None:
        """Stage a row exactly as :meth:`staged_changes` gave it (restoring from a changelog)."""
        self._writes.append((key, row))

    def abort(self) -> None:
        """Discard staged changes."""
        self._writes.clear()
        self._read = ((), [])
        self._timers.discard()
        self._kv.discard()

    def kv(self) -> StagedKV:
        """Return the ordered namespace (the ``kv`` column family), committed with the rows."""
        return self._kv

    def commit(self, record: CommitRecord) -> None:
        """Write staged rows, timer moves, row count, timer floor and ``record`` as one synced write batch.

        Raises:
            StateError: RocksDB refused the write (disk full, I/O error); nothing of the
                batch is applied and the staged changes are kept for ``abort``.
        """
        self._ensure_writable()
        h_state, h_meta = self._handles["state"], self._handles["meta"]
        staged, timers = dict(self._writes), self._timers
        batch = WriteBatch(raw_mode=True)
        timers.begin(batch)
        rows = self._num_rows
        unpack = _TIMEOUT.unpack_from
        if staged:
            put, delete = batch.put, batch.delete
            moves: list[tuple[bytes, int, int]] = []  # (key, old timeout, new timeout), changed ones
            move = moves.append
            # Taken out of the cache (re-inserted as the newest after the write; a failed write only loses
            # cached copies of committed rows).
            for (kb, new), old in zip(staged.items(), self._committed(list(staged), taken=True), strict=True):
                if new is None:
                    delete(kb, h_state)
                    new_t = NO_TIMEOUT_MS
                    rows -= old is not None
                else:
                    put(kb, new, h_state)
                    new_t = unpack(new)[0]
                    rows += old is None
                old_t = NO_TIMEOUT_MS if old is None else unpack(old)[0]
                if old_t != new_t:
                    move((kb, old_t, new_t))
            timers.stage(moves)
        floor = timers.finish()
        header = self._signature if self._new else None
        for name, value in meta_items(commit=record, num_rows=rows, num_timers=timers.staged_count(),
                                      timer_floor_ms=floor, signature=header):
            batch.put(name, value, h_meta)
        self._kv.write_to(batch, self._handles[KV_COLUMN_FAMILY])
        try:
            self._db.write(batch, self._sync)  # type: ignore[union-attr]
        except Exception as exc:
            msg = f"state store {self.path}: writing batch {record.batch_id} failed: {exc}"
            raise StateError(msg, path=self.path) from exc
        if self._new:
            self._publish()
        self._num_rows = rows
        timers.committed(floor)
        if self._cache_keys:  # written rows re-inserted as the newest: rows in use stay cached
            self._cache.update(staged)
            self._trim_cache()
        self._writes.clear()
        self._read = ((), [])
        self._kv.discard()

    # --- snapshots

    def snapshot(self, dest: str) -> None:
        """Write a consistent copy of the committed state to ``dest`` (a RocksDB checkpoint).

        ``dest`` must not exist. Files are hard-linked where possible, so this is
        cheap. Staged, uncommitted changes are not in the copy.

        Raises:
            StateError: ``dest`` exists, or nothing has been committed yet.
        """
        with self._swap:
            if self._db is None or self._new:
                msg = f"state store {self.path} has no committed batch yet; nothing to snapshot"
                raise StateError(msg, path=self.path)
            create_rocksdb_checkpoint(self._db, dest)


def inspect_store(path: str, *, codec: Codec = DEFAULT_CODEC) -> tuple[RocksDBStateStore, CommitRecord | None]:
    """Open a store read-only with the signature it was written with; return it and its last commit.

    For inspection (CLI, tests): nothing is written and no lock is taken. The
    caller closes the store.

    Raises:
        StateCorruptedError: the directory is missing, damaged, or not a store.
    """
    if not os.path.isdir(path):
        msg = f"state store {path} does not exist; is this a checkpoint directory of a statefulstream app?"
        raise StateCorruptedError(msg, path=path)
    db = open_rocksdb(path, read_only=True)
    try:
        signature = read_meta(db, path).signature
    finally:
        db.close()
    store = RocksDBStateStore(path, cache_keys=0, codec=codec, read_only=True)
    return store, store.open(json.loads(signature))
