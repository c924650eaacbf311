"""The aggregate functions of windowed aggregations, by Spark's names, and user-defined ones.

Each returns an :class:`~statefulstream.windows.base.Aggregator` (its
docstring is the contract: call order, determinism, accumulators as data).

>>> agg = avg("latency")
>>> acc = agg.update(agg.zero(), [{"latency": 10}, {"latency": None}, {"latency": 20}], [1, 2, 3], [0, 1, 2])
>>> agg.result(acc)
15.0
"""

from __future__ import annotations

import builtins
import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from statefulstream.errors import ConfigError
from statefulstream.windows.base import Aggregator, Column
from statefulstream.windows.sketch import ApproxCountDistinct


class Count(Aggregator):
    """Number of records (``column=None``) or of non-null values of a column."""

    def zero(self) -> int:
        return 0

    def add(self, acc: int, values: list[Any]) -> int:
        return acc + len(values)

    def update(self, acc: int, rows: Sequence[Any], times: Sequence[int], seqs: Sequence[int]) -> int:
        """Count the rows (or their non-null column values) without copying them."""
        return acc + len(rows) if self._column is None else super().update(acc, rows, times, seqs)

    def merge(self, a: int, b: int) -> int:
        return a + b

    def result(self, acc: int) -> int:
        return acc


class Sum(Aggregator):
    """Sum of non-null values; ``None`` for a window without any (as Spark)."""

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, values: list[Any]) -> Any:
        total = builtins.sum(values)
        return total if acc is None else acc + total

    def update(self, acc: Any, rows: Sequence[Any], times: Sequence[int], seqs: Sequence[int]) -> Any:
        """Sum a field in one pass when every row has a number there; else the general path (nulls skipped)."""
        getter = self._getter
        if getter is not None and rows:
            try:  # a null, a missing field or a value that does not add raises: the general path decides
                total = builtins.sum(map(getter, rows))
            except Exception:  # noqa: BLE001 - the general path gives the same result or raises as it would
                pass
            else:
                return total if acc is None else acc + total
        return super().update(acc, rows, times, seqs)

    def merge(self, a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a + b

    def result(self, acc: Any) -> Any:
        return acc


class Avg(Aggregator):
    """Mean of non-null values as a float; ``None`` without any. Accumulator ``[count, sum]``."""

    def zero(self) -> list[Any]:
        return [0, 0]

    def add(self, acc: list[Any], values: list[Any]) -> list[Any]:
        return [acc[0] + len(values), acc[1] + builtins.sum(values)]

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: list[Any]) -> float | None:
        return acc[1] / acc[0] if acc[0] else None


class _Extreme(Aggregator):
    _pick: Callable[..., Any]

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, values: list[Any]) -> Any:
        best = type(self)._pick(values)
        return best if acc is None else type(self)._pick(acc, best)

    def merge(self, a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else type(self)._pick(a, b)

    def result(self, acc: Any) -> Any:
        return acc


class Min(_Extreme):
    """Smallest non-null value; ``None`` without any."""

    _pick = builtins.min


class Max(_Extreme):
    """Largest non-null value; ``None`` without any."""

    _pick = builtins.max


class Variance(Aggregator):
    """Variance or standard deviation, sample (Spark's ``variance``/``stddev``) or population.

    The accumulator is ``[n, mean, m2]`` (Welford); a batch is folded in with
    Chan et al.'s parallel formula, which is also ``merge``. ``None`` is
    returned when undefined (no values; one value for the sample forms), as
    Spark 3+ returns null.
    """

    def __init__(self, column: Column, *, sample: bool = True, sqrt: bool = False) -> None:
        super().__init__(column)
        self.sample = sample
        self.sqrt = sqrt

    def zero(self) -> list[Any]:
        return [0, 0.0, 0.0]

    def add(self, acc: list[Any], values: list[Any]) -> list[Any]:
        n = len(values)
        mean = math.fsum(values) / n
        m2 = math.fsum((x - mean) ** 2 for x in values)
        return self.merge(acc, [n, mean, m2])

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        na, nb = a[0], b[0]
        if not na:
            return list(b)
        if not nb:
            return list(a)
        n = na + nb
        delta = b[1] - a[1]
        return [n, a[1] + delta * nb / n, a[2] + b[2] + delta * delta * na * nb / n]

    def result(self, acc: list[Any]) -> float | None:
        n, _, m2 = acc
        dof = n - 1 if self.sample else n
        if dof <= 0:
            return None
        var = builtins.max(m2, 0.0) / dof
        return math.sqrt(var) if self.sqrt else var

    def describe(self) -> str:
        kind = ("stddev" if self.sqrt else "variance") + ("_samp" if self.sample else "_pop")
        return f"{kind}:{super().describe()}"


class _Positional(Aggregator):
    """First or last value by event time, ties broken by arrival. Accumulator ``[time, seq, value]``."""

    _last: bool

    def __init__(self, column: Column, *, ignore_nulls: bool = False) -> None:
        super().__init__(column)
        self.ignore_nulls = ignore_nulls

    def zero(self) -> Any:
        return None

    def add(self, acc: Any, values: list[Any]) -> Any:
        msg = f"{type(self).__name__} needs event times; the runtime calls update(), not add()"
        raise TypeError(msg)

    def update(self, acc: Any, rows: Sequence[Any], times: Sequence[int], seqs: Sequence[int]) -> Any:
        col = self.column
        if col is None:
            vals = list(rows)
        elif isinstance(col, str):
            vals = [r.get(col) if isinstance(r, Mapping) else r[col] for r in rows]
        else:
            vals = list(map(col, rows))
        cands = [[t, s, v] for t, s, v in zip(times, seqs, vals, strict=True) if v is not None or not self.ignore_nulls]
        if not cands:
            return acc
        pick = builtins.max if self._last else builtins.min
        best = pick(cands, key=lambda c: (c[0], c[1]))
        return best if acc is None else self.merge(acc, best)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        later = (b[0], b[1]) > (a[0], a[1])
        return b if later == self._last else a

    def result(self, acc: Any) -> Any:
        return None if acc is None else acc[2]


class First(_Positional):
    """Value of the record with the earliest event time (the first to arrive among ties)."""

    _last = False


class Last(_Positional):
    """Value of the record with the latest event time (the last to arrive among ties)."""

    _last = True


class CollectList(Aggregator):
    """Non-null values in arrival order (merged sessions: the earlier session's first)."""

    def zero(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], values: list[Any]) -> list[Any]:
        return acc + values

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)


class CollectSet(Aggregator):
    """Distinct non-null values in first-seen order. Values must be hashable (str, numbers, tuples)."""

    def zero(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], values: list[Any]) -> list[Any]:
        seen = set(acc)
        out = list(acc)
        for v in values:
            if v not in seen:
                seen.add(v)
                out.append(v)
        return out

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return self.add(a, b)

    def result(self, acc: list[Any]) -> list[Any]:
        return list(acc)


class UserAggregator(Aggregator):
    """An aggregator from four functions; see :func:`aggregator`."""

    def __init__(self, *, zero: Any, add: Callable[[Any, Any], Any], merge: Callable[[Any, Any], Any],
                 result: Callable[[Any], Any] | None, column: Column, name: str | None) -> None:
        super().__init__(column)
        for what, fn in (("add", add), ("merge", merge), ("result", result)):
            if fn is not None and not callable(fn):
                msg = f"aggregator: {what} must be a function; got {fn!r}"
                raise ConfigError(msg)
        self._zero, self._add, self._merge, self._result = zero, add, merge, result
        self.name = name or getattr(add, "__qualname__", "aggregator")

    def zero(self) -> Any:
        return self._zero() if callable(self._zero) else copy.deepcopy(self._zero)

    def add(self, acc: Any, values: list[Any]) -> Any:
        fn = self._add
        for v in values:
            acc = fn(acc, v)
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return self._merge(a, b)

    def result(self, acc: Any) -> Any:
        return acc if self._result is None else self._result(acc)

    def describe(self) -> str:
        return f"{self.name}:{super().describe()}"


# --- the functions users call (Spark's names)

def count(column: Column = None) -> Count:
    """Records in the window (``count()``), or non-null values of ``column``."""
    return Count(column)


def sum(column: Column) -> Sum:  # noqa: A001 - Spark's name
    """Sum of the non-null values of ``column``."""
    return Sum(column)


def avg(column: Column) -> Avg:
    """Mean of the non-null values of ``column`` (float)."""
    return Avg(column)


mean = avg


def min(column: Column) -> Min:  # noqa: A001 - Spark's name
    """Smallest non-null value of ``column``."""
    return Min(column)


def max(column: Column) -> Max:  # noqa: A001 - Spark's name
    """Largest non-null value of ``column``."""
    return Max(column)


def variance(column: Column) -> Variance:
    """Sample variance (Spark's ``variance``/``var_samp``)."""
    return Variance(column)


def var_pop(column: Column) -> Variance:
    """Population variance."""
    return Variance(column, sample=False)


def stddev(column: Column) -> Variance:
    """Sample standard deviation (Spark's ``stddev``/``stddev_samp``)."""
    return Variance(column, sqrt=True)


def stddev_pop(column: Column) -> Variance:
    """Population standard deviation."""
    return Variance(column, sample=False, sqrt=True)


def first(column: Column, *, ignore_nulls: bool = False) -> First:
    """Value of ``column`` in the record with the earliest event time (arrival breaks ties)."""
    return First(column, ignore_nulls=ignore_nulls)


def last(column: Column, *, ignore_nulls: bool = False) -> Last:
    """Value of ``column`` in the record with the latest event time (arrival breaks ties)."""
    return Last(column, ignore_nulls=ignore_nulls)


def collect_list(column: Column) -> CollectList:
    """Non-null values of ``column`` in arrival order."""
    return CollectList(column)


def collect_set(column: Column) -> CollectSet:
    """Distinct non-null values of ``column`` in first-seen order."""
    return CollectSet(column)


def approx_count_distinct(column: Column, rsd: float = 0.05) -> ApproxCountDistinct:
    """Approximate distinct count (HyperLogLog; relative standard deviation about ``rsd``)."""
    return ApproxCountDistinct(column, rsd=rsd)


def aggregator(*, zero: Any, add: Callable[[Any, Any], Any], merge: Callable[[Any, Any], Any],
               result: Callable[[Any], Any] | None = None, column: Column = None,
               name: str | None = None) -> UserAggregator:
    """A user-defined aggregate from ``zero``/``add``/``merge``/``result``.

    Args:
        zero: the empty accumulator, or a function returning a fresh one. It
            must be msgpack-able data (numbers, strings, lists, dicts, bytes).
        add: ``add(acc, value) -> acc`` for each non-null value, arrival order.
        merge: ``merge(a, b) -> acc`` joining two windows (sessions).
        result: ``result(acc) -> output``; the accumulator itself if omitted.
        column: the field given to ``add`` (``None``: the whole record).
        name: a stable name for the checkpoint signature (default: ``add``'s name).

    >>> sum_sq = aggregator(zero=0, add=lambda acc, v: acc + v * v, merge=lambda a, b: a + b,
    ...                     column="v", name="sum_of_squares")
    >>> sum_sq.result(sum_sq.update(sum_sq.zero(), [{"v": 3}, {"v": 4}], [0, 0], [0, 1]))
    25
    """
    return UserAggregator(zero=zero, add=add, merge=merge, result=result, column=column, name=name)


def returns_accumulator(agg: Aggregator) -> bool:
    """Whether ``agg.result(acc)`` is ``acc`` itself (count, sum, min, max, not overridden): output rows take the
    accumulator as it is."""
    return type(agg).result in _RESULT_IS_ACCUMULATOR


_RESULT_IS_ACCUMULATOR = {Count.result, Sum.result, _Extreme.result}
