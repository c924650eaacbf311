"""A partition's state store whose commit first commits the batch's Kafka transaction.

The executor commits a batch with ``StateStore.commit(record)`` after the
sinks were given their rows. Here that call runs the partition's Kafka
transaction first (outputs, changelog rows and ``kv`` entries, marker, group offsets: see
``task.PartitionTask.commit_transaction``) and only then the local RocksDB
commit. Kafka is therefore never behind the local store: a crash between
the two leaves the local copy one batch behind, and the next owner of the
partition restores it from the changelog.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from typing import Any

from statefulstream.scaleout.changelog import KV_PREFIX
from statefulstream.state.kv import KVSnapshot, StagedKV
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.store import CommitRecord, CommittedView, StateRow, StateStore

BeforeCommit = Callable[[CommitRecord, Mapping[bytes, "bytes | None"]], None]


class TransactionalStore(StateStore):
    """Delegates to a RocksDB store; ``commit`` calls ``before_commit(record, staged rows)`` first.

    Args:
        inner: the partition's RocksDB store.
        before_commit: commits the batch's Kafka transaction; raising leaves
            the local store uncommitted (the executor then aborts it).
    """

    def __init__(self, inner: RocksDBStateStore, before_commit: BeforeCommit) -> None:
        self.inner = inner
        self.before_commit = before_commit

    def open(self, signature: Mapping[str, Any]) -> CommitRecord | None:
        """Open the local store."""
        return self.inner.open(signature)

    def get_many(self, keys: Sequence[Hashable]) -> list[StateRow | None]:
        """Rows of ``keys``, staged changes included."""
        return self.inner.get_many(keys)

    def put(self, key: Hashable, row: StateRow) -> None:
        """Stage a row."""
        self.inner.put(key, row)

    def put_value(self, key: Hashable, value: Any, timeout_ms: int) -> None:
        """Stage a row from its parts."""
        self.inner.put_value(key, value, timeout_ms)

    def delete(self, key: Hashable) -> None:
        """Stage a removal."""
        self.inner.delete(key)

    def expired(self, threshold_ms: int) -> Iterator[tuple[Hashable, StateRow]]:
        """Committed rows whose timeout is below ``threshold_ms``."""
        return self.inner.expired(threshold_ms)

    def expired_except(self, threshold_ms: int, skip: Collection[Hashable]) -> Iterator[tuple[Hashable, StateRow]]:
        """As ``expired``; rows of keys in ``skip`` may be left out unread."""
        return self.inner.expired_except(threshold_ms, skip)

    def commit(self, record: CommitRecord) -> None:
        """Commit the Kafka transaction (rows and ``kv`` entries), then the local store."""
        changes = dict(self.inner.staged_changes())
        changes.update((KV_PREFIX + key, value) for key, value in self.inner.kv().staged())
        self.before_commit(record, changes)
        self.inner.commit(record)

    def kv(self) -> StagedKV:
        """The ``kv`` namespace (stateful processors), committed and changelogged with the rows."""
        return self.inner.kv()

    def committed_kv(self) -> KVSnapshot | None:
        """The committed ``kv`` namespace for another thread."""
        return self.inner.committed_kv()

    def abort(self) -> None:
        """Discard staged changes."""
        self.inner.abort()

    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Every committed row."""
        return self.inner.items()

    def num_rows(self) -> int:
        """Committed rows."""
        return self.inner.num_rows()

    def disk_bytes(self) -> int:
        """Bytes on disk."""
        return self.inner.disk_bytes()

    def num_timers(self) -> int:
        """Committed timers."""
        return self.inner.num_timers()

    def committed_view(self) -> CommittedView | None:
        """A committed view for another thread."""
        return self.inner.committed_view()

    def close(self) -> None:
        """Close the local store."""
        self.inner.close()
