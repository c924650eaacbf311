"""``Health``: whether an app's loop is alive and ready, for ``/health`` and ``/ready``.

``App.run`` drives it: :meth:`Health.starting` before recovery,
:meth:`Health.ready` once recovery (and any replay) is done,
:meth:`Health.stopped` when the loop ends. The loop's ``Heartbeat``
(moved by every plan and commit) tells a live loop
from a stuck one: the default trigger plans at least every 0.25 s and an
interval trigger once per interval, so a heartbeat older than the timeout
means a batch is stuck (a sink holding the stream back, a hung handler).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from statefulstream.observe.progress import BatchFailure
from statefulstream.triggers import Trigger, TriggerKind

DEFAULT_HEALTH_TIMEOUT_S = 60.0
"""Least time without a plan or commit before ``/health`` fails."""

Status = tuple[bool, dict[str, Any]]
"""``(ok, JSON body)`` of a probe."""


class Heartbeat:
    """The loop's sign of life, moved by every plan and every commit.

    Attributes:
        last_active_s: ``monotonic()`` of the last plan or commit, ``None`` before the first.
        last_batch_id: the last committed batch, ``None`` before the first.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.last_active_s: float | None = None
        self.last_batch_id: int | None = None

    def beat(self, *, committed_batch_id: int | None = None) -> None:
        """Record activity (a plan, or the commit of ``committed_batch_id``)."""
        self.last_active_s = self._monotonic()
        if committed_batch_id is not None:
            self.last_batch_id = committed_batch_id


class Health:
    """Liveness and readiness of one app.

    Args:
        timeout_s: how long the loop may go without a plan or a commit before
            it counts as stuck; ``None`` for ``max(60 s, 3 x trigger interval)``.
        monotonic: the clock of heartbeats (``time.monotonic``).
    """

    def __init__(self, *, timeout_s: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self._limit_s = DEFAULT_HEALTH_TIMEOUT_S
        self._ready = False
        self._failure: str | None = None

    def starting(self, heartbeat: Heartbeat, trigger: Trigger) -> None:
        """The loop is about to recover and run with ``trigger``, beating ``heartbeat``."""
        interval_s = trigger.interval_ms / 1000 if trigger.kind is TriggerKind.PROCESSING_TIME else 0.0
        with self._lock:
            self._heartbeat = heartbeat
            self._limit_s = self.timeout_s if self.timeout_s is not None else max(
                DEFAULT_HEALTH_TIMEOUT_S, 3 * interval_s)
            self._ready = False
            self._failure = None

    def ready(self) -> None:
        """Recovery is done; batches run from now on."""
        with self._lock:
            self._ready = True

    def stopped(self) -> None:
        """The loop has ended (finished, stopped, or failed)."""
        with self._lock:
            self._heartbeat = None
            self._ready = False

    def on_failure(self, failure: BatchFailure) -> None:
        """Remember why the loop is about to end (a ``FailureListener``)."""
        with self._lock:
            self._failure = (f"batch {failure.batch_id} failed in phase {failure.phase!r}: "
                             f"{type(failure.error).__name__}: {failure.error}")

    def liveness(self) -> Status:
        """``/health``: ok while the loop runs and its heartbeat is recent."""
        with self._lock:
            beat, ready, failure, limit = self._heartbeat, self._ready, self._failure, self._limit_s
        if failure is not None:
            return False, {"status": "failed", "reason": failure}
        if beat is None:
            return False, {"status": "stopped", "reason": "the app's loop is not running"}
        body: dict[str, Any] = {"status": "ok" if ready else "starting"}
        if beat.last_batch_id is not None:
            body["last_batch_id"] = beat.last_batch_id
        if ready and beat.last_active_s is not None:
            idle = self._monotonic() - beat.last_active_s
            body["seconds_since_activity"] = round(idle, 3)
            if idle > limit:
                running = 0 if beat.last_batch_id is None else beat.last_batch_id + 1
                body["status"] = "stuck"
                body["reason"] = (f"no batch planned or committed for {idle:.1f} s (limit {limit:g} s): batch "
                                  f"{running} is still running; check sink retries and the handler")
                return False, body
        return True, body

    def readiness(self) -> Status:
        """``/ready``: ok once recovery is done, while the loop runs."""
        with self._lock:
            beat, ready, failure = self._heartbeat, self._ready, self._failure
        if failure is not None:
            return False, {"status": "failed", "reason": failure}
        if beat is None:
            return False, {"status": "stopped", "reason": "the app's loop is not running"}
        if not ready:
            return False, {"status": "starting", "reason": "recovering from the checkpoint"}
        return True, {"status": "ready"}
