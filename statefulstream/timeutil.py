"""Event-time conversion and the processing-time clock.

Event time may be given as:

* ``int``: epoch **milliseconds**;
* ``float``: epoch **seconds** (as ``time.time()`` returns);
* ``datetime``: aware, or naive meaning UTC;
* ``str``: ISO-8601 (``"2024-05-01T12:00:00Z"``), naive meaning UTC.

Conversion is done per batch with one type check for the common case where
every value already is epoch milliseconds.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from typing import Any

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
Clock = Callable[[], int]
"""A processing-time clock: a callable returning epoch milliseconds."""


def system_clock() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def datetime_to_ms(value: _dt.datetime) -> int:
    """Return epoch milliseconds of a datetime (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> _dt.datetime:
    """Return the aware UTC datetime of epoch milliseconds."""
    return _EPOCH + _dt.timedelta(milliseconds=ms)


def to_epoch_ms(value: Any) -> int:
    """Convert one event-time value to epoch milliseconds.

    Raises:
        ValueError: the value is not an event time (message says why).
    """
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return int(value * 1000)
    if isinstance(value, _dt.datetime):
        return datetime_to_ms(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            return datetime_to_ms(_dt.datetime.fromisoformat(text))
        except ValueError:
            raise ValueError(f"event time {value!r} is not an ISO-8601 timestamp") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"event time must be epoch ms (int), epoch seconds (float), datetime or ISO string; "
                     f"got {kind.__name__} {value!r}")


def all_epoch_ms(values: Sequence[Any]) -> bool:
    """Whether every value is a plain ``int`` (epoch ms), so no conversion is needed."""
    return not values or set(map(type, values)) == {int}
