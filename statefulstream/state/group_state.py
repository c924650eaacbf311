"""``GroupState``: the handler's view of one group's state, with Spark's contract.

Every call of the handler gets a fresh ``GroupState`` (SEMANTICS.md A.1,
through :func:`call_states`): it starts from the stored value, with *no*
timeout, ``updated`` and ``removed`` false. After the call the executor applies the write-back rule of
SEMANTICS.md A.3 through :meth:`GroupState.outcome`.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Callable
from sys import getrefcount
from typing import Any, Generic, NamedTuple, TypeVar

from statefulstream.durations import parse_duration_ms
from statefulstream.errors import (
    ConfigError,
    InvalidStateValueError,
    InvalidTimeoutError,
    StateNotFoundError,
    TimeoutNotConfiguredError,
    WatermarkNotDefinedError,
)
from statefulstream.options import GroupStateTimeout
from statefulstream.records import NO_TIMEOUT_MS, NO_WATERMARK_MS
from statefulstream.timeutil import MAX_TIME_MS, datetime_to_ms, out_of_range

S = TypeVar("S")
"""The type of the state value a handler keeps per group."""



class Action(str, enum.Enum):
    """What happens to a group's stored row after a handler call."""

    KEEP = "keep"
    """Write nothing."""
    PUT = "put"
    """Store the outcome's value (``None`` for a state-less row that only carries a timeout) and timeout."""
    DELETE = "delete"
    """Remove the row."""


class Outcome(NamedTuple):
    """What the executor writes back after a handler call (SEMANTICS.md A.3)."""

    action: Action
    value: Any
    timeout_ms: int


_new_outcome = tuple.__new__  # an Outcome without the NamedTuple constructor's overhead (once per handler call)
_KEEP = Outcome(Action.KEEP, None, NO_TIMEOUT_MS)
_DELETE = Outcome(Action.DELETE, None, NO_TIMEOUT_MS)
# Enum members read through their class cost 60-200 ns on Python 3.11, a global ~5: the per-call ones, bound once.
_PUT = Action.PUT
_EVENT_TIME, _PROCESSING_TIME = GroupStateTimeout.EVENT_TIME, GroupStateTimeout.PROCESSING_TIME


class GroupState(Generic[S]):
    """The state of one group, handed to the handler with the group's values.

    Not thread-safe. Build one only through the executor or
    ``statefulstream.testing.make_group_state``.

    >>> from statefulstream.testing import make_group_state
    >>> state = make_group_state(timeout="ProcessingTimeTimeout", batch_processing_time_ms=1000)
    >>> state.exists
    False
    >>> state.update({"count": 1}); state.set_timeout_duration("10 seconds")
    >>> state.get(), state.exists
    ({'count': 1}, True)
    """

    __slots__ = ("_value", "_defined", "_updated", "_removed", "_timeout_ts", "_timeout_kind",
                 "_batch_ts", "_watermark", "_has_timed_out", "_watermark_present")

    def __init__(
        self,
        value: S | None,
        defined: bool,
        *,
        timeout: GroupStateTimeout,
        batch_processing_time_ms: int,
        watermark_ms: int,
        watermark_present: bool,
        has_timed_out: bool = False,
    ) -> None:
        if batch_processing_time_ms < 0:
            raise ConfigError("batch_processing_time_ms must be 0 or positive")
        if watermark_present and watermark_ms < 0:
            raise ConfigError("watermark_ms must be 0 or positive if a watermark is present")
        if has_timed_out and timeout is GroupStateTimeout.NO_TIMEOUT:
            # Spark: UnsupportedOperationException (MISSING_TIMEOUT_CONFIGURATION), as for the setters.
            raise TimeoutNotConfiguredError("a GroupState cannot have timed out without a timeout configured: "
                                            "has_timed_out=True needs timeout=PROCESSING_TIME or EVENT_TIME")
        self._start(value, defined, timeout, batch_processing_time_ms,
                    watermark_ms if watermark_present else NO_WATERMARK_MS, watermark_present, has_timed_out)

    def _start(self, value: S | None, defined: bool, timeout: GroupStateTimeout, batch_ts: int, watermark: int,
               watermark_present: bool, has_timed_out: bool) -> None:
        # Every call starts from the stored value with no timeout, not updated, not removed (A.1).
        self._value = value
        self._defined = defined
        self._updated = self._removed = False
        self._timeout_ts = NO_TIMEOUT_MS
        self._timeout_kind = timeout
        self._batch_ts = batch_ts
        self._watermark = watermark
        self._watermark_present = watermark_present
        self._has_timed_out = has_timed_out

    # --- reading state

    @property
    def exists(self) -> bool:
        """Whether the group has state (set earlier and not removed)."""
        return self._defined

    def get(self) -> S:
        """Return the state value.

        Raises:
            StateNotFoundError: the group has no state; use ``get_option()``.
        """
        if not self._defined:
            raise StateNotFoundError("state is not set for this group; use get_option() or check exists first")
        return self._value  # type: ignore[return-value]

    def get_option(self) -> S | None:
        """Return the state value, or ``None`` when the group has none."""
        return self._value if self._defined else None

    @property
    def has_timed_out(self) -> bool:
        """True only in the call made because the group's timeout expired (it then gets no values)."""
        return self._has_timed_out

    # --- changing state

    def update(self, new_state: S) -> None:
        """Set the state value (``0`` and ``""`` are valid values).

        Raises:
            InvalidStateValueError: ``new_state`` is ``None``; call ``remove()``.
        """
        if new_state is None:
            raise InvalidStateValueError("'None' is not a valid state value; call remove() to delete the state")
        self._value = new_state
        self._defined = True
        self._updated = True
        self._removed = False

    def remove(self) -> None:
        """Remove the state. Idempotent; a timeout set in this call stays in place."""
        self._value = None
        self._defined = False
        self._updated = False
        self._removed = True

    # --- timeouts

    def set_timeout_duration(self, duration: int | str | _dt.timedelta) -> None:
        """Time the group out ``duration`` after this batch's processing time.

        Args:
            duration: milliseconds, a ``timedelta`` or a string like ``"1 hour"``.
                Must be positive. The last call in a handler call wins.

        Raises:
            TimeoutNotConfiguredError: the operator's timeout is not processing time.
            InvalidTimeoutError: the duration is zero or negative, or the
                deadline is after ``timeutil.MAX_TIME_MS`` (year 9999).
        """
        if self._timeout_kind is not _PROCESSING_TIME:
            raise TimeoutNotConfiguredError(
                "set_timeout_duration() needs timeout=GroupStateTimeout.PROCESSING_TIME on the operator; "
                f"it has {self._timeout_kind.value}")
        ms = _duration_ms(duration, "timeout duration")
        if ms <= 0:
            raise InvalidTimeoutError(f"Timeout duration must be positive; got {ms} ms")
        _check_range(self._batch_ts + ms, f"Timeout duration {ms} ms after the batch time {self._batch_ts}")
        self._timeout_ts = self._batch_ts + ms

    def set_timeout_timestamp(
        self,
        timestamp: int | _dt.datetime,
        additional_duration: int | str | _dt.timedelta | None = None,
    ) -> None:
        """Time the group out when the watermark passes ``timestamp`` (+ ``additional_duration``).

        Args:
            timestamp: epoch milliseconds or a ``datetime`` (naive means UTC).
            additional_duration: optional non-negative duration added to it.

        Raises:
            TimeoutNotConfiguredError: the operator's timeout is not event time.
            InvalidTimeoutError: the result is not positive, is after
                ``timeutil.MAX_TIME_MS`` (year 9999), or is earlier than the
                current watermark (equal to it is allowed).
        """
        if self._timeout_kind is not _EVENT_TIME:
            raise TimeoutNotConfiguredError(
                "set_timeout_timestamp() needs timeout=GroupStateTimeout.EVENT_TIME on the operator; "
                f"it has {self._timeout_kind.value}")
        # The common case, once per call: epoch ms, valid, not before the watermark (NO_WATERMARK_MS is -1).
        if (type(timestamp) is int and additional_duration is None and timestamp > 0
                and self._watermark <= timestamp <= MAX_TIME_MS):
            self._timeout_ts = timestamp
            return
        if isinstance(timestamp, _dt.datetime):
            ms = datetime_to_ms(timestamp)
        elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
            ms = timestamp
        else:
            raise InvalidTimeoutError(f"timeout timestamp must be epoch ms (int) or a datetime; got {timestamp!r}")
        if additional_duration is not None:
            extra = _duration_ms(additional_duration, "additional duration")
            ms += extra
        if ms <= 0:
            raise InvalidTimeoutError(f"Timeout timestamp must be positive; got {ms}")
        _check_range(ms, f"Timeout timestamp {ms}")
        if self._watermark != NO_WATERMARK_MS and ms < self._watermark:
            raise InvalidTimeoutError(
                f"Timeout timestamp ({ms}) cannot be earlier than the current watermark ({self._watermark})")
        self._timeout_ts = ms

    def get_current_watermark_ms(self) -> int:
        """Return this batch's event-time watermark (0 in the first batch).

        Raises:
            WatermarkNotDefinedError: the operator has no ``watermark_delay``.
        """
        if not self._watermark_present:
            raise WatermarkNotDefinedError(
                "Cannot get event time watermark timestamp without setting a watermark: "
                "give the operator event_time= and watermark_delay=")
        return self._watermark

    def get_current_processing_time_ms(self) -> int:
        """Return the batch timestamp: constant within a trigger, identical on replay."""
        return self._batch_ts

    # --- executor side

    def outcome(self, stored_timeout_ms: int) -> Outcome:
        """Return what to write back after the call (SEMANTICS.md A.3).

        Args:
            stored_timeout_ms: the timeout stored for the group before the call.
        """
        return _new_outcome(Outcome, self.write_back(stored_timeout_ms))

    def write_back(self, stored_timeout_ms: int) -> tuple[Action, Any, int]:
        """:meth:`outcome` as a plain ``(action, value, timeout_ms)`` tuple: the executor's form, once per call."""
        new_ts = self._timeout_ts
        if new_ts == NO_TIMEOUT_MS and (self._removed or not self._defined):
            # A row without state and without timeout is indistinguishable from no row:
            # delete it rather than keep an empty row (Spark would store it forever).
            return _DELETE if (self._removed or stored_timeout_ms != NO_TIMEOUT_MS) else _KEEP
        if self._updated or self._removed or new_ts != stored_timeout_ms:
            return _PUT, self._value if self._defined else None, new_ts
        return _KEEP

    def __repr__(self) -> str:
        value = repr(self._value) if self._defined else "<none>"
        return f"GroupState(value={value}, timeout_ms={self._timeout_ts}, has_timed_out={self._has_timed_out})"

    # --- PySpark spellings (exists/getOption/hasTimedOut are properties there too)

    @property
    def getOption(self) -> S | None:  # noqa: N802 - PySpark name
        """PySpark alias of :meth:`get_option` (a property, as in PySpark)."""
        return self.get_option()

    @property
    def hasTimedOut(self) -> bool:  # noqa: N802 - PySpark name
        """PySpark alias of :attr:`has_timed_out`."""
        return self._has_timed_out

    setTimeoutDuration = set_timeout_duration  # noqa: N815 - PySpark name
    setTimeoutTimestamp = set_timeout_timestamp  # noqa: N815 - PySpark name
    getCurrentWatermarkMs = get_current_watermark_ms  # noqa: N815 - PySpark name
    getCurrentProcessingTimeMs = get_current_processing_time_ms  # noqa: N815 - PySpark name


def call_states(timeout: GroupStateTimeout, batch_ts: int, watermark: int,
                watermark_present: bool) -> Callable[[Any, bool], GroupState[Any]]:
    """Return ``state_for(value, has_timed_out)``: the ``GroupState`` of one handler call of a batch.

    Each returned state is as a fresh one (SEMANTICS.md A.1): the stored
    value (``None``: no state), no timeout, not updated, not removed. The
    arguments are the batch's, already validated by a ``GroupState(...)``
    built once per batch (the executor's hot path skips the checks).

    One object serves call after call while nothing else holds it: before
    reusing it, its reference count shows whether the last handler kept a
    reference (in a row, a closure, a global); then that object is left as
    it is and a new one is made. So reuse is never visible to a handler.
    """
    held: GroupState[Any] = GroupState.__new__(GroupState)
    held._start(None, False, timeout, batch_ts, watermark, watermark_present, False)
    alone = getrefcount(held)  # the count while only this closure holds it

    def state_for(value: Any, has_timed_out: bool) -> GroupState[Any]:
        nonlocal held
        state = held
        if getrefcount(state) != alone + 1:  # + the local `state`: someone else keeps the last one
            state = held = GroupState.__new__(GroupState)
            state._start(value, value is not None, timeout, batch_ts, watermark, watermark_present, has_timed_out)
            return state
        state._value = value
        state._defined = value is not None
        state._updated = state._removed = False
        state._timeout_ts = NO_TIMEOUT_MS
        state._has_timed_out = has_timed_out
        return state

    return state_for


def _check_range(ms: int, what: str) -> None:
    reason = out_of_range(ms)
    if reason is not None:
        raise InvalidTimeoutError(f"{what} {reason}; timeouts must be representable times")


def _duration_ms(value: int | str | _dt.timedelta, what: str) -> int:
    if isinstance(value, str):
        try:
            ms = parse_duration_ms(value, name=what)
        except ConfigError as exc:
            raise InvalidTimeoutError(str(exc)) from exc
        if ms < 0:
            raise InvalidTimeoutError(f"Provided {what} ({value!r}) is negative")
        return ms
    if isinstance(value, _dt.timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    else:
        msg = f"{what} must be milliseconds (int), a timedelta or a string like '1 hour'; got {value!r}"
        raise InvalidTimeoutError(msg)
    if ms < 0:
        raise InvalidTimeoutError(f"Provided {what} ({ms} ms) is negative")
    return ms
