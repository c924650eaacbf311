"""Where a record of a batch came from, found only when the record fails.

Records go from the source through stateless steps, event-time extraction,
the late filter and key extraction; each stage may drop or multiply records,
so a record's index changes on the way. Rather than carry a position with
every record (a cost on every record of every batch), each stage that
changes the indexes leaves a note of what it did (the kept indexes, a filter's
verdicts, a ``flat_map``'s output counts). Only when a record fails is its
index walked back through the notes to the source's index, and the source
asked for that record's position (see ``ReadResult.position``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import compress
from typing import Any

SourcePosition = Callable[[int], "Mapping[str, Any] | None"]
"""Index of a record in the source's ``ReadResult.records`` -> its position, or ``None`` if unknown."""


class _Stage:
    """One index-changing stage: output index -> input index, built on first use."""

    __slots__ = ("_build", "_index")

    def __init__(self, build: Callable[[], Sequence[int]]) -> None:
        self._build = build
        self._index: Sequence[int] | None = None

    def origin(self, i: int) -> int:
        if self._index is None:
            self._index = self._build()
        return self._index[i]


class Lineage:
    """Maps the index of a record at the current stage of a batch to its source position.

    >>> lin = Lineage(lambda i: {"offset": 100 + i}, batch_id=7)
    >>> lin.mask([True, False, True, True])       # a filter dropped record 1
    >>> lin.expand([2, 0, 1])                      # a flat_map: 2 outputs, none, 1
    >>> lin.position(2)
    {'offset': 103, 'batch_id': 7}
    """

    __slots__ = ("_source", "_stages", "batch_id")

    def __init__(self, source: SourcePosition, *, batch_id: int) -> None:
        self._source = source
        self._stages: list[_Stage] = []
        self.batch_id = batch_id

    def keep(self, kept: Sequence[int]) -> None:
        """Record a stage whose output ``j`` is its input ``kept[j]``."""
        self._stages.append(_Stage(lambda: kept))

    def mask(self, verdicts: Sequence[Any]) -> None:
        """Record a filter: the inputs with a true verdict are the outputs, in order."""
        self._stages.append(_Stage(lambda: list(compress(range(len(verdicts)), verdicts))))

    def expand(self, counts: Sequence[int]) -> None:
        """Record a ``flat_map``: input ``i`` became ``counts[i]`` consecutive outputs."""
        self._stages.append(_Stage(lambda: [i for i, n in enumerate(counts) for _ in range(n)]))

    def source_index(self, i: int) -> int:
        """Return the index in the source's records of the record now at index ``i``."""
        for stage in reversed(self._stages):
            i = stage.origin(i)
        return i

    def position(self, i: int) -> dict[str, Any]:
        """Return where the record now at index ``i`` was read, with the batch id.

        The source's position (``{"file": ..., "line": ...}``, ``{"topic": ...,
        "partition": ..., "offset": ...}``) when the source gives one, else the
        record's index among the batch's records (``"record_index"``).
        """
        origin = self.source_index(i)
        where = self._source(origin)
        if where is None:
            return {"batch_id": self.batch_id, "record_index": origin}
        return {**where, "batch_id": self.batch_id}
