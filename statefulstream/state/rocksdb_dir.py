"""A RocksDB state store directory: options, open, metadata, lock, atomic creation, size on disk.

A store directory (``<checkpoint_dir>/state``) exists only once it holds a
committed batch. The first commit builds the store in a staging directory
beside it (``state.creating-XXXX``), writes the batch there, closes it and
renames it into place (:func:`publish`). A kill before the rename leaves
only a staging directory, which the next start removes
(:func:`remove_abandoned`): the checkpoint is as if the first run never
happened, and the logged plan of batch 0 is replayed.

Its size is bounded by the options (:func:`open_rocksdb`): the write-ahead
log by ``MAX_WAL_BYTES`` (past it RocksDB flushes the column families that
pin the oldest log, so the small ``meta`` family cannot keep every log
alive), RocksDB's own info logs and manifest by ``LOG_FILE_BYTES`` and
``MANIFEST_BYTES``; SST files of the ``timers`` family that are mostly
tombstones are compacted early.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBRecoveryMode,
    Options,
    Rdict,
)

from statefulstream.errors import IncompatibleStateError, StateCorruptedError, StateError
from statefulstream.state.kv import KV_COLUMN_FAMILY
from statefulstream.state.store import CHECKPOINT_FORMAT_VERSION, CommitRecord

logger = logging.getLogger(__name__)

COLUMN_FAMILIES = ("state", "timers", "meta", KV_COLUMN_FAMILY)
"""Column families of a state store directory."""

BLOCK_CACHE_BYTES = 32 << 20
"""RocksDB block cache of a store (index and filter blocks included), shared by its column families."""

WRITE_BUFFER_BYTES = 16 << 20
"""RocksDB memtable size per column family (``MAX_WAL_BYTES`` usually forces a flush first)."""

TIMERS_WRITE_BUFFER_BYTES = 2 << 20
"""Memtable size of the ``timers`` family: most of what it holds is timers already removed again."""

MEMTABLE_BLOOM_RATIO = 0.02
"""Share of the ``state`` memtable given to its bloom filter (~10 bits per row it can hold)."""

MAX_WAL_BYTES = 8 << 20
"""Write-ahead log kept before RocksDB flushes the memtables that pin it (plus at most one batch)."""

LOG_FILE_BYTES = 1 << 20
"""Size at which RocksDB's info ``LOG`` rolls over; ``KEEP_LOG_FILES`` of them are kept."""

KEEP_LOG_FILES = 2
"""RocksDB info log files kept (every start rolls one)."""

MANIFEST_BYTES = 4 << 20
"""Size at which RocksDB's ``MANIFEST`` rolls over (its default never rolls)."""

FILE_OPENING_THREADS = 4
"""Threads that open a store's files when RocksDB opens it. Its default, 16, costs ~3 ms of CPU per open in
thread starts for the few files a store has (a run opens a new store twice); 4 still opens a large one in parallel."""

STAGING_INFIX = ".creating-"
"""``<store>.creating-XXXX``: where a new store is built before it is renamed into place."""

REMEDY = ("Restore the checkpoint directory from a snapshot (statefulstream checkpoint snapshot), or start "
          "the app with a new checkpoint_dir. The app never starts from scratch on its own.")

_META_VERSION = b"format_version"
_META_SIGNATURE = b"signature"
META_COMMIT = b"commit"
"""The ``meta`` key of the last ``CommitRecord`` (JSON)."""
_META_ROWS = b"num_rows"
_META_TIMERS = b"num_timers"
_META_TIMER_FLOOR = b"timer_floor"


def _cf_options(cache: Cache, name: str) -> Options:
    # Index and filter blocks go in the block cache too, so RocksDB's memory stays bounded as state grows.
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_bloom_filter(10, False)  # point lookups of absent keys (new groups) skip most files
    opts = Options(raw_mode=True)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(TIMERS_WRITE_BUFFER_BYTES if name == "timers" else WRITE_BUFFER_BYTES)
    if name == "state":
        # Looking up a group that has no row (every new key) skips the memtables too, not only the files.
        opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
        opts.set_memtable_whole_key_filtering(True)
    if name in ("timers", KV_COLUMN_FAMILY):
        # Every timer move (a processor's deleted timers and expired values too) leaves a tombstone;
        # a file that is mostly tombstones is compacted away early.
        opts.add_compact_on_deletion_collector_factory(1000, 500, 0.5)
    return opts


def _options(cache: Cache, *, create: bool) -> Options:
    opts = _cf_options(cache, "default")
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    # Commits are synced, so a torn WAL tail can only be a write that never returned: safe to drop.
    opts.set_wal_recovery_mode(DBRecoveryMode.tolerate_corrupted_tail_records())
    opts.set_max_total_wal_size(MAX_WAL_BYTES)
    opts.set_max_log_file_size(LOG_FILE_BYTES)
    opts.set_keep_log_file_num(KEEP_LOG_FILES)
    opts.set_max_manifest_file_size(MANIFEST_BYTES)
    opts.set_max_file_opening_threads(FILE_OPENING_THREADS)
    return opts


def has_column_family(path: str, name: str) -> bool:
    """Whether the RocksDB directory ``path`` has column family ``name`` (unreadable: say yes, opening says why)."""
    try:
        return name in Rdict.list_cf(path)
    except Exception:  # noqa: BLE001 - not a RocksDB directory: opening it reports that, with the remedy
        return True


def open_rocksdb(path: str, *, read_only: bool) -> Rdict:
    """Open a state store directory with its column families (read-only never creates).

    Raises:
        StateError: another process holds the store.
        StateCorruptedError: RocksDB cannot open it (the message names the path).
    """
    cache = Cache(BLOCK_CACHE_BYTES)
    names: tuple[str, ...] = COLUMN_FAMILIES
    if read_only and not has_column_family(path, KV_COLUMN_FAMILY):  # a store from before the kv family
        names = tuple(n for n in names if n != KV_COLUMN_FAMILY)
    cfs = {name: _cf_options(cache, name) for name in names}
    access = AccessType.read_only() if read_only else AccessType.read_write()
    try:
        return Rdict(path, _options(cache, create=not read_only), column_families=cfs, access_type=access)
    except Exception as exc:  # rocksdict raises bare Exception with RocksDB's status text
        if "lock" in str(exc).lower():
            msg = f"state store {path} is in use by another process (RocksDB: {exc}); stop that app first"
            raise StateError(msg, path=path) from exc
        msg = f"state store {path} cannot be opened, it is damaged or not a statefulstream store: {exc}. {REMEDY}"
        raise StateCorruptedError(msg, path=path) from exc


def normalize_signature(signature: Mapping[str, Any]) -> str:
    """Return the canonical JSON text a signature is stored and compared as."""
    return json.dumps(dict(signature), sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class StoreMeta:
    """What the ``meta`` column family holds.

    Attributes:
        version: the checkpoint format version.
        signature: the operator signature (JSON text).
        commit: the last committed batch, or ``None``.
        num_rows: the exact row count, or ``None`` in a store written before it was kept.
        num_timers: the exact timer count, or ``None`` in a store written before it was kept.
        timer_floor_ms: no live timer is below it, or ``None`` when not known.
    """

    version: int
    signature: str
    commit: CommitRecord | None
    num_rows: int | None
    num_timers: int | None
    timer_floor_ms: int | None


def read_meta(db: Rdict, path: str) -> StoreMeta:
    """Return the metadata of an open store.

    Raises:
        StateCorruptedError: the metadata is missing or unreadable.
    """
    meta = db.get_column_family("meta")
    keys: list[Any] = [_META_VERSION, _META_SIGNATURE, META_COMMIT, _META_ROWS, _META_TIMERS, _META_TIMER_FLOOR]
    version, signature, commit, rows, timers, floor = meta.get(keys)  # type: ignore[misc]
    if version is None or signature is None:
        msg = f"state store {path} has no statefulstream metadata (format version, signature). {REMEDY}"
        raise StateCorruptedError(msg, path=path)
    try:
        record = None if commit is None else CommitRecord.from_dict(json.loads(commit))
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"state store {path}: the last commit record cannot be read ({exc}). {REMEDY}"
        raise StateCorruptedError(msg, path=path) from exc
    try:
        return StoreMeta(int(version), signature.decode(), record, None if rows is None else int(rows),
                         None if timers is None else int(timers), None if floor is None else int(floor))
    except ValueError as exc:
        msg = (f"state store {path}: its metadata (version, row or timer count, timer floor) cannot be read "
               f"({exc}). {REMEDY}")
        raise StateCorruptedError(msg, path=path) from exc


def meta_items(*, commit: CommitRecord, num_rows: int, num_timers: int, timer_floor_ms: int,
               signature: str | None = None) -> list[tuple[bytes, bytes]]:
    """Return the ``meta`` writes of a commit (``signature`` given: also the new store's header)."""
    items = [(META_COMMIT, json.dumps(commit.to_dict(), sort_keys=True).encode()),
             (_META_ROWS, str(num_rows).encode()), (_META_TIMERS, str(num_timers).encode()),
             (_META_TIMER_FLOOR, str(timer_floor_ms).encode())]
    if signature is not None:
        items += [(_META_VERSION, str(CHECKPOINT_FORMAT_VERSION).encode()), (_META_SIGNATURE, signature.encode())]
    return items


def check_meta(path: str, meta: StoreMeta, wanted: str) -> None:
    """Raise ``IncompatibleStateError`` when format version or signature differ from this app's."""
    if meta.version != CHECKPOINT_FORMAT_VERSION:
        msg = (f"state store {path} has checkpoint format version {meta.version}; this statefulstream reads "
               f"version {CHECKPOINT_FORMAT_VERSION}. Run the statefulstream version that wrote it, or start with "
               "a new checkpoint_dir.")
        raise IncompatibleStateError(msg, path=path)
    if meta.signature != wanted:
        msg = (f"state store {path} was written by an operator with signature {meta.signature}, but this app's "
               f"operator has signature {wanted}. Changing the key, timeout kind or output mode makes old state "
               "meaningless: revert that change, or start the changed app with a new checkpoint_dir.")
        raise IncompatibleStateError(msg, path=path)


# --- locks


def lock_dir(path: str) -> int:
    """Take the exclusive lock of a store directory; return the descriptor that holds it (close to release).

    The lock belongs to the directory itself, so it stays held across :func:`publish`'s rename.

    Raises:
        StateError: another process holds it.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        msg = f"state store {path} is in use by another process; stop that app first"
        raise StateError(msg, path=path) from exc
    return fd


def store_in_use(path: str) -> bool:
    """Return whether an open ``RocksDBStateStore`` (of any process) holds the directory's lock."""
    try:
        fd = lock_dir(path)
    except StateError:
        return True
    os.close(fd)  # releases the lock taken to test
    return False


# --- creation


def is_new(path: str) -> bool:
    """Return whether ``path`` holds no store yet (missing or empty: nothing was ever committed there)."""
    return not os.path.isdir(path) or not os.listdir(path)


def staging_dir(path: str) -> str:
    """Create and return a new staging directory beside the store ``path`` (the caller locks it)."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=name + STAGING_INFIX, dir=parent)


def remove_abandoned(path: str) -> list[str]:
    """Remove staging directories of the store ``path`` that no live process holds; return them.

    They are left by a process killed during its first commit: nothing in
    them was ever part of the checkpoint.
    """
    parent, name = os.path.split(path)
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    removed = []
    for entry in sorted(entries):
        if not entry.startswith(name + STAGING_INFIX):
            continue
        staging = os.path.join(parent, entry)
        if not os.path.isdir(staging) or store_in_use(staging):
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(staging)
        logger.info("state store %r: removed %r, left by a run killed during its first commit", path, staging)
    return removed


def publish(staging: str, path: str) -> None:
    """Rename a closed, committed staging store to ``path`` and make the rename durable.

    Raises:
        StateError: ``path`` holds a store already (another app created it meanwhile).
    """
    try:
        os.rename(staging, path)  # atomic; replaces an empty directory, never a store
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        msg = (f"state store {path} was created by another app while this one ran its first batch; "
               "two apps cannot share a checkpoint_dir: stop one of them")
        raise StateError(msg, path=path) from exc
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- size and copies


def disk_bytes(path: str) -> int:
    """Return the bytes of the files in a store directory (what ``du`` counts, without blocks)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # RocksDB deleted an obsolete file meanwhile
            continue
    return total


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
