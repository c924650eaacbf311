"""The ``Sink`` interface: where an operator's output rows go, once per batch.

Implementations live in the ``sinks`` package; the runtime owns this contract.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from statefulstream.records import DeadLetter


@dataclasses.dataclass
class SinkContext:
    """What the runtime gives a sink when it opens it.

    Attributes:
        app_name: the app's name (for client ids, logs).
        dead_letter: call with a ``DeadLetter`` for a row the sink gives up on
            for good (e.g. HTTP 400); it is written with the batch's other dead
            letters and counted, never silently dropped.
        on_retry: call once per retried request, for metrics.
    """

    app_name: str = "app"
    dead_letter: Callable[[DeadLetter], None] = lambda dl: None
    on_retry: Callable[[], None] = lambda: None


class Sink(ABC):
    """Receives each batch's output rows with the batch id.

    Lifecycle: ``open(context)`` once before the first write, ``write`` once
    per batch that has rows (again with the same ``batch_id`` when a batch is
    replayed after a crash), ``close()`` at shutdown.

    Contract:

    * ``write(batch_id, rows)`` must be idempotent per ``batch_id``: writing the
      same batch twice leaves the destination as if written once (upsert by
      primary key, a file named by batch id, dedup keys, transactions).
    * Raise ``SinkUnavailableError`` when the destination is down or throttling;
      the runtime holds the batch (no commit, no further reads) and retries.
      Any other exception stops the app; the batch is replayed on restart.
    * Rows rejected for good go to ``context.dead_letter``, not into a log.
    * ``close`` is idempotent and may not run after a crash.
    """

    name: str = "sink"

    def open(self, context: SinkContext) -> None:  # noqa: B027 - optional hook
        """Connect or prepare."""

    @abstractmethod
    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Write one batch's rows; idempotent per ``batch_id``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources. Idempotent."""


class FirstRows(Sink):
    """Passes only the first ``limit`` rows of the whole run to ``sink`` (the demo's short listing).

    >>> from statefulstream.memory_sink import MemorySink
    >>> inner = MemorySink()
    >>> first = FirstRows(inner, 3)
    >>> first.write(0, [1, 2]); first.write(1, [3, 4]); first.write(2, [5])
    >>> inner.rows
    [1, 2, 3]
    """

    def __init__(self, sink: Sink, limit: int) -> None:
        self.sink = sink
        self.limit = limit
        self.name = sink.name
        self._passed: dict[int, int] = {}  # batch id -> rows passed, so a replayed batch passes the same

    def open(self, context: SinkContext) -> None:
        """Open the wrapped sink."""
        self.sink.open(context)

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Write the rows of this batch that are still within the limit."""
        before = sum(n for b, n in self._passed.items() if b < batch_id)
        shown = list(rows[: max(0, self.limit - before)])
        self._passed[batch_id] = len(shown)
        if shown:
            self.sink.write(batch_id, shown)

    def close(self) -> None:
        """Close the wrapped sink."""
        self.sink.close()
