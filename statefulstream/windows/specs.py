"""Window specifications: which event-time windows a record belongs to.

Windows are half-open intervals ``[start, end)`` in epoch milliseconds, as
Spark's ``window()`` and ``session_window()``:

* :func:`tumbling` — fixed, non-overlapping windows of ``size``; each record
  is in exactly one.
* :func:`sliding` — windows of ``size`` starting every ``every``; a record is
  in ``ceil(size / every)`` of them.
* :func:`session` — per key, records closer than ``gap`` form one session
  ``[first event, last event + gap)``; sessions merge when a record bridges them.

Window starts are aligned to the epoch plus ``offset`` (Spark's ``startTime``):
``start = t - (t - offset) mod every``.

>>> tumbling("5 minutes").assign([60_000, 420_000])
{(0, 300000): [0], (300000, 600000): [1]}
>>> sorted(sliding("10 minutes", every="5 minutes").assign([420_000]))
[(0, 600000), (300000, 900000)]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from statefulstream.durations import Duration, parse_duration_ms, positive_duration_ms
from statefulstream.errors import ConfigError

Window = tuple[int, int]
"""``(start_ms, end_ms)`` of one window, end exclusive."""


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Fixed-size windows of ``size_ms`` starting every ``slide_ms`` (``slide == size``: tumbling).

    Build one with :func:`tumbling` or :func:`sliding`.

    Attributes:
        size_ms: window length.
        slide_ms: distance between window starts (``<= size_ms``).
        offset_ms: window starts are ``offset_ms`` past multiples of ``slide_ms``.
    """

    size_ms: int
    slide_ms: int
    offset_ms: int = 0

    @property
    def is_session(self) -> bool:
        """``False``: fixed windows never merge."""
        return False

    def assign(self, times: Sequence[int]) -> dict[Window, list[int]]:
        """Group record indexes by the windows that contain their event time.

        Args:
            times: event times (epoch ms), one per record, in arrival order.

        Returns:
            ``{(start, end): [indexes in arrival order]}``.
        """
        size, slide, off = self.size_ms, self.slide_ms, self.offset_ms
        out: dict[Window, list[int]] = {}
        get = out.get
        if size == slide:  # tumbling: one window per record, no inner loop
            for i, t in enumerate(times):
                start = t - (t - off) % slide
                idx = get((start, start + size))
                if idx is None:
                    out[(start, start + size)] = [i]
                else:
                    idx.append(i)
            return out
        for i, t in enumerate(times):
            start = t - (t - off) % slide
            while start > t - size:
                out.setdefault((start, start + size), []).append(i)
                start -= slide
        return out

    def describe(self) -> str:
        """A stable text for the checkpoint signature."""
        kind = "tumbling" if self.size_ms == self.slide_ms else "sliding"
        return f"{kind}(size={self.size_ms},slide={self.slide_ms},offset={self.offset_ms})"


@dataclasses.dataclass(frozen=True)
class SessionSpec:
    """Session windows: a record at ``t`` opens ``[t, t + gap)``; overlapping sessions of a key merge.

    Two sessions merge when the later one starts at or before the earlier
    one's end (Spark's ``MergingSessionsIterator``: ``start <= currentEnd``).
    Build one with :func:`session`.

    Attributes:
        gap_ms: the inactivity gap that closes a session.
    """

    gap_ms: int

    @property
    def is_session(self) -> bool:
        """``True``: sessions are merged per key, not assigned independently."""
        return True

    def describe(self) -> str:
        """A stable text for the checkpoint signature."""
        return f"session(gap={self.gap_ms})"


def tumbling(size: Duration, *, offset: Duration | None = None) -> WindowSpec:
    """Fixed, non-overlapping windows, like Spark's ``window(ts, "5 minutes")``.

    Args:
        size: window length, e.g. ``"5 minutes"`` or a ``timedelta``.
        offset: shift of window starts from the epoch (Spark's ``startTime``),
            e.g. ``"15 minutes"`` for hourly windows starting at :15; ``None``: none.

    Raises:
        ConfigError: ``size`` is not a positive duration, or ``offset`` is
            negative or not smaller than ``size``.
    """
    size_ms = positive_duration_ms(size, name="tumbling: size")
    return WindowSpec(size_ms, size_ms, _offset(offset, size_ms, "tumbling"))


def sliding(size: Duration, every: Duration, *, offset: Duration | None = None) -> WindowSpec:
    """Overlapping windows of ``size`` starting every ``every``, like ``window(ts, size, slide)``.

    Raises:
        ConfigError: a duration is not positive, ``every`` is larger than
            ``size`` (as Spark: records would fall between windows), or
            ``offset`` is negative or not smaller than ``every``.
    """
    size_ms = positive_duration_ms(size, name="sliding: size")
    slide_ms = positive_duration_ms(every, name="sliding: every")
    if slide_ms > size_ms:
        msg = (f"sliding: every ({every!r}) must not be longer than size ({size!r}); "
               f"records between windows would be lost. Use tumbling() for every == size")
        raise ConfigError(msg)
    return WindowSpec(size_ms, slide_ms, _offset(offset, slide_ms, "sliding"))


def session(gap: Duration) -> SessionSpec:
    """Session windows closed by ``gap`` of inactivity per key, like Spark's ``session_window``.

    Raises:
        ConfigError: ``gap`` is not a positive duration.
    """
    return SessionSpec(positive_duration_ms(gap, name="session: gap"))


def _offset(value: Duration | None, slide_ms: int, what: str) -> int:
    ms = 0 if value is None else parse_duration_ms(value, name=f"{what}: offset")
    if not 0 <= ms < slide_ms:
        msg = f"{what}: offset must be >= 0 and smaller than the window step ({slide_ms} ms); got {value!r}"
        raise ConfigError(msg)
    return ms
