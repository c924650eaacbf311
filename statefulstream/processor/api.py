"""The stateful processor interface (Spark 4's ``StatefulProcessor``, Flink's ``KeyedProcessFunction``).

A processor is a class. Each batch the runtime calls, in this order:

1. ``init(handle)`` once: declare the state variables (``handle.get_value_state``,
   ``get_list_state``, ``get_map_state``) and keep them on ``self``;
2. in batch 0 only, if the operator has an ``initial_state``:
   ``handle_initial_state(key, value, timer_values)`` per initial key;
3. ``handle_input_rows(key, rows, timer_values)`` once per key with input rows
   (keys in a deterministic order; rows in arrival order); it returns or
   yields the output rows;
4. after ALL input rows: ``handle_expired_timer(key, timer_values,
   expired_timer_info)`` once per due timer, lowest timestamp first (as
   Spark's ``TransformWithStateExec``: input rows, then timers); the timer
   is deleted once the output is consumed;
5. ``close()`` once.

Inside steps 2-4 the state variables and timers act on the current key.
Processing time and watermark come from ``timer_values``, never the clock,
so a replayed batch runs the same.
"""

from __future__ import annotations

import dataclasses
import enum
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from statefulstream.errors import ConfigError

if TYPE_CHECKING:
    from statefulstream.processor.handle import StatefulProcessorHandle


class TimeMode(enum.Enum):
    """What a processor's timers count in (Spark's ``TimeMode``)."""

    NONE = "none"
    """No timers; ``register_timer`` raises."""
    PROCESSING_TIME = "processing_time"
    """Timers fire when the batch timestamp reaches them; every trigger runs a batch."""
    EVENT_TIME = "event_time"
    """Timers fire when the watermark reaches them; needs ``event_time`` and ``watermark_delay``."""

    @classmethod
    def parse(cls, value: TimeMode | str | None) -> TimeMode:
        """Return the mode for an enum member, a name such as ``"ProcessingTime"``, or ``None``.

        Raises:
            ConfigError: an unknown mode.
        """
        if value is None:
            return cls.NONE
        if isinstance(value, cls):
            return value
        text = str(value).replace("-", "").replace("_", "").replace(" ", "").lower()
        for mode in cls:
            if mode.value.replace("_", "") == text:
                return mode
        raise ConfigError(f"transform_with_state: time_mode must be 'none', 'processing_time' or "
                          f"'event_time'; got {value!r}")


@dataclasses.dataclass(frozen=True)
class TimerValues:
    """The batch's time, as Spark's ``TimerValues``.

    Attributes:
        current_processing_time_ms: the batch timestamp (constant within a batch, the same on replay).
        current_watermark_ms: the eviction watermark of the batch, -1 without a watermark.
    """

    current_processing_time_ms: int
    current_watermark_ms: int

    def get_current_processing_time_in_ms(self) -> int:
        """Return the batch timestamp (epoch ms)."""
        return self.current_processing_time_ms

    def get_current_watermark_in_ms(self) -> int:
        """Return the batch's eviction watermark (epoch ms), or -1 without a watermark."""
        return self.current_watermark_ms


@dataclasses.dataclass(frozen=True)
class ExpiredTimerInfo:
    """The timer that fired, as Spark's ``ExpiredTimerInfo``.

    Attributes:
        expiry_time_ms: the timestamp the timer was registered for.
    """

    expiry_time_ms: int

    def get_expiry_time_in_ms(self) -> int:
        """Return the timestamp the timer was registered for."""
        return self.expiry_time_ms


class StatefulProcessor(ABC):
    """Base class of stateful processors; see the module docstring for the call order.

    >>> class Count(StatefulProcessor):
    ...     def init(self, handle):
    ...         self.count = handle.get_value_state("count")
    ...     def handle_input_rows(self, key, rows, timer_values):
    ...         self.count.update((self.count.get() or 0) + len(rows))
    ...         yield {"key": key, "count": self.count.get()}

    The same instance serves every batch: keep per-batch objects (the state
    variables) in ``init``, not in ``__init__``. Handlers must be
    deterministic given their inputs, state and ``timer_values`` (a crash
    replays the batch).
    """

    @abstractmethod
    def init(self, handle: StatefulProcessorHandle) -> None:
        """Declare the state variables; called once per batch before any handler."""

    @abstractmethod
    def handle_input_rows(self, key: Hashable, rows: list[Any],
                          timer_values: TimerValues) -> Iterable[Any] | Iterator[Any] | None:
        """Handle a key's input rows of the batch; return or yield output rows."""

    def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                             expired_timer_info: ExpiredTimerInfo) -> Iterable[Any] | Iterator[Any] | None:
        """Handle a due timer of ``key``; return or yield output rows. Default: no output."""
        return None

    def handle_initial_state(self, key: Hashable, initial_state: Any, timer_values: TimerValues) -> None:
        """Load one key's initial state (batch 0 only, before input rows).

        Raises:
            ConfigError: by default: an operator given ``initial_state`` must override this.
        """
        name = type(self).__name__
        raise ConfigError(f"processor {name} was given an initial_state but does not override "
                          f"handle_initial_state(key, initial_state, timer_values)")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called once at the end of each batch (after timers); the default does nothing."""
