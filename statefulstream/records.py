"""Values every part of the runtime passes around: source positions, dead letters, state changes,
a key's values in a handler call.

Sources, sinks, the executor and the checkpoint depend on this module, not on
each other.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

Offsets = Mapping[str, int]
"""Partition name -> next position to read (exclusive end of what was read)."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, with why and where it came from.

    Attributes:
        reason: what was wrong, for a person (``"line is not valid JSON: ..."``).
        source: the source that produced it (``"file"``, ``"kafka"``, or ``"pipeline"``).
        position: where it was read (``{"file": ..., "line": 17}``,
            ``{"topic": ..., "partition": 0, "offset": 42}``); a record that
            failed after decoding (``source="pipeline"``) has the same plus
            ``batch_id`` (see ``statefulstream.lineage``).
        raw: the record as read (bytes or text), or the decoded record when the
            failure came later (key or event time missing).
        error: a short machine-readable kind (``"decode"``, ``"schema"``,
            ``"event_time"``, ``"key"``, ``"sink"``); a metrics label.
    """

    reason: str
    source: str
    position: Mapping[str, Any]
    raw: Any = None
    error: str = "decode"

    def to_row(self, batch_id: int) -> dict[str, Any]:
        """Return a JSON-friendly row for dead-letter sinks."""
        raw = self.raw
        if isinstance(raw, (bytes, bytearray)):
            raw = raw.decode("utf-8", errors="backslashreplace")
        return {"batch_id": batch_id, "error": self.error, "reason": self.reason,
                "source": self.source, "position": dict(self.position), "raw": raw}


NO_TIMEOUT_MS = -1
"""The timeout deadline (epoch ms) of a group with no timeout set: the one spelling, everywhere."""

NO_WATERMARK_MS = -1
"""The watermark (epoch ms) before any event time was seen, or of an operator without one (Spark's ``NO_TIMESTAMP``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class StateChange:
    """One changed state row, as a ``state_sink`` receives it after each batch.

    Attributes:
        key: the group key.
        value: the new state value (``None`` when ``removed``).
        removed: the group no longer has state (delete it downstream).
        timeout_ms: the group's timeout deadline, or ``NO_TIMEOUT_MS``.
    """

    key: Any
    value: Any
    removed: bool
    timeout_ms: int = NO_TIMEOUT_MS


class GroupValues(list):  # type: ignore[type-arg]  # holds any record type
    """One key's values in a handler call: a ``list`` that is also an iterator.

    Index it, ``len()`` it and loop over it as a list (every ``for`` loop sees
    all values when ``next()`` was not called). Ported PySpark code that
    consumes the values with ``next(values)`` works too: ``next`` returns the
    values in arrival order and raises ``StopIteration`` after the last, and a
    ``for`` loop after some ``next()`` calls continues with the values not yet
    taken, as on PySpark's iterator.

    >>> values = GroupValues([1, 2, 3])
    >>> next(values), values[0], len(values)
    (1, 1, 3)
    >>> [v for v in values]
    [2, 3]
    """

    # One slot, set by the first next(): until then the object is a list with no __dict__ (cheaper to make
    # and free, once per key and batch), iterated by list's own C iterator.
    __slots__ = ("_taken",)
    _taken: int

    def __next__(self) -> Any:
        try:
            taken = self._taken
        except AttributeError:  # no next() yet
            taken = 0
        if taken >= len(self):
            raise StopIteration
        if not taken:  # from now on, loops start after the values next() took
            self.__class__ = _PartlyTakenValues
        self._taken = taken + 1
        return self[taken]


class _PartlyTakenValues(GroupValues):
    """A ``GroupValues`` that ``next()`` has taken values from: iterating it skips them."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(list.__iter__(self), self._taken, None)
