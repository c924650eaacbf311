"""The duration rule of the API, and its parser.

**Configuration durations** (timeouts, intervals, delays, backoffs, window
sizes, TTLs: every duration given to ``App``, triggers, sources, sinks,
windows and retry policies) are a string with a unit (``"20 seconds"``,
``"1 hour 30 minutes"``, ``"500 ms"``) or a ``datetime.timedelta``. A bare
``int`` or ``float`` is refused: whether ``20`` meant seconds or
milliseconds cannot be known, and guessing wrong once turned a 20-second
timeout into 20 ms. The exceptions are parameters whose name ends in
``_ms`` (milliseconds, by name) and the Spark-compatible event-time and
``GroupState`` APIs (``set_timeout_duration``, ``set_timeout_timestamp``,
watermarks, record timestamps), which keep Spark's millisecond numbers.

Units follow Spark's interval strings: a month counts as 31 days and a year
as 12 months, and each part may be negative (``"-1 month 31 days 1 second"``
is 1000 ms).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import TypeAlias

from statefulstream.errors import ConfigError

Duration: TypeAlias = str | _dt.timedelta
"""A configuration duration: ``"10 seconds"`` or a ``timedelta``."""

_DAY_MS = 86_400_000
_UNIT_MS: dict[str, int] = {
    "ms": 1, "millisecond": 1, "milliseconds": 1, "msec": 1, "msecs": 1,
    "s": 1000, "sec": 1000, "secs": 1000, "second": 1000, "seconds": 1000,
    "m": 60_000, "min": 60_000, "mins": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
    "d": _DAY_MS, "day": _DAY_MS, "days": _DAY_MS,
    "w": 7 * _DAY_MS, "week": 7 * _DAY_MS, "weeks": 7 * _DAY_MS,
    "month": 31 * _DAY_MS, "months": 31 * _DAY_MS,
    "year": 12 * 31 * _DAY_MS, "years": 12 * 31 * _DAY_MS,
}
_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*")



def parse_duration_ms(value: Duration, *, name: str = "duration") -> int:
    """Return a configuration duration in whole milliseconds.

    Args:
        value: a ``timedelta`` or a string of ``<number> <unit>`` parts such
            as ``"1 hour 30 minutes"``. A bare number is refused (see the module).
        name: the argument's name, used in error messages.

    Raises:
        ConfigError: the value is not a duration. The sign is not checked;
            callers decide whether zero or negative values are allowed.

    >>> parse_duration_ms("1 minute 30 seconds")
    90000
    >>> parse_duration_ms("-1 month 31 days 1 second")
    1000
    >>> parse_duration_ms(20, name="timeout")
    Traceback (most recent call last):
    ...
    statefulstream.errors.ConfigError: timeout: a bare number (20) is ambiguous, seconds or milliseconds? \
Write the unit, e.g. '20 seconds' or '20 ms', or pass a datetime.timedelta
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        msg = (f"{name}: a bare number ({value!r}) is ambiguous, seconds or milliseconds? Write the unit, "
               f"e.g. '{value:g} seconds' or '{value:g} ms', or pass a datetime.timedelta")
        raise ConfigError(msg)
    if isinstance(value, _dt.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, str):
        return _parse_text(value, name)
    msg = f"{name} must be a duration like '10 seconds' or a datetime.timedelta; got {type(value).__name__}"
    raise ConfigError(msg)


def _parse_text(value: str, name: str) -> int:
    text = value.strip().lower()
    if text.startswith("interval "):
        text = text[len("interval "):]
    pos, total, found = 0, 0.0, False
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None or match.group(2) not in _UNIT_MS:
            msg = (f"{name}: cannot parse {value!r} as a duration; use parts like "
                   f"'10 seconds', '1 hour 30 minutes' or '500 ms'")
            raise ConfigError(msg)
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos, found = match.end(), True
    if not found:
        raise ConfigError(f"{name}: empty duration string")
    return int(total)


def ms_or_duration(value: int | Duration, *, name: str) -> int:
    """Return milliseconds from an int (Spark's millisecond APIs) or a configuration duration.

    Only for the Spark-compatible APIs named in the module docstring and the
    test kit's manual clock, whose numbers are milliseconds like Spark's.

    >>> ms_or_duration(1500, name="advance"), ms_or_duration("2 seconds", name="advance")
    (1500, 2000)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_duration_ms(value, name=name)  # type: ignore[arg-type] # a bool is refused there


def positive_duration_ms(value: Duration, *, name: str) -> int:
    """Return ``parse_duration_ms(value)``, which must be above zero.

    Raises:
        ConfigError: the value is not a duration, or is zero or negative.

    >>> positive_duration_ms("5 minutes", name="size")
    300000
    """
    ms = parse_duration_ms(value, name=name)
    if ms <= 0:
        msg = f"{name} must be positive (a positive duration like '10 seconds'); got {value!r}"
        raise ConfigError(msg)
    return ms
