"""A test kit for stateful handlers: no servers, a hand-moved clock, batch by batch.

>>> from statefulstream import App, GroupStateTimeout
>>> from statefulstream.testing import StreamTester
>>> app = App("alerts")
>>> @app.flat_map_groups_with_state(key="device", timeout=GroupStateTimeout.PROCESSING_TIME)
... def silence(device, events, state):
...     if state.has_timed_out:
...         state.remove()
...         yield {"device": device, "alert": "silent"}
...         return
...     state.update(len(events))
...     state.set_timeout_duration("1 minute")
>>> t = StreamTester(app)
>>> t.run_batch([{"device": "d1"}], processing_time_ms=1_000)
[]
>>> t.state("d1"), t.timeout_ms("d1")
(1, 61000)
>>> t.run_batch([], processing_time_ms=61_001)
[{'device': 'd1', 'alert': 'silent'}]
>>> t.state("d1") is None
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable
from typing import Any

from statefulstream.app import App
from statefulstream.checkpoint.plan_log import MemoryPlanLog
from statefulstream.errors import ConfigError
from statefulstream.executor import Executor
from statefulstream.memory_sink import MemorySink
from statefulstream.observe.progress import BatchProgress
from statefulstream.options import GroupStateTimeout
from statefulstream.records import NO_TIMEOUT_MS, NO_WATERMARK_MS
from statefulstream.sources.memory import CRASH, MemorySource, SimulatedCrashError
from statefulstream.state.group_state import GroupState
from statefulstream.state.memory import MemoryStateStore
from statefulstream.state.store import StateRow

ListSink = MemorySink
"""A sink that keeps rows in a list (``.rows``); the same class as ``statefulstream.sinks.MemorySink``."""

__all__ = ["CRASH", "FakeClock", "ListSink", "MemorySource", "SimulatedCrashError", "StreamTester", "make_group_state"]


class FakeClock:
    """A processing-time clock moved by hand (epoch ms).

    >>> clock = FakeClock(1_000); clock.advance("2 seconds"); clock()
    3000
    """

    __test__ = False

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def set(self, ms: int) -> None:
        """Set the time."""
        self.now_ms = ms

    def advance(self, duration: int | str) -> None:
        """Move the time forward by ms (a clock value, like Spark's ``ManualClock``) or a string like ``"1 minute"``."""
        from statefulstream.durations import ms_or_duration

        self.now_ms += ms_or_duration(duration, name="advance")


def make_group_state(value: Any = None, *, timeout: GroupStateTimeout | str | None = None,
                     batch_processing_time_ms: int = 0, watermark_ms: int | None = None,
                     has_timed_out: bool = False) -> GroupState[Any]:
    """Build a ``GroupState`` exactly as the executor does, for unit tests of handlers.

    Args:
        value: the stored state, or ``None`` for a group without state.
        timeout: the operator's timeout kind.
        batch_processing_time_ms: the batch timestamp.
        watermark_ms: the current watermark, or ``None`` for an operator without one.
        has_timed_out: build the state of a timeout call.
    """
    return GroupState(value, value is not None, timeout=GroupStateTimeout.parse(timeout),
                      batch_processing_time_ms=batch_processing_time_ms,
                      watermark_ms=watermark_ms if watermark_ms is not None else NO_WATERMARK_MS,
                      watermark_present=watermark_ms is not None, has_timed_out=has_timed_out)


class StreamTester:
    """Runs an app's stateful operator over scripted batches, in memory.

    The app's source, sinks and checkpoint are replaced by a ``MemorySource``,
    list sinks and a memory store; the app itself is not changed. Each
    ``run_batch`` is one micro-batch with the exact semantics of a real run.

    Args:
        app: an app with a stateful operator (its source may be unset).
        start_ms: the initial processing time.
    """

    __test__ = False

    def __init__(self, app: App, *, start_ms: int = 0) -> None:
        if app.operator is None:
            raise ConfigError(f"app {app.name!r} has no stateful operator to test")
        self.clock = FakeClock(start_ms)
        self.source = MemorySource()
        self.output = MemorySink()
        self.state_changes = MemorySink()
        self.dead_letters = MemorySink()
        self.store = MemoryStateStore()
        operator = dataclasses.replace(app.operator, sinks=[self.output], state_sinks=[self.state_changes])
        self._executor = Executor(app_name=app.name, source=self.source, operator=operator, steps=app.steps,
                                  store=self.store, plan_log=MemoryPlanLog(), dead_letters=self.dead_letters,
                                  clock=self.clock, where="<StreamTester>")
        self._executor.start()

    def run_batch(self, records: Iterable[Any] = (), *, processing_time_ms: int | None = None,
                  watermark_ms: int | None = None) -> list[Any]:
        """Run one batch with ``records`` and return the rows it output.

        Args:
            records: the batch's input (may be empty: a no-data batch, in
                which timeouts can fire).
            processing_time_ms: set the clock first (the batch timestamp).
            watermark_ms: force this batch's eviction watermark (otherwise it
                follows from earlier event times, as in a real run).
        """
        if processing_time_ms is not None:
            self.clock.set(processing_time_ms)
        self.source.add(records)
        plan = self._executor.plan(watermark_ms=watermark_ms)
        batch_id = plan.batch_id
        self._executor.run_batch(plan)
        return list(self.output.batches.get(batch_id, []))

    @property
    def outputs(self) -> list[Any]:
        """Every row output so far, in batch order."""
        return self.output.rows

    @property
    def progress(self) -> BatchProgress | None:
        """The report of the last batch."""
        return self._executor.last_progress

    @property
    def watermark_ms(self) -> int:
        """The watermark the next batch will run with."""
        return self._executor.watermark_ms

    def _row(self, key: Hashable) -> StateRow | None:
        return dict(self.store.items()).get(key)

    def state(self, key: Hashable) -> Any:
        """The committed state of ``key``, or ``None``."""
        row = self._row(key)
        return row.value if row is not None else None

    def timeout_ms(self, key: Hashable) -> int:
        """The committed timeout deadline of ``key``, or ``NO_TIMEOUT_MS``."""
        row = self._row(key)
        return row.timeout_ms if row is not None else NO_TIMEOUT_MS

    def states(self) -> dict[Hashable, Any]:
        """Every key's committed state (state-less timeout rows excluded)."""
        return {k: r.value for k, r in self.store.items() if r.value is not None}

