"""Parsing of durations: ``"10 seconds"``, ``"1 hour 30 minutes"``, or milliseconds.

One parser serves triggers, watermark delays and timeouts. Units follow
Spark's interval strings: a month counts as 31 days and a year as 12 months,
and each part may be negative (``"-1 month 31 days 1 second"`` is 1000 ms).
"""

from __future__ import annotations

import datetime as _dt
import re

from statefulstream.errors import ConfigError

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



def parse_duration_ms(value: int | float | str | _dt.timedelta, *, name: str = "duration") -> int:
    """Return a duration in whole milliseconds.

    Args:
        value: milliseconds (int or float), a ``timedelta``, or a string of
            ``<number> <unit>`` parts such as ``"1 hour 30 minutes"``.
        name: the argument's name, used in error messages.

    Raises:
        ConfigError: the value is not a duration. The sign is not checked;
            callers decide whether zero or negative values are allowed.

    >>> parse_duration_ms("1 minute 30 seconds")
    90000
    >>> parse_duration_ms("-1 month 31 days 1 second")
    1000
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be milliseconds, a timedelta or a string like '10 seconds'; got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, _dt.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, str):
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
    msg = f"{name} must be milliseconds, a timedelta or a string like '10 seconds'; got {type(value).__name__}"
    raise ConfigError(msg)


def positive_duration_ms(value: int | float | str | _dt.timedelta, *, name: str) -> int:
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
