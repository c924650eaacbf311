"""Sink I/O for the executor: open and write every sink with backpressure, count rows and retries.

A sink that raises ``SinkUnavailableError`` holds the stream: the write is
retried per the app's ``sink_retry`` policy (nothing is committed or read meanwhile) until it
succeeds or the time is up, and then the app stops with ``SinkError``. Rows
are never dropped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from statefulstream.errors import SinkError, SinkUnavailableError
from statefulstream.records import DeadLetter
from statefulstream.retry import RetryPolicy
from statefulstream.sink import Sink, SinkContext

logger = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
"""The name the dead-letter sink has in figures."""

_LOGGED_DEAD_LETTERS = 5
"""Dead letters logged one by one per batch; the rest are counted in one line."""


DEFAULT_SINK_RETRY = RetryPolicy(max_attempts=None, max_elapsed="5 minutes", initial_backoff="500 ms",
                                 max_backoff="30 seconds", max_retry_after="5 minutes")
"""A failing sink holds the stream up to 5 minutes, waiting 0.5 s doubling to 30 s between tries."""


class SinkWriter:
    """Writes one batch's outputs, state changes and dead letters to their sinks.

    Args:
        app_name: for logs and sink contexts.
        sinks: the operator's output sinks.
        state_sinks: sinks of ``StateChange`` rows.
        dead_letters: where dead letters go (rows of ``DeadLetter.to_row``).
        retry: the backpressure policy.
        sleep: how to wait between retries (tests pass a no-op).

    Attributes:
        dead: the batch's dead letters so far (sources, steps and sinks add to it).
        rows: rows written per sink name in the current batch.
        retries: retried requests per sink name in the current batch.
        writing: the sink being written, while a write runs (for failure reports).
    """

    def __init__(self, *, app_name: str, sinks: Sequence[Sink], state_sinks: Sequence[Sink], dead_letters: Sink,
                 retry: RetryPolicy = DEFAULT_SINK_RETRY, sleep: Callable[[float], None] = time.sleep) -> None:
        self.app_name = app_name
        self.sinks, self.state_sinks, self.dead_letter_sink = list(sinks), list(state_sinks), dead_letters
        self.retry = retry
        self._sleep = sleep
        self._all = [*self.sinks, *self.state_sinks, dead_letters]
        # Sinks are named in figures by their name; the dead-letter sink by its role.
        self._names = {id(s): getattr(s, "name", type(s).__name__) for s in self._all[:-1]}
        self._names[id(dead_letters)] = DEAD_LETTERS
        self.dead: list[DeadLetter] = []
        self.rows: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.writing: str | None = None

    @property
    def names(self) -> list[str]:
        """Names of the sinks in figures, without repeats."""
        return list(dict.fromkeys(self._names.values()))

    def open(self) -> None:
        """Open every sink, holding the stream while one cannot open yet (e.g. its cluster is down)."""
        for sink in self._all:
            name = self._names[id(sink)]
            context = SinkContext(app_name=self.app_name, dead_letter=self.dead.append,
                                  on_retry=partial(self._count_retry, name))
            self._hold(name, "opening", partial(sink.open, context))

    def close(self) -> list[Callable[[], None]]:
        """Return the sinks' closers (the executor runs them with the rest, each guarded)."""
        return [s.close for s in self._all]

    def new_batch(self) -> None:
        """Forget the previous batch's dead letters and figures."""
        self.dead.clear()
        self.rows.clear()
        self.retries.clear()
        self.writing = None

    def emit(self, batch_id: int, outputs: list[Any], changes: list[Any]) -> None:
        """Write outputs, state changes, then dead letters (which the other sinks may have added to)."""
        if outputs:
            for sink in self.sinks:
                self._write(sink, batch_id, outputs)
        if changes:
            for sink in self.state_sinks:
                self._write(sink, batch_id, changes)
        if self.dead:
            self._log_dead_letters(batch_id)
            self._write(self.dead_letter_sink, batch_id, [dl.to_row(batch_id) for dl in self.dead])

    def _log_dead_letters(self, batch_id: int) -> None:
        for dl in self.dead[:_LOGGED_DEAD_LETTERS]:
            logger.warning("app %r batch %d: dead letter (%s) %s at %s", self.app_name, batch_id, dl.error,
                           dl.reason, dict(dl.position))
        if len(self.dead) > _LOGGED_DEAD_LETTERS:
            logger.warning("app %r batch %d: %d more dead letters", self.app_name, batch_id,
                           len(self.dead) - _LOGGED_DEAD_LETTERS)

    def _count_retry(self, sink: str) -> None:
        self.retries[sink] += 1

    def _write(self, sink: Sink, batch_id: int, rows: list[Any]) -> None:
        """Write one batch to a sink with backpressure; never drop rows."""
        name = self._names[id(sink)]
        self.writing = name
        self._hold(name, f"writing batch {batch_id}", partial(sink.write, batch_id, rows))
        self.writing = None
        self.rows[name] += len(rows)

    def _hold(self, name: str, what: str, call: Callable[[], None]) -> None:
        """Run ``call``, retrying ``SinkUnavailableError`` per ``retry`` (the stream waits meanwhile).

        Raises:
            SinkError: the sink stayed unavailable past the policy's limit.
        """
        def on_retry(exc: BaseException, attempt: int, wait_s: float) -> None:
            self.retries[name] += 1
            logger.warning("app %r: sink %r unavailable while %s (%s); holding the stream, retry %d in %.3f s",
                           self.app_name, name, what, exc, attempt, wait_s)

        try:
            self.retry.call(call, retry_on=SinkUnavailableError, on_retry=on_retry, sleep=self._sleep)
        except SinkUnavailableError as exc:
            msg = (f"sink {name!r} stayed unavailable {self.retry.limit_text()} while {what}: {exc}. Nothing "
                   f"was committed and nothing was dropped; fix the sink and restart, and the batch is written again")
            raise SinkError(msg) from exc
