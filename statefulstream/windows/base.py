"""``Aggregator``: the interface of a window aggregate (zero / add / merge / result)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

from statefulstream.errors import ConfigError

Column = str | Callable[[Any], Any] | None
"""A field name, a callable of the record, or ``None`` for the whole record."""


class Aggregator(ABC):
    """One aggregate function over a column; subclass it or use ``windows.aggregator(...)``.

    An aggregator keeps one *accumulator* per window: plain data (numbers,
    strings, lists, bytes) that the state store keeps in msgpack. The
    runtime calls, per window and per batch:

    1. ``zero()`` once, when the window is created;
    2. ``update(acc, rows, times, seqs)`` with the window's new records of the
       batch in arrival order (the default extracts the column, drops
       ``None`` as Spark's aggregates skip nulls, and calls ``add`` with the
       list, once per window and batch);
    3. ``merge(a, b)`` when two session windows join (``a`` is the earlier);
    4. ``result(acc)`` for each output row.

    Every method must be deterministic and must not mutate an accumulator it
    does not return: a replayed batch must give the same state and rows.
    """

    def __init__(self, column: Column = None) -> None:
        self.column = column

    @property
    def column(self) -> Column:
        """The field aggregated (``None``: the whole record)."""
        return self._column

    @column.setter
    def column(self, column: Column) -> None:
        if column is not None and not isinstance(column, str) and not callable(column):
            msg = f"{type(self).__name__}: column must be a field name, a callable or None; got {column!r}"
            raise ConfigError(msg)
        self._column = column
        # Made once, used per window.
        self._getter: Callable[[Any], Any] | None = itemgetter(column) if isinstance(column, str) else None

    @abstractmethod
    def zero(self) -> Any:
        """Return a fresh accumulator for an empty window."""

    @abstractmethod
    def add(self, acc: Any, values: list[Any]) -> Any:
        """Return ``acc`` with ``values`` (non-null column values, arrival order) added."""

    @abstractmethod
    def merge(self, a: Any, b: Any) -> Any:
        """Return the accumulator of both windows' records (``a`` holds the earlier records)."""

    @abstractmethod
    def result(self, acc: Any) -> Any:
        """Return the output value of an accumulator."""

    def values(self, rows: Sequence[Any]) -> list[Any]:
        """Return the non-null column values of ``rows`` (a missing field counts as null)."""
        col, getter = self._column, self._getter
        if getter is not None:  # a field name
            try:  # one C-level pass; a record without the field (or not a mapping) takes the loop below
                vals = list(map(getter, rows))
            except Exception:  # noqa: BLE001 - the loop below gives the same values or raises as it would
                # ``type(r) is dict`` first: the ABC check is slow and records are nearly always dicts.
                vals = [r.get(col) if type(r) is dict or isinstance(r, Mapping) else r[col] for r in rows]
        elif col is None:
            return list(rows)
        else:  # a callable (a field name has its getter)
            vals = list(map(cast(Callable[[Any], Any], col), rows))
        try:  # a C-level check first: ``False`` means no None (``in`` tests identity before ``==``)
            if None not in vals:
                return vals
        except Exception:  # noqa: BLE001 - a value whose == None does not give a bool (an array): filter
            pass
        return [v for v in vals if v is not None]

    def update(self, acc: Any, rows: Sequence[Any], times: Sequence[int], seqs: Sequence[int]) -> Any:
        """Add a window's new records of one batch.

        Args:
            acc: the window's accumulator.
            rows: the records, in arrival order.
            times: their event times (epoch ms).
            seqs: their arrival numbers within the key (increasing across batches).
        """
        vals = self.values(rows)
        return self.add(acc, vals) if vals else acc

    def describe(self) -> str:
        """A stable text naming the function and column, for the checkpoint signature."""
        col = self.column
        name = col if isinstance(col, str) or col is None else getattr(col, "__qualname__", type(col).__name__)
        return f"{type(self).__name__}({name})"

    def __repr__(self) -> str:
        return self.describe()
