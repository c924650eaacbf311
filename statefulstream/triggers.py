"""Triggers: when micro-batches run.

* ``Trigger.default()`` — the next batch as soon as the previous one is done
  (``trigger=None``).
* ``Trigger.processing_time("10 seconds")`` — one batch per interval
  (``trigger="10 seconds"``); a batch that overruns starts the next at once.
* ``Trigger.once()`` — one batch of what is available, then stop (``"once"``).
* ``Trigger.available_now()`` — everything available at start, in as many
  batches as ``max_records_per_trigger`` needs, plus the no-data batch the
  timeouts call for, then stop (``"available_now"``): run it from cron or a
  scheduler instead of keeping an idle cluster up.
"""

from __future__ import annotations

import dataclasses
import enum

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError


class TriggerKind(enum.Enum):
    """The kinds of trigger."""

    DEFAULT = "default"
    PROCESSING_TIME = "processing_time"
    ONCE = "once"
    AVAILABLE_NOW = "available_now"


@dataclasses.dataclass(frozen=True)
class Trigger:
    """When batches run; build with the class methods or :meth:`parse`."""

    kind: TriggerKind
    interval_ms: int = 0

    @classmethod
    def default(cls) -> Trigger:
        """Next batch as soon as the previous one is done."""
        return cls(TriggerKind.DEFAULT)

    @classmethod
    def processing_time(cls, interval: Duration) -> Trigger:
        """One batch per ``interval``: a string like ``"10 seconds"`` or a ``timedelta``."""
        return cls(TriggerKind.PROCESSING_TIME, positive_duration_ms(interval, name="trigger interval"))

    @classmethod
    def once(cls) -> Trigger:
        """One batch, then stop."""
        return cls(TriggerKind.ONCE)

    @classmethod
    def available_now(cls) -> Trigger:
        """Everything available now, in bounded batches, then stop."""
        return cls(TriggerKind.AVAILABLE_NOW)

    @property
    def stops(self) -> bool:
        """Whether ``run()`` returns by itself."""
        return self.kind in (TriggerKind.ONCE, TriggerKind.AVAILABLE_NOW)

    @classmethod
    def parse(cls, value: Trigger | Duration | None) -> Trigger:
        """Return a trigger for ``None``, ``"once"``, ``"available_now"``, an interval, or a ``Trigger``.

        >>> Trigger.parse("10 seconds")
        Trigger(kind=<TriggerKind.PROCESSING_TIME: 'processing_time'>, interval_ms=10000)
        """
        if value is None:
            return cls.default()
        if isinstance(value, Trigger):
            return value
        if isinstance(value, str):
            norm = value.strip().lower().replace("-", "_").replace(" ", "_")
            if norm == "once":
                return cls.once()
            if norm in ("available_now", "availablenow"):
                return cls.available_now()
            if norm in ("default", "continuous"):
                return cls.default()
            try:
                return cls.processing_time(value)
            except ConfigError:
                msg = (f"trigger must be None, 'once', 'available_now', an interval like '10 seconds', or a "
                       f"Trigger; got {value!r}")
                raise ConfigError(msg) from None
        return cls.processing_time(value)
