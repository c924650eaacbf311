"""Committed processor state for HTTP state queries: a key's variables by name and its timers.

``/state/{key}`` of a ``transform_with_state`` app answers with a row whose
value is ``{"variables": {name: value, list or dict}, "timers": [ts, ...]}``
(TTL-expired values as of the last batch left out); ``/state?prefix=`` lists
keys the same way. Built on ``StateStore.committed_kv``: a snapshot of the
last committed batch, read without any lock of the batch loop.
"""

from __future__ import annotations

from collections.abc import Hashable

from statefulstream.errors import StateError
from statefulstream.processor import inspect
from statefulstream.state.codec import Codec
from statefulstream.state.kv import KVSnapshot, StagedKV
from statefulstream.state.store import CommittedView, StateRow, StateStore


class ProcessorView(CommittedView):
    """A ``CommittedView`` whose rows are a processor key's variables and timers.

    Args:
        snapshot: the committed kv namespace as of one batch.
    """

    def __init__(self, snapshot: KVSnapshot) -> None:
        self._kv = StagedKV(snapshot.entries)
        self.batch_id = snapshot.batch_id
        self._now_ms = snapshot.batch_ts_ms
        self._codec = Codec()  # its own packer: the store's belongs to the batch thread

    def get(self, key: Hashable) -> StateRow | None:
        """Return ``{"variables", "timers"}`` of ``key`` as a row, or ``None`` when it has neither."""
        try:
            variables = inspect.key_state(self._kv, key, now_ms=self._now_ms, codec=self._codec)
            timers = inspect.timers_of(self._kv, key, codec=self._codec)
        except StateError:
            return None  # a key that cannot be encoded cannot be stored either
        if not timers and all(v in (None, [], {}) for v in variables.values()):
            return None
        return StateRow({"variables": variables, "timers": timers})

    def scan(self, prefix: str | None, limit: int) -> list[tuple[Hashable, StateRow]]:
        """Return at most ``limit`` keys' rows, of ``str`` keys starting with ``prefix`` or all.

        Lists keys by reading every entry (O(state)): for inspection, not for hot paths.
        """
        rows: list[tuple[Hashable, StateRow]] = []
        for key in inspect.keys(self._kv, codec=self._codec):
            if len(rows) >= limit:
                break
            if prefix is None or (isinstance(key, str) and key.startswith(prefix)):
                row = self.get(key)
                if row is not None:
                    rows.append((key, row))
        return rows


def processor_view(store: StateStore) -> CommittedView | None:
    """Return the committed processor state of ``store`` for another thread, or ``None`` (not open)."""
    snapshot = store.committed_kv()
    return None if snapshot is None else ProcessorView(snapshot)
