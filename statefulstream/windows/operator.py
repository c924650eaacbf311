"""Windowed aggregation as a stateful operator: the library writes the handler.

``build_aggregation`` returns an ordinary ``StatefulOperator`` whose handler
is a :class:`WindowAggregation`, so windows go through the same executor,
state store, timer index and checkpoint as any ``flat_map_groups_with_state``:

* group key = the aggregation key; state = ``[arrivals, windows]``: the
  key's arrival counter (for ``first``/``last`` ties) and its open windows,
  each ``[start, end, acc_1, ..., acc_n]`` (older checkpoints hold the map
  ``{"n": arrivals, "w": windows}``, which is read as well);
* timeout = event time at the earliest open window end (``end - 1``, since
  timers fire on ``deadline < watermark`` and windows close on
  ``end <= watermark``), so closing windows costs O(closed windows) through
  the ordered timer index, never a scan of all keys;
* late rows (event time ``<=`` the previous batch's watermark) are dropped
  and counted by the executor before the handler sees them.

Output modes, as Spark's streaming aggregation (``StateStoreSaveExec``):
``append`` emits a window once, when ``end <= watermark``, then drops it;
``update`` emits the windows changed by the batch and silently drops windows
behind the watermark; ``complete`` emits every window of every key each
trigger and never drops state (O(state) per trigger; see docs/windows.md).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from operator import itemgetter, methodcaller, sub
from typing import Any

from statefulstream.durations import Duration, parse_duration_ms
from statefulstream.errors import ConfigError
from statefulstream.operator import StatefulOperator, as_sinks, event_time_ahead_ms, field_getter
from statefulstream.options import GroupStateTimeout, OutputMode
from statefulstream.sink import Sink
from statefulstream.state.group_state import GroupState
from statefulstream.timeutil import all_epoch_ms, to_epoch_ms
from statefulstream.windows.aggregators import Aggregator, returns_accumulator
from statefulstream.windows.specs import SessionSpec, WindowSpec

_FIXED = 2  # accumulators start at this index of a window list [start, end, acc...]
_start, _end = itemgetter(0), itemgetter(1)  # of a window list
_zero = methodcaller("zero")  # of an aggregator
RESERVED_FIELDS = ("window_start", "window_end")
"""Output fields every window row carries (epoch ms, end exclusive)."""


class WindowAggregation:
    """The handler of a windowed aggregation: ``(key, values, state) -> rows``.

    Called by the executor once per key with data, once per key whose
    earliest window end the watermark has reached (timeout call), and in
    complete mode once per stored key every batch. Deterministic: the same
    values, state and watermark give the same rows and state on replay.

    Args:
        key_fields: turns a group key into the output's key fields.
        event_time: extracts the raw event time of a record.
        window: the window spec.
        aggs: output field -> aggregator, in output order.
        mode: the output mode.
        has_watermark: whether windows close (append/update with a watermark).
    """

    def __init__(self, *, key_fields: Callable[[Any], dict[str, Any]], event_time: Callable[[Any], Any],
                 window: WindowSpec | SessionSpec, aggs: Mapping[str, Aggregator], mode: OutputMode,
                 has_watermark: bool) -> None:
        self.key_fields = key_fields
        self.event_time = event_time
        self.window = window
        self.names = list(aggs)
        self.aggs = list(aggs.values())
        self._updates = [(i, agg.update) for i, agg in enumerate(self.aggs, _FIXED)]  # bound once, used per window
        self._results = (None if all(map(returns_accumulator, self.aggs))
                         else [(name, agg.result) for name, agg in aggs.items()])
        self.mode = mode
        self._append, self._update = mode is OutputMode.APPEND, mode is OutputMode.UPDATE  # read once per call
        self.closes = has_watermark and mode is not OutputMode.COMPLETE
        self._gap = window.gap_ms if isinstance(window, SessionSpec) else None
        self.__name__ = "aggregate"

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must agree with: window and aggregates (names and functions)."""
        return {"window": self.window.describe(),
                "aggs": {name: agg.describe() for name, agg in zip(self.names, self.aggs, strict=True)}}

    def __call__(self, key: Hashable, values: list[Any], state: GroupState[Any]) -> list[dict[str, Any]]:
        stored = state.get_option()
        # The stored windows, by start; their ends are in the same order (sessions are disjoint, fixed
        # windows have one size), so the windows the watermark closes are always the first ones.
        if stored is None:
            seq, windows = 0, []
        elif type(stored) is list:
            seq, windows = stored
        else:  # the older layout: a map, whose keys msgpack wrote and read with every row
            seq, windows = stored["n"], stored["w"]
        changed: Collection[int] = ()
        if values:
            raw = list(map(self.event_time, values))
            times = raw if all_epoch_ms(raw) else list(map(to_epoch_ms, raw))
            if self._gap is not None:  # the runs' shortcut, else the general sweep
                windows, changed = (self._in_runs(windows, values, times, seq, self._gap)
                                    or self._merge_sessions(windows, values, times, seq, self._gap))
            else:
                windows, changed = self._add_fixed(windows, values, times, seq)
            seq += len(values)
        closed: list[list[Any]] = []
        if self.closes and windows:
            wm = state.get_current_watermark_ms()
            if windows[0][1] <= wm:
                n = bisect_right(windows, wm, key=_end)
                closed, windows = windows[:n], windows[n:]
        if self._append:
            emit = closed
        elif self._update:
            emit = [w for w in [*closed, *windows] if w[0] in changed]
        else:
            emit = windows
        if changed or closed:
            if windows:
                state.update([seq, windows])
            else:
                state.remove()
        if self.closes and windows:
            # Fires on ``deadline < watermark``, i.e. exactly when ``end <= watermark``.
            state.set_timeout_timestamp(max(windows[0][1] - 1, 1))
        return [self._row(key, w) for w in emit] if emit else []  # most calls emit nothing

    def _row(self, key: Hashable, window: list[Any]) -> dict[str, Any]:
        row = self.key_fields(key)
        row["window_start"], row["window_end"] = window[0], window[1]
        if self._results is None:  # every result is its accumulator: no call per aggregate
            row.update(zip(self.names, window[_FIXED:], strict=True))
        else:
            for i, (name, result) in enumerate(self._results, _FIXED):
                row[name] = result(window[i])
        return row

    def _add_rows(self, window: list[Any], values: list[Any], times: list[int], seq0: int,
                  idxs: Sequence[int]) -> None:
        seqs: Sequence[int]
        if len(idxs) == len(values):  # every record of the call (idxs ascending): the common case
            rows, ts, seqs = values, times, range(seq0, seq0 + len(values))
        elif type(idxs) is range:  # consecutive records (arrival order is event-time order): slices
            first, stop = idxs.start, idxs.stop
            rows, ts, seqs = values[first:stop], times[first:stop], range(seq0 + first, seq0 + stop)
        else:
            rows = [values[i] for i in idxs]
            ts = [times[i] for i in idxs]
            seqs = [seq0 + i for i in idxs]
        for i, update in self._updates:
            window[i] = update(window[i], rows, ts, seqs)

    def _new_window(self, start: int, end: int, old: list[Any] | None = None) -> list[Any]:
        """A window ``[start, end, accumulators...]``: new (``zero()``), or continuing the stored window ``old``
        with its accumulators (the window was created when ``old`` was; only joining two windows merges)."""
        if old is not None:
            return [start, end, *old[_FIXED:]]
        return [start, end, *map(_zero, self.aggs)]

    def _add_fixed(self, windows: list[list[Any]], values: list[Any], times: list[int],
                   seq0: int) -> tuple[list[list[Any]], set[int]]:
        assert isinstance(self.window, WindowSpec)
        buckets = self.window.assign(times)
        by_start = {w[0]: w for w in windows}
        for (start, end), idxs in buckets.items():
            window = by_start.get(start)
            if window is None:
                window = by_start[start] = self._new_window(start, end)
            self._add_rows(window, values, times, seq0, idxs)
        if len(by_start) > len(windows):  # new windows: put them in start order
            windows = sorted(by_start.values(), key=_start)
        return windows, {start for start, _ in buckets}

    def _merge_sessions(self, windows: list[list[Any]], values: list[Any], times: list[int], seq0: int,
                        gap: int) -> tuple[list[list[Any]], set[int]]:
        """Sweep stored sessions and new records by start; join those with ``start <= current end``."""
        n_stored, next_stored = len(windows), 0
        # Sessions being formed: [start, end, stored windows, record indexes], in start order.
        groups: list[list[Any]] = []
        cur: list[Any] = [None, None, [], []]

        def join(start: int, end: int) -> list[Any]:
            nonlocal cur
            if groups and start <= cur[1]:
                if end > cur[1]:
                    cur[1] = end
            else:
                cur = [start, end, [], []]
                groups.append(cur)
            return cur

        # Records by event time (arrival order on ties); a stored session goes first on an equal start.
        for i in sorted(range(len(times)), key=times.__getitem__):
            t = times[i]
            while next_stored < n_stored and windows[next_stored][0] <= t:
                w = windows[next_stored]
                join(w[0], w[1])[2].append(w)
                next_stored += 1
            end = t + gap
            if groups and t <= cur[1]:  # join(t, end), inlined: this runs once per record
                if end > cur[1]:
                    cur[1] = end
            else:
                cur = [t, end, [], []]
                groups.append(cur)
            cur[3].append(i)
        for w in windows[next_stored:]:
            join(w[0], w[1])[2].append(w)
        merged: list[list[Any]] = []
        changed: set[int] = set()
        for start, end, stored, idxs in groups:
            if not idxs and len(stored) == 1:
                merged.append(stored[0])
                continue
            window = self._new_window(start, end, stored[0] if stored else None)
            for old in stored[1:]:  # in start order: earlier records first
                for i, agg in enumerate(self.aggs, _FIXED):
                    window[i] = agg.merge(window[i], old[i])
            if idxs:
                self._add_rows(window, values, times, seq0, sorted(idxs))
            merged.append(window)
            changed.add(start)
        return merged, changed

    def _in_runs(self, windows: list[list[Any]], values: list[Any], times: list[int], seq0: int,
                 gap: int) -> tuple[list[list[Any]], set[int]] | None:
        """The sweep's result for its common case, with a step per run of records; ``None`` for any other.

        The common case: no record of the call is before the start of the
        key's latest open session, so the earlier ones (disjoint from it)
        stay as they are. In event time, the records form runs (split where
        two neighbours are more than the gap apart); a run joins the session
        before it when it starts within that session's end, the latest open
        one included. The aggregators get the same calls as in the sweep.
        """
        ts = sorted(times)
        latest = windows[-1] if windows else None
        if latest is not None and latest[0] > ts[0]:
            return None
        # Where a run ends: no cut within a span of one gap, and none in most calls (one run).
        cuts = [i for i, step in enumerate(map(sub, ts[1:], ts), 1) if step > gap] if ts[-1] - ts[0] > gap else []
        if not cuts:
            return self._one_run(windows, latest, values, times, seq0, ts[0], ts[-1] + gap)
        # Sessions formed: [start, end, first and stop position in ts, the stored session it continues].
        groups: list[list[Any]] = []
        if latest is not None:
            groups.append([latest[0], latest[1], 0, 0, latest])
        for first, stop in zip([0, *cuts], [*cuts, len(ts)], strict=True):
            start, end = ts[first], ts[stop - 1] + gap
            if groups and start <= groups[-1][1]:
                cur = groups[-1]
                cur[1], cur[3] = max(cur[1], end), stop
            else:
                groups.append([start, end, first, stop, None])
        merged = windows[:-1]  # the earlier sessions, as they were
        order: list[int] | None = None
        in_order = ts == times  # arrival order is event-time order (the usual case): a session's records are a range
        changed: set[int] = set()
        for start, end, first, stop, old in groups:
            if first == stop:  # the latest stored session, which no record joined
                merged.append(old)
                continue
            window = self._new_window(start, end, old)
            idxs: Sequence[int] = range(first, stop)
            if stop - first < len(times) and not in_order:  # arrival order within the session, as the sweep's
                order = order or sorted(range(len(times)), key=times.__getitem__)
                idxs = sorted(order[first:stop])
            self._add_rows(window, values, times, seq0, idxs)
            merged.append(window)
            changed.add(start)
        return merged, changed

    def _one_run(self, windows: list[list[Any]], latest: list[Any] | None, values: list[Any], times: list[int],
                 seq0: int, start: int, end: int) -> tuple[list[list[Any]], set[int]]:
        """:meth:`_in_runs` when the records form one run ``[start, end)``: it continues the latest session
        or follows it."""
        if latest is not None and start <= latest[1]:
            start = latest[0]
            window = self._new_window(start, max(latest[1], end), latest)
            windows = windows[:-1]
        else:
            window = self._new_window(start, end)
        self._add_rows(window, values, times, seq0, range(len(values)))
        return [*windows, window], {start}


@dataclasses.dataclass
class AggregationOperator(StatefulOperator):
    """A ``StatefulOperator`` whose handler is a :class:`WindowAggregation`."""

    def signature(self) -> dict[str, Any]:
        """The base signature with ``kind="aggregate"``, the window and the aggregates."""
        assert isinstance(self.func, WindowAggregation)
        sig = super().signature()
        sig["kind"] = "aggregate"
        sig.update(self.func.describe())
        return sig


def build_aggregation(*, key: Any, event_time: Any, window: WindowSpec | SessionSpec,
                      aggs: Mapping[str, Aggregator], watermark_delay: Duration | None = None,
                      output_mode: OutputMode | str = OutputMode.APPEND, sink: Sink | Sequence[Sink] | None = None,
                      name: str | None = None,
                      max_event_time_ahead: Duration | None = None) -> AggregationOperator:
    """Validate ``app.aggregate(...)`` arguments and return the operator.

    Args:
        key: field name, list of names, callable, or ``None`` for one global group.
        event_time: field name or callable giving the event time.
        window: :func:`tumbling`, :func:`sliding` or :func:`session`.
        aggs: output field -> aggregator, e.g. ``{"n": count()}``.
        watermark_delay: e.g. ``"10 minutes"``; required for ``append``.
        output_mode: ``"append"`` (default), ``"update"`` or ``"complete"``.
        sink: a Sink or a list of Sinks for the window rows.
        name: operator name (logs, checkpoint signature).
        max_event_time_ahead: dead-letter records whose event time is more than
            this ahead of the batch's processing time (off by default).

    Raises:
        ConfigError: an argument is wrong; the message names it.
    """
    what = "aggregate"
    mode = OutputMode.parse(output_mode, name=f"{what}: output_mode")
    if not isinstance(window, (WindowSpec, SessionSpec)):
        msg = (f"{what}: window must be tumbling(...), sliding(...) or session(...) from "
               f"statefulstream.windows; got {window!r}")
        raise ConfigError(msg)
    if not isinstance(aggs, Mapping) or not aggs:
        msg = f"{what}: aggs must be a non-empty dict of output field -> aggregator, e.g. {{'n': count()}}"
        raise ConfigError(msg)
    for field, agg in aggs.items():
        if not isinstance(field, str) or not field:
            msg = f"{what}: aggs keys are output field names (non-empty str); got {field!r}"
            raise ConfigError(msg)
        if not isinstance(agg, Aggregator):
            msg = f"{what}: aggs[{field!r}] must be an aggregator such as count() or avg('x'); got {agg!r}"
            raise ConfigError(msg)
    if event_time is None:
        msg = f"{what}: event_time= is required (the field or callable giving each record's event time)"
        raise ConfigError(msg)
    et_fn, _ = field_getter(event_time, f"{what}: event_time")
    delay = _delay(watermark_delay, mode, what)
    key_fn, key_spec, key_fields = _key(key, what)
    clash = sorted(set(aggs) & ({*RESERVED_FIELDS} | set(key_fields(_sample_key(key)))))
    if clash:
        msg = f"{what}: aggs field(s) {clash} clash with the key or window fields; rename them"
        raise ConfigError(msg)
    handler = WindowAggregation(key_fields=key_fields, event_time=et_fn, window=window, aggs=aggs, mode=mode,
                                has_watermark=delay is not None)
    closes = handler.closes
    return AggregationOperator(
        func=handler, name=name or "aggregate", flat=True, key=key_fn, key_spec=key_spec, event_time=et_fn,
        watermark_delay_ms=delay, output_mode=mode,
        timeout=GroupStateTimeout.EVENT_TIME if closes else GroupStateTimeout.NO_TIMEOUT,
        sinks=as_sinks(sink, f"{what}: sink"), state_sinks=[], initial_state=None,
        call_all_keys=mode is OutputMode.COMPLETE,
        max_event_time_ahead_ms=event_time_ahead_ms(max_event_time_ahead, True, what))


def _delay(value: Duration | None, mode: OutputMode, what: str) -> int | None:
    if value is None:
        if mode is OutputMode.APPEND:
            msg = (f"{what}: output_mode='append' needs watermark_delay= (e.g. '10 minutes'): a window is "
                   f"emitted once the watermark passes its end (Spark: append mode is not supported for "
                   f"streaming aggregations without watermark); or use output_mode='update'/'complete'")
            raise ConfigError(msg)
        return None
    delay = parse_duration_ms(value, name=f"{what}: watermark_delay")
    if delay < 0:
        msg = f"{what}: watermark_delay should not be negative; got {value!r}"
        raise ConfigError(msg)
    return delay


def _key(key: Any, what: str) -> tuple[Callable[[Any], Any], str, Callable[[Any], dict[str, Any]]]:
    """Return (group key getter, key spec for the signature, key -> output fields)."""
    if key is None:
        return _global_key, "<global>", _no_fields
    key_fn, spec = field_getter(key, f"{what}: key")
    if isinstance(key, str):
        return key_fn, spec, lambda k: {key: k}
    if isinstance(key, (list, tuple)):
        names = list(key)
        if len(names) == 1:
            return key_fn, spec, lambda k: {names[0]: k}
        return key_fn, spec, lambda k: dict(zip(names, k, strict=True))
    return key_fn, spec, lambda k: {"key": k}


def _sample_key(key: Any) -> Any:
    """A placeholder key, only to learn the output key field names."""
    if isinstance(key, (list, tuple)) and len(key) > 1:
        return tuple(None for _ in key)
    return None


def _global_key(record: Any) -> None:
    return None


def _no_fields(key: Any) -> dict[str, Any]:
    return {}
