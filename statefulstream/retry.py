"""One retry policy for every part that retries: sink backpressure, HTTP, Cassandra, the Kafka source.

A ``RetryPolicy`` is a validated value: how many attempts, for how long,
and how the waits between them grow. ``RetryPolicy.call`` runs a function
under it (tenacity underneath, in this module only). The rules, stated once:

- Attempts stop at ``max_attempts`` tries or once ``max_elapsed`` has passed
  since the first try, whichever comes first (at least one must be set).
- The wait before retry *n* is ``initial_backoff * multiplier ** (n - 1)``,
  capped at ``max_backoff``, shortened at random by up to ``jitter`` of itself
  so that many clients recovering at once do not retry in step.
- An exception with a ``retry_after`` attribute (seconds, e.g. from an HTTP
  ``Retry-After`` header or ``SinkUnavailableError.retry_after``) makes the
  wait at least that long; a ``retry_after`` above ``max_retry_after`` stops
  the retries at once and the exception goes to the caller, who may wait.
- When the attempts stop, the last exception is raised as it was.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError

T = TypeVar("T")

OnRetry = Callable[[BaseException, int, float], None]
"""Called before each wait with the exception, the attempt that failed (1-based) and the wait in seconds."""


@dataclasses.dataclass(frozen=True, init=False)
class RetryPolicy:
    """How often and how patiently a failing call is tried again.

    Args:
        max_attempts: tries in all, including the first (1: no retry);
            ``None``: no limit on attempts (``max_elapsed`` must be set).
        max_elapsed: stop retrying once this long has passed since the first
            try, e.g. ``"5 minutes"``; ``None``: no time limit (``max_attempts``
            must be set).
        initial_backoff: the wait before the first retry, e.g. ``"200 ms"``.
        max_backoff: the longest wait between two tries.
        multiplier: growth of the wait per retry (>= 1).
        jitter: the fraction (0 to 1) by which each wait may be shortened at
            random; 0 waits exactly the backoff.
        max_retry_after: the longest server-requested wait honoured; a longer
            one ends the retries and hands the wait to the caller.

    Durations are strings with a unit or ``timedelta`` (see
    :mod:`statefulstream.durations`) and are kept in milliseconds.

    Raises:
        ConfigError: a limit is zero, negative or missing, or
            ``max_backoff < initial_backoff``.

    >>> RetryPolicy(max_attempts=3, initial_backoff="50 ms")
    RetryPolicy(max_attempts=3, max_elapsed_ms=None, initial_backoff_ms=50, max_backoff_ms=30000, \
multiplier=2.0, jitter=0.5, max_retry_after_ms=300000)
    >>> RetryPolicy(max_attempts=None)
    Traceback (most recent call last):
    ...
    statefulstream.errors.ConfigError: RetryPolicy needs max_attempts or max_elapsed (or both); with neither \
it would retry forever
    """

    max_attempts: int | None
    max_elapsed_ms: int | None
    initial_backoff_ms: int
    max_backoff_ms: int
    multiplier: float
    jitter: float
    max_retry_after_ms: int

    def __init__(self, *, max_attempts: int | None = 5, max_elapsed: Duration | None = None,
                 initial_backoff: Duration = "200 ms", max_backoff: Duration = "30 seconds",
                 multiplier: float = 2.0, jitter: float = 0.5, max_retry_after: Duration = "5 minutes") -> None:
        if max_attempts is not None and (not isinstance(max_attempts, int) or isinstance(max_attempts, bool)
                                         or max_attempts < 1):
            msg = f"RetryPolicy max_attempts must be an int >= 1 (1 means no retry) or None; got {max_attempts!r}"
            raise ConfigError(msg)
        if max_attempts is None and max_elapsed is None:
            msg = "RetryPolicy needs max_attempts or max_elapsed (or both); with neither it would retry forever"
            raise ConfigError(msg)
        if not isinstance(multiplier, (int, float)) or isinstance(multiplier, bool) or not multiplier >= 1:
            raise ConfigError(f"RetryPolicy multiplier must be a number >= 1; got {multiplier!r}")
        if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
            raise ConfigError(f"RetryPolicy jitter must be a fraction from 0 to 1; got {jitter!r}")
        elapsed_ms = None if max_elapsed is None else positive_duration_ms(max_elapsed, name="RetryPolicy max_elapsed")
        initial_ms = positive_duration_ms(initial_backoff, name="RetryPolicy initial_backoff")
        max_ms = positive_duration_ms(max_backoff, name="RetryPolicy max_backoff")
        if max_ms < initial_ms:
            msg = f"RetryPolicy max_backoff ({max_ms} ms) must not be below initial_backoff ({initial_ms} ms)"
            raise ConfigError(msg)
        values = {"max_attempts": max_attempts, "max_elapsed_ms": elapsed_ms, "initial_backoff_ms": initial_ms,
                  "max_backoff_ms": max_ms, "multiplier": float(multiplier), "jitter": float(jitter),
                  "max_retry_after_ms": positive_duration_ms(max_retry_after, name="RetryPolicy max_retry_after")}
        for field, value in values.items():  # frozen: the dataclass's own __setattr__ refuses
            object.__setattr__(self, field, value)

    def limit_text(self) -> str:
        """The limit in words, for error messages: ``'for 5 attempts'``, ``'for 300 s'`` or both.

        >>> RetryPolicy(max_attempts=None, max_elapsed="50 ms").limit_text()
        'for 0.05 s'
        """
        parts = []
        if self.max_attempts is not None:
            parts.append(f"{self.max_attempts} attempt(s)")
        if self.max_elapsed_ms is not None:
            parts.append(f"{self.max_elapsed_ms / 1000:g} s")
        return "for " + " or ".join(parts)

    def backoff_s(self, attempt: int) -> float:
        """The wait in seconds after failed attempt ``attempt`` (1-based), before hints and jitter.

        >>> [RetryPolicy(initial_backoff="100 ms", max_backoff="1 second").backoff_s(n) for n in (1, 2, 5)]
        [0.1, 0.2, 1.0]
        """
        return min(self.max_backoff_ms, self.initial_backoff_ms * self.multiplier ** (attempt - 1)) / 1000

    def call(self, fn: Callable[[], T], *, retry_on: type[BaseException] | tuple[type[BaseException], ...],
             on_retry: OnRetry | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
        """Return ``fn()``, calling it again after each ``retry_on`` exception while the policy allows.

        Args:
            fn: the call to make.
            retry_on: the exception types that may go away on a later try;
                anything else is raised at once.
            on_retry: called before each wait (logs, retry counters).
            sleep: how to wait (tests pass a recorder).

        Raises:
            BaseException: the last exception, when the policy gives up, or
                the first exception not in ``retry_on``.
        """
        stop: tenacity.stop.stop_base = _StopOnLongRetryAfter(self.max_retry_after_ms / 1000)
        if self.max_attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.max_attempts)
        if self.max_elapsed_ms is not None:
            stop = stop | tenacity.stop_after_delay(self.max_elapsed_ms / 1000)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is not None:
                exc = state.outcome.exception() if state.outcome else None
                wait = state.next_action.sleep if state.next_action else 0.0
                on_retry(exc or RuntimeError("unknown failure"), state.attempt_number, float(wait))

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(retry_on), stop=stop, wait=self._wait,
                                     sleep=sleep, before_sleep=before_sleep, reraise=True)
        return retrying(fn)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = self.backoff_s(state.attempt_number)
        backoff -= backoff * self.jitter * random.random()  # noqa: S311 - jitter, not cryptography
        return max(backoff, _retry_after_s(state) or 0.0)


def _retry_after_s(state: tenacity.RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    after: Any = getattr(exc, "retry_after", None)
    return float(after) if isinstance(after, (int, float)) else None


class _StopOnLongRetryAfter(tenacity.stop.stop_base):
    """Stop when the failure asks for a longer wait than the policy honours; the caller waits instead."""

    def __init__(self, max_seconds: float) -> None:
        self._max_seconds = max_seconds

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        after = _retry_after_s(retry_state)
        return after is not None and after > self._max_seconds
