"""Operator options: output modes and timeout kinds.

Both accept their Spark spellings as strings (``"append"``, ``"Update"``,
``"ProcessingTimeTimeout"``, ``"EventTimeTimeout"``, ``"NoTimeout"``) so that
code ported from PySpark keeps working.
"""

from __future__ import annotations

import enum

from statefulstream.errors import ConfigError


class OutputMode(enum.Enum):
    """How an operator's output relates to earlier output.

    ``APPEND``: every row is new and final. ``UPDATE``: a row replaces the
    earlier row for the same key (sinks upsert by primary key).
    ``COMPLETE``: the whole result each trigger; only windowed aggregations
    accept it.
    """

    APPEND = "append"
    UPDATE = "update"
    COMPLETE = "complete"

    @classmethod
    def parse(cls, value: OutputMode | str, *, name: str = "output_mode") -> OutputMode:
        """Return the mode for an enum member or a case-insensitive string."""
        if isinstance(value, OutputMode):
            return value
        if isinstance(value, str):
            for mode in cls:
                if value.strip().lower() == mode.value:
                    return mode
        choices = ", ".join(repr(m.value) for m in cls)
        raise ConfigError(f"{name} must be one of {choices} (or OutputMode.*); got {value!r}")


class GroupStateTimeout(enum.Enum):
    """The timeout kind of a stateful operator; one per operator, as in Spark.

    ``NO_TIMEOUT``: groups are called only when they have data.
    ``PROCESSING_TIME``: ``GroupState.set_timeout_duration``; a group times out
    in the first batch whose batch timestamp is past its deadline.
    ``EVENT_TIME``: ``GroupState.set_timeout_timestamp``; a group times out when
    the watermark passes its deadline. Needs ``event_time=`` and
    ``watermark_delay=``.
    """

    NO_TIMEOUT = "NoTimeout"
    PROCESSING_TIME = "ProcessingTimeTimeout"
    EVENT_TIME = "EventTimeTimeout"

    @classmethod
    def parse(cls, value: GroupStateTimeout | str | None, *, name: str = "timeout") -> GroupStateTimeout:
        """Return the kind for an enum member, ``None`` or a Spark-style string."""
        if value is None:
            return cls.NO_TIMEOUT
        if isinstance(value, GroupStateTimeout):
            return value
        if isinstance(value, str):
            norm = value.strip().lower().replace("_", "").replace(" ", "")
            for kind in cls:
                if norm in (kind.value.lower(), kind.name.lower().replace("_", ""),
                            kind.value.lower().removesuffix("timeout")):
                    return kind
        choices = ", ".join(repr(k.value) for k in cls)
        raise ConfigError(f"{name} must be one of {choices} (or GroupStateTimeout.*); got {value!r}")


# PySpark spellings, so ``GroupStateTimeout.ProcessingTimeTimeout`` reads as in Spark.
for _kind in GroupStateTimeout:
    setattr(GroupStateTimeout, _kind.value, _kind)
del _kind
