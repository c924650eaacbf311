"""A processor's timers: any number per key, two index entries each (by time, by key).

``T <ts> <key>`` lets the batch find the due timers with one range scan from
the start (O(due)); ``K <key> <ts>`` lets a handler list or test its key's
timers with one prefix scan. Both are written and deleted together, in the
batch's staged writes, so they commit atomically with the state: a timer
fires once, and a batch replayed after a crash fires the same timers again.
"""

from __future__ import annotations

import logging

from statefulstream.processor import layout
from statefulstream.processor.variables import ProcessorStats
from statefulstream.state.kv import StagedKV

logger = logging.getLogger(__name__)


class Timers:
    """Register, delete, list and find due timers in a ``StagedKV``."""

    def __init__(self, kv: StagedKV, stats: ProcessorStats) -> None:
        self.kv = kv
        self.stats = stats

    def register(self, key_bytes: bytes, ts: int) -> None:
        """Add a timer; registering an existing one only logs (as Spark)."""
        by_key = layout.timer_by_key(key_bytes, ts)
        if self.kv.get(by_key) is not None:
            logger.warning("timer at %d is already registered for this key; ignored", ts)
            return
        self.kv.put(by_key, b"")
        self.kv.put(layout.timer_by_time(ts, key_bytes), b"")
        self.stats.timers_registered += 1

    def delete(self, key_bytes: bytes, ts: int) -> bool:
        """Remove a timer; return whether it existed (a missing one only logs, as Spark)."""
        by_key = layout.timer_by_key(key_bytes, ts)
        if self.kv.get(by_key) is None:
            logger.debug("no timer at %d for this key; nothing deleted", ts)
            return False
        self.kv.delete(by_key)
        self.kv.delete(layout.timer_by_time(ts, key_bytes))
        return True

    def exists(self, key_bytes: bytes, ts: int) -> bool:
        """Whether the timer is (still) registered."""
        return self.kv.get(layout.timer_by_key(key_bytes, ts)) is not None

    def of_key(self, key_bytes: bytes) -> list[int]:
        """Return the key's timer timestamps, ascending."""
        prefix = layout.TIMERS_BY_KEY + layout.length_prefixed(key_bytes)
        return [layout.ts_from(k, len(prefix)) for k, _ in self.kv.scan(prefix)]

    def due(self, threshold_ms: int) -> list[tuple[int, bytes]]:
        """Return ``(ts, key bytes)`` of the timers with ``ts <= threshold_ms``, by ``(ts, key bytes)``."""
        hi = layout.TIMERS_BY_TIME + layout.ts_bytes(threshold_ms + 1)
        start = len(layout.TIMERS_BY_TIME)
        return [(layout.ts_from(k, start), k[start + layout.TS_BYTES:])
                for k, _ in self.kv.range(layout.TIMERS_BY_TIME, hi)]
