"""Event-time conversion, the representable range of times, and the processing-time clock.

Event time may be given as:

* ``int``: epoch **milliseconds**;
* ``float``: epoch **seconds** (as ``time.time()`` returns);
* ``datetime``: aware, or naive meaning UTC;
* ``str``: ISO-8601 (``"2024-05-01T12:00:00Z"``), naive meaning UTC.

Every time the runtime accepts (event times, watermarks, timeout
timestamps) lies in ``[MIN_TIME_MS, MAX_TIME_MS]``: years 1 to 9999, the
range of Spark's ``TimestampType`` and of Python's ``datetime``, so any
accepted value can be stored, compared and printed. Conversion is done per
batch with one type check for the common case where every value already is
epoch milliseconds.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Sequence
from operator import countOf
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


MIN_TIME_MS = datetime_to_ms(_dt.datetime.min)
"""The earliest representable time: 0001-01-01T00:00:00Z in epoch ms."""
MAX_TIME_MS = datetime_to_ms(_dt.datetime.max)
"""The latest representable time: 9999-12-31T23:59:59.999Z in epoch ms."""


def out_of_range(ms: float) -> str | None:
    """Return why epoch ms ``ms`` is not a representable time (a phrase), or ``None`` if it is.

    >>> out_of_range(0) is None, out_of_range(MAX_TIME_MS + 1)
    (True, 'is after 9999-12-31T23:59:59.999Z (253402300799999 ms), the latest representable time')
    """
    if ms > MAX_TIME_MS:
        return f"is after 9999-12-31T23:59:59.999Z ({MAX_TIME_MS} ms), the latest representable time"
    if ms < MIN_TIME_MS:
        return f"is before 0001-01-01T00:00:00Z ({MIN_TIME_MS} ms), the earliest representable time"
    return None


def ms_to_datetime(ms: int) -> _dt.datetime:
    """Return the aware UTC datetime of epoch milliseconds.

    Raises:
        ValueError: ``ms`` is outside ``[MIN_TIME_MS, MAX_TIME_MS]``.
    """
    reason = out_of_range(ms)
    if reason is not None:
        raise ValueError(f"{ms} ms {reason}")
    return _EPOCH + _dt.timedelta(milliseconds=ms)


def format_ms(ms: int | None) -> str | None:
    """Return ISO-8601 UTC text (``"2024-05-01T12:00:00.000Z"``) for any epoch ms; ``None`` stays ``None``.

    Never raises, so reports and inspection commands can print any stored
    value, including one written by an older version that accepted more.

    >>> format_ms(0), format_ms(10**18)
    ('1970-01-01T00:00:00.000Z', 'out of range (1000000000000000000 ms)')
    """
    if ms is None:
        return None
    if out_of_range(ms) is not None:
        return f"out of range ({ms} ms)"
    return (_EPOCH + _dt.timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_epoch_ms(value: Any) -> int:
    """Convert one event-time value to epoch milliseconds in the representable range.

    Raises:
        ValueError: the value is not an event time, or is outside
            ``[MIN_TIME_MS, MAX_TIME_MS]`` (the message says why).
    """
    kind = type(value)
    if kind is int:
        ms = value
    elif kind is float:
        if not math.isfinite(value):
            raise ValueError(f"event time {value!r} is not a finite number of epoch seconds")
        reason = out_of_range(value * 1000)
        if reason is not None:
            raise ValueError(f"event time {value!r} (epoch seconds) {reason}")
        return int(value * 1000)
    elif isinstance(value, _dt.datetime):
        ms = datetime_to_ms(value)  # an offset can still put it outside by up to a day
    elif isinstance(value, str):
        ms = _iso_to_ms(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = int(value)
    else:
        raise ValueError(f"event time must be epoch ms (int), epoch seconds (float), datetime or ISO string; "
                         f"got {kind.__name__} {value!r}")
    reason = out_of_range(ms)
    if reason is not None:
        raise ValueError(f"event time {value!r} ({ms} epoch ms) {reason}")
    return ms


def _iso_to_ms(value: str) -> int:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime_to_ms(_dt.datetime.fromisoformat(text))
    except (ValueError, OverflowError):
        raise ValueError(f"event time {value!r} is not an ISO-8601 timestamp between years 1 and 9999") from None


def all_epoch_ms(values: Sequence[Any]) -> bool:
    """Whether every value is a plain ``int`` (epoch ms), so no conversion is needed."""
    return countOf(map(type, values), int) == len(values)  # C-level, and cheaper than a set of the types
