"""``MemoryStateStore``: the in-process store used without a ``checkpoint_dir``.

Nothing survives the process; use it for tests, notebooks and the testing kit.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

from statefulstream.errors import IncompatibleStateError, StateError
from statefulstream.state.store import NO_TIMEOUT_MS, CommitRecord, CommittedView, StateRow, StateStore

_DELETED = object()
_VIEW_ATTEMPTS = 1000  # a commit applies in microseconds to milliseconds; a reader retries, never blocks it


class MemoryStateStore(StateStore):
    """A dict of rows plus a heap of timers with lazy deletion.

    A heap entry ``(deadline, seq, key)`` is live only while the key's
    committed row still has that deadline, so a changed timer costs one push
    and a stale entry is dropped when it reaches the top.
    """

    def __init__(self) -> None:
        self._rows: dict[Hashable, StateRow] = {}
        self._staged: dict[Hashable, Any] = {}
        self._timers: list[tuple[int, int, Hashable]] = []
        self._seq = itertools.count()
        self._last: CommitRecord | None = None
        self._signature: dict[str, Any] | None = None
        self._timer_count = 0
        # Odd while a commit applies: readers on other threads copy the rows only between commits.
        self._generation = 0

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
        """Yield live timers below the threshold, lowest deadline first (insertion order on ties)."""
        heap, rows = self._timers, self._rows
        due: list[tuple[int, int, Hashable]] = []
        live: set[Hashable] = set()  # a timer moved away and back leaves two live-looking entries
        while heap and heap[0][0] < threshold_ms:
            entry = heapq.heappop(heap)
            row = rows.get(entry[2])
            if row is not None and row.timeout_ms == entry[0] and entry[2] not in live:
                live.add(entry[2])
                due.append(entry)
        # Keep live entries until commit: an aborted batch must still see them.
        for entry in due:
            heapq.heappush(heap, entry)
        for deadline, _, key in due:
            row = rows.get(key)
            if row is not None and row.timeout_ms == deadline:
                yield key, row

    def commit(self, record: CommitRecord) -> None:
        """Apply staged rows and push their new timers."""
        rows, heap = self._rows, self._timers
        self._generation += 1
        try:
            for key, row in self._staged.items():
                old = rows.get(key)
                self._timer_count -= old is not None and old.timeout_ms != NO_TIMEOUT_MS
                if row is _DELETED:
                    rows.pop(key, None)
                    continue
                rows[key] = row
                self._timer_count += row.timeout_ms != NO_TIMEOUT_MS
                if row.timeout_ms != NO_TIMEOUT_MS and (old is None or old.timeout_ms != row.timeout_ms):
                    heapq.heappush(heap, (row.timeout_ms, next(self._seq), key))
            self._staged.clear()
            self._last = record
        finally:
            self._generation += 1

    def abort(self) -> None:
        """Forget staged rows."""
        self._staged.clear()

    def items(self) -> Iterator[tuple[Hashable, StateRow]]:
        """Yield committed rows."""
        return iter(list(self._rows.items()))

    def approx_size(self) -> tuple[int, int]:
        """Return the exact key count; bytes unknown."""
        return len(self._rows), -1

    def approx_timers(self) -> int:
        """Return the exact number of rows with a timeout."""
        return self._timer_count

    def committed_view(self) -> CommittedView:
        """Return a copy of the committed rows, taken between two commits (a seqlock: the loop never waits).

        Raises:
            StateError: commits kept overlapping the copy (a reader on a
                starved thread); asking again normally succeeds.
        """
        for _ in range(_VIEW_ATTEMPTS):
            generation = self._generation
            if generation % 2 == 0:
                rows, last = self._rows.copy(), self._last
                if self._generation == generation:
                    return _MemoryView(rows, None if last is None else last.batch_id)
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
