"""``RocksDBStateStore``: durable state, the timer index and commit records in one RocksDB.

Layout (one RocksDB directory, ``<checkpoint_dir>/state``), three column families:

* ``state``: encoded group key -> 8-byte big-endian timeout (``-1`` = none)
  followed by the msgpack value (``codec.Codec``).
* ``timers``: ``codec.timer_key(deadline, key)`` -> empty, one entry per row
  with a timeout, so expired timers are a range scan from the start.
* ``meta``: ``format_version``, ``signature`` (the operator signature, JSON)
  and ``commit`` (the last ``CommitRecord``, JSON).

A batch's changes are staged in memory and written by ``commit`` as ONE
``WriteBatch`` with a synced WAL: state puts/deletes, timer moves and the
commit record land together or not at all.

``open`` never writes: it opens RocksDB read-only (and does not create a
missing store), so an app that then refuses to start because the offsets log
is damaged leaves the checkpoint byte for byte as it was. The first
``commit`` reopens it read-write. An exclusive ``flock`` on the store
directory keeps a second app off a checkpoint in use.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import struct
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBRecoveryMode,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
    WriteOptions,
)

from statefulstream.errors import IncompatibleStateError, StateCorruptedError, StateError
from statefulstream.state.codec import (
    DEFAULT_CODEC,
    Codec,
    StateEncodeError,
    deadline_prefix,
    split_timer_key,
    timer_key,
)
from statefulstream.state.rocksdb_view import take_view
from statefulstream.state.store import (
    CHECKPOINT_FORMAT_VERSION,
    NO_TIMEOUT_MS,
    CommitRecord,
    CommittedView,
    StateRow,
    StateStore,
)

logger = logging.getLogger(__name__)

COLUMN_FAMILIES = ("state", "timers", "meta")
"""Column families of a state store directory."""

DEFAULT_CACHE_KEYS = 100_000
"""Rows kept in the in-memory cache in front of RocksDB."""

BLOCK_CACHE_BYTES = 32 << 20
"""RocksDB block cache of a store (index and filter blocks included), shared by its column families."""

WRITE_BUFFER_BYTES = 16 << 20
"""RocksDB memtable size per column family; a batch's writes land here before a flush."""

_META_VERSION = b"format_version"
_META_SIGNATURE = b"signature"
_META_COMMIT = b"commit"
_TIMEOUT = struct.Struct(">q")
_MISSING = object()
_EXPIRED_CHUNK = 512  # timers read per multi-get while scanning the index
_REMEDY = ("Restore the checkpoint directory from a snapshot (statefulstream checkpoint snapshot), or start "
           "the app with a new checkpoint_dir. The app never starts from scratch on its own.")


def _cf_options(cache: Cache) -> Options:
    # Index and filter blocks go in the block cache too, so RocksDB's memory stays bounded as state grows.
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_bloom_filter(10, False)  # point lookups of absent keys (new groups) skip most files
    opts = Options(raw_mode=True)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    return opts


def _options(cache: Cache, *, create: bool) -> Options:
    opts = _cf_options(cache)
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    # Commits are synced, so a torn WAL tail can only be a write that never returned: safe to drop.
    opts.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    return opts


def normalize_signature(signature: Mapping[str, Any]) -> str:
    """Return the canonical JSON text a signature is stored and compared as."""
    return json.dumps(dict(signature), sort_keys=True, default=str)


def _encode_row(codec: Codec, row: StateRow) -> bytes:
    return _TIMEOUT.pack(row.timeout_ms) + codec.encode(row.value)


def _row_timeout(raw: bytes | None) -> int:
    return NO_TIMEOUT_MS if raw is None else _TIMEOUT.unpack_from(raw)[0]


def open_rocksdb(path: str, *, read_only: bool) -> Rdict:
    """Open a state store directory with its column families (read-only never creates).

    Raises:
        StateError: another process holds the store.
        StateCorruptedError: RocksDB cannot open it (the message names the path).
    """
    cache = Cache(BLOCK_CACHE_BYTES)
    cfs = {name: _cf_options(cache) for name in COLUMN_FAMILIES}
    access = AccessType.read_only() if read_only else AccessType.read_write()
    try:
        return Rdict(path, _options(cache, create=not read_only), column_families=cfs, access_type=access)
    except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
        if "lock" in str(exc).lower():
            msg = f"state store {path} is in use by another process (RocksDB: {exc}); stop that app first"
            raise StateError(msg, path=path) from exc
        msg = f"state store {path} cannot be opened, it is damaged or not a statefulstream store: {exc}. {_REMEDY}"
        raise StateCorruptedError(msg, path=path) from exc


def read_meta(db: Rdict, path: str) -> tuple[int, str, CommitRecord | None]:
    """Return ``(format_version, signature JSON, last commit)`` of an open store.

    Raises:
        StateCorruptedError: the metadata is missing or unreadable.
    """
    meta = db.get_column_family("meta")
    values: list[bytes | None] = meta.get([_META_VERSION, _META_SIGNATURE, _META_COMMIT])  # type: ignore[assignment]
    version, signature, commit = values
    if version is None or signature is None:
        msg = f"state store {path} has no statefulstream metadata (format version, signature). {_REMEDY}"
        raise StateCorruptedError(msg, path=path)
    try:
        record = None if commit is None else CommitRecord.from_dict(json.loads(commit))
        return int(version), signature.decode(), record
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"state store {path}: the last commit record cannot be read ({exc}). {_REMEDY}"
        raise StateCorruptedError(msg, path=path) from exc


def check_meta(path: str, version: int, stored: str, wanted: str) -> None:
    """Raise ``IncompatibleStateError`` when format version or signature differ from this app's."""
    if version != CHECKPOINT_FORMAT_VERSION:
        msg = (f"state store {path} has checkpoint format version {version}; this statefulstream reads version "
               f"{CHECKPOINT_FORMAT_VERSION}. Run the statefulstream version that wrote it, or start with a new "
               "checkpoint_dir.")
        raise IncompatibleStateError(msg, path=path)
    if stored != wanted:
        msg = (f"state store {path} was written by an operator with signature {stored}, but this app's operator "
               f"has signature {wanted}. Changing the key, timeout kind or output mode makes old state "
               "meaningless: revert that change, or start the changed app with a new checkpoint_dir.")
        raise IncompatibleStateError(msg, path=path)


class RocksDBStateStore(StateStore):
    """The durable ``StateStore``: RocksDB via rocksdict, msgpack values, a bounded LRU cache.

    Args:
        path: the store directory (``<checkpoint_dir>/state``); created by the first commit.
        cache_keys: committed rows kept in memory (encoded, so every read returns a
            fresh object). Memory is bounded by this, not by the number of keys.
        codec: encodes values and keys (default ``codec.DEFAULT_CODEC``).
        read_only: for inspection: take no lock (a running app may hold it) and
            refuse ``commit``. See :func:`inspect_store`.

    The contract is ``StateStore``'s. Beyond it: ``snapshot(dest)`` makes a
    consistent copy; ``open`` writes nothing (see the module docstring).
    Not thread-safe: one executor thread uses it.
    """

    def __init__(self, path: str, cache_keys: int = DEFAULT_CACHE_KEYS, *, codec: Codec = DEFAULT_CODEC,
                 read_only: bool = False) -> None:
        self.path = os.path.abspath(path)
        self.read_only = read_only
        self._cache_keys = max(0, int(cache_keys))
        self._codec = codec
        self._db: Rdict | None = None
        self._writable = False
        self._new = False
        self._signature = ""
        self._lock_fd: int | None = None
        self._cf: dict[str, Rdict] = {}
        self._handles: dict[str, Any] = {}
        self._cache: collections.OrderedDict[bytes, bytes | None] = collections.OrderedDict()
        self._staged: dict[bytes, bytes | None] = {}
        self._sync = WriteOptions()
        self._sync.sync = True

    @property
    def signature(self) -> dict[str, Any]:
        """The operator signature given to ``open`` (as stored: JSON data)."""
        return dict(json.loads(self._signature)) if self._signature else {}

    # --- lifecycle

    def open(self, signature: Mapping[str, Any]) -> CommitRecord | None:
        """Open read-only, check format version and signature, return the last commit.

        A missing or empty directory is a new store: nothing is created until the
        first commit, and ``None`` is returned.

        Raises:
            IncompatibleStateError: another format version or operator signature.
            StateCorruptedError: RocksDB or the metadata cannot be read.
            StateError: another process has the store open.
        """
        self.close()
        self._signature = normalize_signature(signature)
        if not os.path.isdir(self.path) or not os.listdir(self.path):
            self._new = True
            return None
        if not self.read_only:
            self._lock()
        try:
            self._attach(open_rocksdb(self.path, read_only=True))
            version, stored, last = read_meta(self._db, self.path)  # type: ignore[arg-type]
            check_meta(self.path, version, stored, self._signature)
        except BaseException:
            self.close()
            raise
        logger.info("state store %r opened at batch %s", self.path, None if last is None else last.batch_id)
        return last

    def close(self) -> None:
        """Release RocksDB and the directory lock; staged changes are dropped. Idempotent."""
        self._detach()
        self._cache.clear()
        self._staged.clear()
        self._new = False
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            msg = f"state store {self.path} is in use by another process; stop that app first"
            raise StateError(msg, path=self.path) from exc
        self._lock_fd = fd

    def _attach(self, db: Rdict) -> None:
        self._db = db
        self._cf = {name: db.get_column_family(name) for name in COLUMN_FAMILIES}
        self._handles = {name: db.get_column_family_handle(name) for name in COLUMN_FAMILIES}

    def _detach(self) -> None:
        db, self._db = self._db, None
        # Column-family objects keep RocksDB alive: drop them before closing.
        self._cf, self._handles = {}, {}
        self._writable = False
        if db is not None:
            db.close()

    def _ensure_writable(self) -> None:
        if self._writable:
            return
        if self.read_only:
            msg = f"state store {self.path} was opened read-only (for inspection); it cannot commit"
            raise StateError(msg, path=self.path)
        self._detach()
        os.makedirs(self.path, exist_ok=True)
        self._lock()
        self._attach(open_rocksdb(self.path, read_only=False))
        self._writable = True

    # --- reads

    def _committed(self, kbs: Sequence[bytes]) -> list[bytes | None]:
        """Return committed row bytes of encoded keys: cache first, one multi-get for the misses."""
        cache = self._cache
        out: list[Any] = [cache.get(kb, _MISSING) for kb in kbs]
        missing = [i for i, raw in enumerate(out) if raw is _MISSING]
        if missing:
            fetched: list[bytes | None] = (
                self._cf["state"].get([kbs[i] for i in missing]) if self._db is not None  # type: ignore[assignment]
                else [None] * len(missing))
            for i, raw in zip(missing, fetched, strict=True):
                out[i] = raw
        if self._cache_keys:
            for kb, raw in zip(kbs, out, strict=True):
                cache[kb] = raw
                cache.move_to_end(kb)
            while len(cache) > self._cache_keys:
                cache.popitem(last=False)
        return out

    def _decode(self, raw: bytes) -> StateRow:
        return StateRow(self._codec.decode(raw[_TIMEOUT.size:]), _TIMEOUT.unpack_from(raw)[0])

    def get_many(self, keys: Sequence[Hashable]) -> list[StateRow | None]:
        """Return each key's row, staged changes first, then cache, then RocksDB."""
        encode_key = self._codec.encode_key
        kbs = [encode_key(k) for k in keys]
        staged = self._staged
        if staged:
            raws: list[Any] = [staged.get(kb, _MISSING) for kb in kbs]
            missing = [i for i, raw in enumerate(raws) if raw is _MISSING]
            for i, raw in zip(missing, self._committed([kbs[i] for i in missing]), strict=True):
                raws[i] = raw
        else:
            raws = self._committed(kbs)
        decode = self._decode
        return [None if raw is None else decode(raw) for raw in raws]

    def expired(self, threshold_ms: int) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows with a timeout below ``threshold_ms`` in ``(deadline, key bytes)`` order.

        Reads only the timer index from its start up to the threshold, plus one
        multi-get per chunk of timers: O(expired), not O(state).

        Raises:
            StateCorruptedError: a timer points at a row that is not there.
        """
        if self._db is None:
            return
        bound = deadline_prefix(min(threshold_ms, (1 << 63) - 1))
        opts = ReadOptions()
        opts.set_iterate_upper_bound(bound)
        it = self._cf["timers"].iter(opts)
        it.seek_to_first()
        decode_key = self._codec.decode_key
        while it.valid():
            chunk: list[tuple[int, bytes]] = []
            while it.valid() and len(chunk) < _EXPIRED_CHUNK:
                chunk.append(split_timer_key(it.key()))
                it.next()
            for (deadline, kb), raw in zip(chunk, self._committed([kb for _, kb in chunk]), strict=True):
                if raw is None or _row_timeout(raw) != deadline:
                    msg = (f"state store {self.path}: the timer index has a timer at {deadline} for key "
                           f"{decode_key(kb)!r} that its state row does not have. {_REMEDY}")
                    raise StateCorruptedError(msg, path=self.path)
                yield decode_key(kb), self._decode(raw)

    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield every committed row in key-bytes order (inspection, tests)."""
        if self._db is None:
            return
        decode_key = self._codec.decode_key
        for kb, raw in self._cf["state"].items():
            yield decode_key(kb), self._decode(raw)  # type: ignore[arg-type]  # raw mode: always bytes

    def approx_size(self) -> tuple[int, int]:
        """Return RocksDB's estimate of ``(keys, bytes)`` of the state and timer families."""
        if self._db is None:
            return 0, 0
        state, timers = self._cf["state"], self._cf["timers"]
        keys = state.property_int_value("rocksdb.estimate-num-keys") or 0
        size = sum((cf.property_int_value("rocksdb.total-sst-files-size") or 0)
                   + (cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0) for cf in (state, timers))
        return keys, size

    def approx_timers(self) -> int:
        """Return RocksDB's estimate of the entries in the timer index."""
        if self._db is None:
            return 0
        return self._cf["timers"].property_int_value("rocksdb.estimate-num-keys") or 0

    def committed_view(self) -> CommittedView | None:
        """Return a snapshot of the committed rows for another thread (``rocksdb_view``); no lock, no cache."""
        # _attach/_detach replace self._cf, never mutate it: this reference stays whole.
        return take_view(self._cf, _META_COMMIT, self._decode, self._codec.decode_key)

    # --- writes

    def put(self, key: Hashable, row: StateRow) -> None:
        """Stage a row; its value is encoded now, so a bad type fails at the call that stored it.

        Raises:
            codec.StateEncodeError: the value or key holds a type the codec cannot store.
        """
        try:
            self._staged[self._codec.encode_key(key)] = _encode_row(self._codec, row)
        except StateEncodeError as exc:
            msg = f"state of key {key!r}: {exc}"
            raise StateEncodeError(msg) from exc

    def delete(self, key: Hashable) -> None:
        """Stage the removal of a key's row and timer."""
        self._staged[self._codec.encode_key(key)] = None

    def abort(self) -> None:
        """Discard staged changes."""
        self._staged.clear()

    def commit(self, record: CommitRecord) -> None:
        """Write staged rows, timer moves and ``record`` as one synced RocksDB write batch.

        Raises:
            StateError: RocksDB refused the write (disk full, I/O error); nothing of the
                batch is applied and the staged changes are kept for ``abort``.
        """
        self._ensure_writable()
        h_state, h_timers, h_meta = self._handles["state"], self._handles["timers"], self._handles["meta"]
        staged = self._staged
        batch = WriteBatch(raw_mode=True)
        if staged:
            put, delete, unpack = batch.put, batch.delete, _TIMEOUT.unpack_from
            for (kb, new), old in zip(staged.items(), self._committed(list(staged)), strict=True):
                if new is None:
                    delete(kb, h_state)
                    new_t = NO_TIMEOUT_MS
                else:
                    put(kb, new, h_state)
                    new_t = unpack(new)[0]
                old_t = NO_TIMEOUT_MS if old is None else unpack(old)[0]
                if old_t != new_t:  # move the timer: (old deadline, key) out, (new deadline, key) in
                    if old_t != NO_TIMEOUT_MS:
                        delete(timer_key(old_t, kb), h_timers)
                    if new_t != NO_TIMEOUT_MS:
                        put(timer_key(new_t, kb), b"", h_timers)
        if self._new:
            batch.put(_META_VERSION, str(CHECKPOINT_FORMAT_VERSION).encode(), h_meta)
            batch.put(_META_SIGNATURE, self._signature.encode(), h_meta)
        batch.put(_META_COMMIT, json.dumps(record.to_dict(), sort_keys=True).encode(), h_meta)
        try:
            self._db.write(batch, self._sync)  # type: ignore[union-attr]
        except Exception as exc:
            msg = f"state store {self.path}: writing batch {record.batch_id} failed: {exc}"
            raise StateError(msg, path=self.path) from exc
        self._new = False
        if self._cache_keys:
            cache = self._cache
            for kb, new in staged.items():
                if kb in cache:
                    cache[kb] = new
        staged.clear()

    # --- snapshots

    def snapshot(self, dest: str) -> None:
        """Write a consistent copy of the committed state to ``dest`` (a RocksDB checkpoint).

        ``dest`` must not exist. Files are hard-linked where possible, so this is
        cheap. Staged, uncommitted changes are not in the copy.

        Raises:
            StateError: ``dest`` exists, or nothing has been committed yet.
        """
        if self._db is None:
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
        _, signature, _ = read_meta(db, path)
    finally:
        db.close()
    store = RocksDBStateStore(path, cache_keys=0, codec=codec, read_only=True)
    return store, store.open(json.loads(signature))


def store_in_use(path: str) -> bool:
    """Return whether an open ``RocksDBStateStore`` (of any process) holds the directory's lock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the lock taken to test
    return False


def create_rocksdb_checkpoint(db: Rdict, dest: str) -> None:
    """Create a RocksDB checkpoint of an open store at ``dest`` (which must not exist).

    Raises:
        StateError: ``dest`` exists or RocksDB cannot create the checkpoint.
    """
    if os.path.exists(dest):
        msg = f"snapshot destination {dest} already exists; give a new path"
        raise StateError(msg, path=dest)
    try:
        Checkpoint(db).create_checkpoint(dest)
    except Exception as exc:
        msg = f"cannot create a RocksDB checkpoint at {dest}: {exc}"
        raise StateError(msg, path=dest) from exc
