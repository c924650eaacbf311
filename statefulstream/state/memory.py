"""``MemoryStateStore``: the in-process store used without a ``checkpoint_dir``.

Nothing survives the process; use it for tests, notebooks and the testing kit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from statefulstream.errors import IncompatibleStateError, StateError
from statefulstream.records import NO_TIMEOUT_MS
from statefulstream.state.kv import KVSnapshot, MemoryKV, StagedKV
from statefulstream.state.store import CommitRecord, CommittedView, StateRow, StateStore
from statefulstream.state.timers import HeapTimerIndex

_T = TypeVar("_T")
_DELETED = object()
_VIEW_ATTEMPTS = 1000  # a commit applies in microseconds to milliseconds; a reader retries, never blocks it


class MemoryStateStore(StateStore):
    """A dict of rows plus a ``HeapTimerIndex``; staged changes apply at ``commit``."""

    def __init__(self) -> None:
        self._rows: dict[Hashable, StateRow] = {}
        self._staged: dict[Hashable, Any] = {}
        self._timers = HeapTimerIndex()
        self._last: CommitRecord | None = None
        self._signature: dict[str, Any] | None = None
        # Odd while a commit applies: readers on other threads copy the rows only between commits.
        self._generation = 0
        self._kv_committed = MemoryKV()
        self._kv = StagedKV(self._kv_committed)

    def open(self, signature: Mapping[str, Any]) -> CommitRecord | None:
        """Check the signature against an earlier ``open`` of this instance."""
        if self._signature is not None and self._signature != dict(signature):
            msg = f"state store was opened with operator signature {self._signature}, now {dict(signature)}"
            raise IncompatibleStateError(msg)
        self._signature = dict(signature)
        return self._last

    def get_many(self, keys: Sequence[Hashable]) -> list[StateRow | None]:
        """Return staged or committed rows."""
        rows, staged = self._rows, self._staged
        if not staged:
            return [rows.get(k) for k in keys]
        out: list[StateRow | None] = []
        for k in keys:
            row = staged.get(k, rows.get(k))
            out.append(None if row is _DELETED else row)
        return out

    def put(self, key: Hashable, row: StateRow) -> None:
        """Stage a row."""
        self._staged[key] = row

    def delete(self, key: Hashable) -> None:
        """Stage a removal."""
        self._staged[key] = _DELETED

    def expired(self, threshold_ms: int) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows with a timer below the threshold, lowest deadline first (set order on ties)."""
        rows = self._rows
        for _, key in self._timers.due(threshold_ms):
            yield key, rows[key]

    def commit(self, record: CommitRecord) -> None:
        """Apply staged rows and move their timers."""
        rows, move = self._rows, self._timers.move
        self._generation += 1
        try:
            for key, row in self._staged.items():
                old = rows.get(key)
                old_ms = NO_TIMEOUT_MS if old is None else old.timeout_ms
                if row is _DELETED:
                    rows.pop(key, None)
                    move(key, old_ms, NO_TIMEOUT_MS)
                else:
                    rows[key] = row
                    move(key, old_ms, row.timeout_ms)
            self._staged.clear()
            self._kv_committed.apply(self._kv.staged())
            self._kv.discard()
            self._last = record
        finally:
            self._generation += 1

    def abort(self) -> None:
        """Forget staged rows."""
        self._staged.clear()
        self._kv.discard()

    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows."""
        return iter(list(self._rows.items()))

    def num_rows(self) -> int:
        """Return the number of committed rows."""
        return len(self._rows)

    def kv(self) -> StagedKV:
        """Return the ordered namespace (committed with the rows)."""
        return self._kv

    def num_timers(self) -> int:
        """Return the number of committed rows with a timeout."""
        return len(self._timers)

    def committed_view(self) -> CommittedView:
        """Return a copy of the committed rows, taken between two commits (a seqlock: the loop never waits).

        Raises:
            StateError: commits kept overlapping the copy (a reader on a
                starved thread); asking again normally succeeds.
        """
        rows, last = self._between_commits(self._rows.copy)
        return _MemoryView(rows, None if last is None else last.batch_id)

    def committed_kv(self) -> KVSnapshot:
        """Return a copy of the committed kv namespace, taken between two commits as ``committed_view``.

        Raises:
            StateError: commits kept overlapping the copy; asking again normally succeeds.
        """
        entries, last = self._between_commits(self._kv_committed.entries.copy)
        return KVSnapshot(MemoryKV(entries), None if last is None else last.batch_id,
                          None if last is None else last.batch_ts_ms)

    def _between_commits(self, copy: Callable[[], _T]) -> tuple[_T, CommitRecord | None]:
        """Run ``copy`` while no commit applies (a seqlock: the loop never waits); return it and the last commit."""
        for _ in range(_VIEW_ATTEMPTS):
            generation = self._generation
            if generation % 2 == 0:
                try:
                    copied, last = copy(), self._last
                except RuntimeError:  # a commit resized what was being copied: retry
                    continue
                if self._generation == generation:
                    return copied, last
            time.sleep(0.001)
        raise StateError("the in-memory state kept changing while it was copied for a state query; ask again")


class _MemoryView(CommittedView):
    def __init__(self, rows: dict[Hashable, StateRow], batch_id: int | None) -> None:
        self._rows = rows
        self.batch_id = batch_id

    def get(self, key: Hashable) -> StateRow | None:
        return self._rows.get(key)

    def scan(self, prefix: str | None, limit: int) -> list[tuple[Hashable, StateRow]]:
        matches = (item for item in self._rows.items()
                   if prefix is None or (isinstance(item[0], str) and item[0].startswith(prefix)))
        return list(itertools.islice(matches, limit))
