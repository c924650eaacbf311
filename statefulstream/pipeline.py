"""Batch-at-a-time record operations: stateless steps, key and event-time extraction, grouping.

Each function handles a whole batch in one pass (``map``/list comprehension)
and only falls back to a per-record loop when that pass raises, so bad
records cost time only when they occur. A record that a step cannot handle
becomes a ``DeadLetter`` positioned where the source read it (see
``statefulstream.lineage``); it is never dropped silently. Every function
that drops or multiplies records notes it in the batch's ``Lineage``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from itertools import compress
from typing import Any, NamedTuple

from statefulstream.lineage import Lineage
from statefulstream.records import DeadLetter, GroupValues
from statefulstream.timeutil import MAX_TIME_MS, MIN_TIME_MS, all_epoch_ms, format_ms, to_epoch_ms


class StepKind(enum.Enum):
    """What a stateless step does with each record."""

    MAP = "map"
    """The record becomes ``func(record)``."""
    FILTER = "filter"
    """The record is kept when ``func(record)`` is true."""
    FLAT_MAP = "flat_map"
    """The record becomes the records of the iterable ``func(record)``."""


@dataclasses.dataclass(frozen=True)
class Step:
    """A stateless step before the stateful operator."""

    kind: StepKind
    func: Callable[[Any], Any]

    @property
    def name(self) -> str:
        """``kind:function_name`` for messages."""
        return f"{self.kind.value}:{getattr(self.func, '__name__', 'step')}"


def apply_each(func: Callable[[Any], Any], records: list[Any], *, error: str, what: str, lineage: Lineage,
               dead: list[DeadLetter]) -> tuple[list[Any], list[Any]]:
    """Return ``(kept_records, func(record) for each kept)``.

    Records for which ``func`` raises go to ``dead`` with ``what``, the error
    and their source position.
    """
    try:
        return records, list(map(func, records))
    except Exception:  # noqa: BLE001 - fall back to find the bad records
        pass
    kept, values, idx = [], [], []
    for i, rec in enumerate(records):
        try:
            value = func(rec)
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, not fatal
            dead.append(DeadLetter(f"{what}: {type(exc).__name__}: {exc}", "pipeline", lineage.position(i),
                                   raw=rec, error=error))
            continue
        kept.append(rec)
        values.append(value)
        idx.append(i)
    lineage.keep(idx)
    return kept, values


def run_steps(steps: Iterable[Step], records: list[Any], *, lineage: Lineage, dead: list[DeadLetter]) -> list[Any]:
    """Apply the stateless steps in order; a record a step raises on is dead-lettered."""
    for step in steps:
        kind, func = step.kind, step.func
        what = f"step {step.name} raised"
        if kind is StepKind.MAP:
            _, records = apply_each(func, records, error="step", what=what, lineage=lineage, dead=dead)
        elif kind is StepKind.FILTER:
            kept, verdicts = apply_each(func, records, error="step", what=what, lineage=lineage, dead=dead)
            lineage.mask(verdicts)
            records = list(compress(kept, verdicts))
        else:
            _, outs = apply_each(_expand(func), records, error="step", what=what, lineage=lineage, dead=dead)
            lineage.expand(list(map(len, outs)))
            records = [y for out in outs for y in out]
    return records


def _expand(func: Callable[[Any], Iterable[Any]]) -> Callable[[Any], list[Any]]:
    """Make a flat_map function return a list, so a failing generator fails inside ``apply_each``."""
    return lambda record: list(func(record))


class EventTimes(NamedTuple):
    """The records of a batch that have a usable event time, their times in epoch ms, and the range of those."""

    records: list[Any]
    times: list[int]
    earliest: int | None  # None when there are no records
    latest: int | None


def event_times_ms(getter: Callable[[Any], Any], records: list[Any], *, lineage: Lineage, dead: list[DeadLetter],
                   batch_ts_ms: int, max_ahead_ms: int | None = None) -> EventTimes:
    """Return the records with a usable event time, their times in epoch ms and the earliest and latest.

    A record whose event time is missing, not a time, or outside the
    representable range (``timeutil.MIN_TIME_MS``..``MAX_TIME_MS``) is
    dead-lettered as ``"event_time"``; with ``max_ahead_ms``, one more than
    that ahead of ``batch_ts_ms`` (the batch's processing time) as
    ``"event_time_ahead"``.
    """
    latest = MAX_TIME_MS if max_ahead_ms is None else min(MAX_TIME_MS, batch_ts_ms + max_ahead_ms)
    try:
        raw = list(map(getter, records))
        times = raw if all_epoch_ms(raw) else list(map(to_epoch_ms, raw))
        if not times:
            return EventTimes(records, times, None, None)
        lo, hi = min(times), max(times)
        if lo >= MIN_TIME_MS and hi <= latest:
            return EventTimes(records, times, lo, hi)
    except Exception:  # noqa: BLE001 - fall back to find the bad records
        pass
    records, times = apply_each(lambda r: to_epoch_ms(getter(r)), records, error="event_time",
                                what="missing or bad event time", lineage=lineage, dead=dead)
    if times and max(times) > latest:
        verdicts = [t <= latest for t in times]
        limit = f"{max_ahead_ms} ms ahead of the batch's processing time {format_ms(batch_ts_ms)}"
        for i, (rec, t) in enumerate(zip(records, times, strict=True)):
            if t > latest:
                reason = f"event time {format_ms(t)} ({t} ms) is more than {limit} (max_event_time_ahead)"
                dead.append(DeadLetter(reason, "pipeline", lineage.position(i), raw=rec, error="event_time_ahead"))
        lineage.mask(verdicts)
        records, times = list(compress(records, verdicts)), list(compress(times, verdicts))
    return EventTimes(records, times, min(times, default=None), max(times, default=None))


def group_by_key(keys: list[Hashable], records: list[Any], *, lineage: Lineage,
                 dead: list[DeadLetter]) -> dict[Hashable, list[Any]]:
    """Group records by key, keeping arrival order within each key (each group a ``GroupValues``)."""
    grouped: defaultdict[Hashable, list[Any]] = defaultdict(GroupValues)
    try:
        for key, rec in zip(keys, records, strict=True):
            grouped[key].append(rec)
        grouped.default_factory = None  # a plain dict from here on: a missing key is not added
        return grouped
    except TypeError:  # an unhashable key somewhere: redo carefully
        pass
    groups: dict[Hashable, list[Any]] = {}
    for i, (key, rec) in enumerate(zip(keys, records, strict=True)):
        try:
            groups.setdefault(key, GroupValues()).append(rec)
        except TypeError as exc:
            dead.append(DeadLetter(f"group key {key!r} is not hashable: {exc}", "pipeline", lineage.position(i),
                                   raw=rec, error="key"))
    return groups


def sorted_keys(keys: Iterable[Hashable]) -> list[Hashable]:
    """Return keys in a deterministic order: natural order, or by (type, repr) for mixed types."""
    keys = list(keys)
    try:
        return sorted(keys)  # type: ignore[type-var]  # TypeError below handles unorderable keys
    except TypeError:
        return sorted(keys, key=lambda k: (type(k).__name__, repr(k)))
