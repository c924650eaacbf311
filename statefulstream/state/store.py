"""The ``StateStore`` interface: per-key state rows, the timer index, atomic commits.

A store holds, for one stateful operator, a ``StateRow`` per group key, an
ordered timer index of ``(deadline, key)`` (``statefulstream.state.timers``),
the exact number of rows, and the record of the last committed batch.
Changes of a batch are staged with ``put``/``delete`` and become visible to
a restarted app only through ``commit``, which writes them together with the
batch's ``CommitRecord`` in one atomic step.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from statefulstream.state.kv import KVSnapshot, StagedKV

from statefulstream.records import NO_TIMEOUT_MS

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the on-disk checkpoint layout; a different version refuses to open."""


class StateRow(NamedTuple):
    """One group's stored state.

    A named tuple: a store builds one per row read, and a tuple is the cheapest
    object to build (``tuple.__new__(StateRow, (value, timeout_ms))`` in bulk).

    Attributes:
        value: the state value, or ``None`` for a state-less row that only
            carries a timeout (``remove()`` plus a timeout, SEMANTICS.md A.3).
        timeout_ms: the deadline (epoch ms) or ``NO_TIMEOUT_MS``.
    """

    value: Any
    timeout_ms: int = NO_TIMEOUT_MS


@dataclasses.dataclass(frozen=True)
class CommitRecord:
    """What "batch N committed" records, written atomically with N's state changes.

    Attributes:
        batch_id: the committed batch.
        offsets: the source positions after the batch (where batch N+1 starts).
        batch_ts_ms: the batch's processing timestamp.
        watermark_ms: the eviction watermark the batch ran with.
        next_watermark_ms: the watermark batch N+1 runs with (monotonic).
    """

    batch_id: int
    offsets: Mapping[str, int]
    batch_ts_ms: int
    watermark_ms: int
    next_watermark_ms: int

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (for msgpack/JSON)."""
        return {"batch_id": self.batch_id, "offsets": dict(self.offsets), "batch_ts_ms": self.batch_ts_ms,
                "watermark_ms": self.watermark_ms, "next_watermark_ms": self.next_watermark_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CommitRecord:
        """Build from ``to_dict`` output."""
        return cls(int(data["batch_id"]), dict(data["offsets"]), int(data["batch_ts_ms"]),
                   int(data["watermark_ms"]), int(data["next_watermark_ms"]))


class CommittedView(ABC):
    """A read-only view of the committed state as of one batch, usable from any thread.

    For readers beside the batch loop (HTTP state queries): building and
    reading a view takes no lock of the loop and never sees a batch's staged
    changes. Keys given to :meth:`get` are the URL forms' types: ``str``,
    ``int``, ``float``, ``bool``, ``None`` and tuples of them.

    Attributes:
        batch_id: the batch whose commit the view shows, or ``None`` when
            nothing is committed yet.
    """

    batch_id: int | None = None

    @abstractmethod
    def get(self, key: Hashable) -> StateRow | None:
        """Return the committed row of ``key``, or ``None``."""

    @abstractmethod
    def scan(self, prefix: str | None, limit: int) -> list[tuple[Hashable, StateRow]]:
        """Return at most ``limit`` rows in store order: of ``str`` keys starting with ``prefix``, or all."""


class StateStore(ABC):
    """Per-key state with an ordered timer index and atomic per-batch commits.

    Call order per batch: ``get_many`` for the keys with data, ``expired`` for
    the timers below the threshold, ``put``/``delete`` as handlers finish,
    then exactly one of ``commit`` or ``abort``.

    Contract:

    * Reads see staged changes of the current batch; ``expired`` lists only
      committed timers, in ``(deadline, key)`` order, and costs O(expired),
      never a scan of all state.
    * ``commit(record)`` applies every staged change, the timer index changes
      and ``record`` atomically and durably (for persistent stores: a synced
      write), so after a crash either all of the batch is there or none.
    * ``abort`` discards staged changes; the store is as after the last commit.
    * ``num_rows`` and ``num_timers`` are exact and move with ``commit`` (never estimates).
    * ``open`` returns the last ``CommitRecord`` (``None`` for a new store) and
      raises ``IncompatibleStateError`` when ``signature`` differs from the one
      stored, ``StateCorruptedError`` when the store cannot be read.
    * ``close`` is idempotent.
    """

    @abstractmethod
    def open(self, signature: Mapping[str, Any]) -> CommitRecord | None:
        """Open (creating if new), check the operator signature, return the last commit."""

    @abstractmethod
    def get_many(self, keys: Sequence[Hashable]) -> list[StateRow | None]:
        """Return the row of each key (``None`` where absent), staged changes included."""

    @abstractmethod
    def put(self, key: Hashable, row: StateRow) -> None:
        """Stage a row (and its timer) for the next commit."""

    def put_value(self, key: Hashable, value: Any, timeout_ms: int) -> None:
        """Stage ``StateRow(value, timeout_ms)``, as :meth:`put` (a store may skip building the row)."""
        self.put(key, StateRow(value, timeout_ms))

    @abstractmethod
    def delete(self, key: Hashable) -> None:
        """Stage the removal of a key's row and timer."""

    @abstractmethod
    def expired(self, threshold_ms: int) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows whose timeout is ``< threshold_ms``, in ``(deadline, key)`` order."""

    def expired_except(self, threshold_ms: int, skip: Collection[Hashable]) -> Iterator[tuple[Hashable, StateRow]]:
        """:meth:`expired`, where rows of keys in ``skip`` may be left out unread.

        For a caller that skips those keys anyway (the executor: keys called
        with data in this batch). By default nothing is left out.
        """
        return self.expired(threshold_ms)

    @abstractmethod
    def commit(self, record: CommitRecord) -> None:
        """Atomically apply staged changes and record the batch as committed."""

    @abstractmethod
    def abort(self) -> None:
        """Discard staged changes."""

    @abstractmethod
    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield every committed row (inspection and tests; not on the hot path)."""

    @abstractmethod
    def num_rows(self) -> int:
        """Return the exact number of committed rows (Spark's ``numRowsTotal``), in O(1).

        A row kept only for its timeout after ``remove()`` counts: it is a row.
        """

    def disk_bytes(self) -> int:
        """Return the bytes the store takes on disk now, or -1 for a store that keeps nothing on disk."""
        return -1

    @abstractmethod
    def num_timers(self) -> int:
        """Return the exact number of committed timers (rows with a timeout), in O(1)."""

    def committed_view(self) -> CommittedView | None:
        """Return a view of the committed state for another thread, or ``None`` (not open, or unsupported)."""
        return None

    def kv(self) -> StagedKV | None:
        """Return the store's ordered key-value namespace (``state.kv``), or ``None`` if it has none.

        Its staged writes are part of the batch: ``commit`` applies them in
        the same atomic write as the rows and the commit record, ``abort``
        drops them. Stateful processors keep their variables and timers there.
        """
        return None

    def committed_kv(self) -> KVSnapshot | None:
        """Return the committed ``kv`` namespace for another thread (like ``committed_view``), or ``None``."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Idempotent."""
