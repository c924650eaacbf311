"""Batch-at-a-time record operations: stateless steps, key and event-time extraction, grouping.

Each function handles a whole batch in one pass (``map``/list comprehension)
and only falls back to a per-record loop when that pass raises, so bad
records cost time only when they occur. A record that a step cannot handle
becomes a ``DeadLetter``; it is never dropped silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from statefulstream.records import DeadLetter
from statefulstream.timeutil import all_epoch_ms, to_epoch_ms


@dataclasses.dataclass(frozen=True)
class Step:
    """A stateless step before the stateful operator: ``map``, ``filter`` or ``flat_map``."""

    kind: str
    func: Callable[[Any], Any]

    @property
    def name(self) -> str:
        """``kind:function_name`` for messages."""
        return f"{self.kind}:{getattr(self.func, '__name__', 'step')}"


def _dead(reason: str, record: Any, error: str, batch_id: int) -> DeadLetter:
    return DeadLetter(reason, "pipeline", {"batch_id": batch_id}, raw=record, error=error)


def apply_each(func: Callable[[Any], Any], records: list[Any], *, error: str, what: str, batch_id: int,
               dead: list[DeadLetter]) -> tuple[list[Any], list[Any], list[int] | None]:
    """Return ``(kept_records, func(record) for each kept, kept_indexes or None if all kept)``.

    Records for which ``func`` raises go to ``dead`` with ``what`` and the error.
    """
    try:
        return records, list(map(func, records)), None
    except Exception:  # noqa: BLE001 - fall back to find the bad records
        pass
    kept, values, idx = [], [], []
    for i, rec in enumerate(records):
        try:
            value = func(rec)
        except Exception as exc:  # noqa: BLE001 - a bad record is dead-lettered, not fatal
            dead.append(_dead(f"{what}: {type(exc).__name__}: {exc}", rec, error, batch_id))
            continue
        kept.append(rec)
        values.append(value)
        idx.append(i)
    return kept, values, idx


def run_steps(steps: Iterable[Step], records: list[Any], *, batch_id: int, dead: list[DeadLetter]) -> list[Any]:
    """Apply the stateless steps in order; a record a step raises on is dead-lettered."""
    for step in steps:
        kind, func = step.kind, step.func
        what = f"step {step.name} raised"
        if kind == "map":
            _, records, _ = apply_each(func, records, error="step", what=what, batch_id=batch_id, dead=dead)
        elif kind == "filter":
            kept, verdicts, _ = apply_each(func, records, error="step", what=what, batch_id=batch_id, dead=dead)
            records = [r for r, ok in zip(kept, verdicts, strict=True) if ok]
        else:
            _, outs, _ = apply_each(_expand(func), records, error="step", what=what, batch_id=batch_id, dead=dead)
            records = [y for out in outs for y in out]
    return records


def _expand(func: Callable[[Any], Iterable[Any]]) -> Callable[[Any], list[Any]]:
    """Make a flat_map function return a list, so a failing generator fails inside ``apply_each``."""
    return lambda record: list(func(record))


def event_times_ms(getter: Callable[[Any], Any], records: list[Any], *, batch_id: int,
                   dead: list[DeadLetter]) -> tuple[list[Any], list[int]]:
    """Return the records with a valid event time and their times in epoch ms."""
    try:
        raw = list(map(getter, records))
        return records, raw if all_epoch_ms(raw) else list(map(to_epoch_ms, raw))
    except Exception:  # noqa: BLE001 - fall back to find the bad records
        pass
    kept, times, _ = apply_each(lambda r: to_epoch_ms(getter(r)), records, error="event_time",
                                what="missing or bad event time", batch_id=batch_id, dead=dead)
    return kept, times


def group_by_key(keys: list[Hashable], records: list[Any], *, batch_id: int,
                 dead: list[DeadLetter]) -> dict[Hashable, list[Any]]:
    """Group records by key, keeping arrival order within each key."""
    groups: dict[Hashable, list[Any]] = {}
    get = groups.get
    try:
        for key, rec in zip(keys, records, strict=True):
            group = get(key)
            if group is None:
                groups[key] = [rec]
            else:
                group.append(rec)
        return groups
    except TypeError:  # an unhashable key somewhere: redo carefully
        groups.clear()
    for key, rec in zip(keys, records, strict=True):
        try:
            groups.setdefault(key, []).append(rec)
        except TypeError as exc:
            dead.append(_dead(f"group key {key!r} is not hashable: {exc}", rec, "key", batch_id))
    return groups


def sorted_keys(keys: Iterable[Hashable]) -> list[Hashable]:
    """Return keys in a deterministic order: natural order, or by (type, repr) for mixed types."""
    keys = list(keys)
    try:
        return sorted(keys)  # type: ignore[type-var]  # TypeError below handles unorderable keys
    except TypeError:
        return sorted(keys, key=lambda k: (type(k).__name__, repr(k)))
