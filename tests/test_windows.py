"""Windowed aggregations: window assignment, aggregates, output modes, watermarks, restarts.

Expected results come from independent computations: brute-force window
membership, ``statistics``/builtins over all values, and a reference model
of Spark's streaming-aggregation contract that recomputes every window from
all accepted rows at every batch (no state, no timers).
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statefulstream import App
from statefulstream.errors import ConfigError, IncompatibleStateError
from statefulstream.jsonl_sink import JsonlFileSink
from statefulstream.memory_sink import MemorySink
from statefulstream.options import GroupStateTimeout
from statefulstream.sources.memory import MemorySource
from statefulstream.state.group_state import GroupState
from statefulstream.testing import StreamTester
from statefulstream.windows import (
    aggregator,
    approx_count_distinct,
    avg,
    collect_list,
    collect_set,
    count,
    first,
    last,
    max,
    min,
    session,
    sliding,
    stddev,
    stddev_pop,
    sum,
    tumbling,
    var_pop,
    variance,
)
from statefulstream.windows.aggregators import Sum
from statefulstream.windows.operator import WindowAggregation

MIN = 60_000
NOON = int(dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
builtin_max, builtin_min, builtin_sum = builtins.max, builtins.min, builtins.sum
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def at(hhmm: str) -> int:
    """Epoch ms of 2024-05-01 hh:mm UTC."""
    h, m = map(int, hhmm.split(":"))
    return NOON + ((h - 12) * 60 + m) * MIN


# --- an independent model of Spark's streaming aggregation (count per window)

def fixed_windows_of(size: int, slide: int) -> Callable[[int], list[tuple[int, int]]]:
    """Brute force: every multiple of ``slide`` whose window contains ``t``."""
    def windows(t: int) -> list[tuple[int, int]]:
        k = t // slide
        starts = [s * slide for s in range(k - size // slide - 1, k + 1)]
        return [(s, s + size) for s in starts if s <= t < s + size]
    return windows


def reference_windows(accepted: list[tuple[str, int, bool]], windows_of: Callable[[int], list[tuple[int, int]]] | None,
                      gap: int | None) -> tuple[Counter[tuple[str, int, int]], set[tuple[str, int, int]]]:
    """All windows of all accepted rows with their counts, and those holding a row flagged new."""
    counts: Counter[tuple[str, int, int]] = Counter()
    touched: set[tuple[str, int, int]] = set()
    if windows_of is not None:
        for key, t, new in accepted:
            for s, e in windows_of(t):
                counts[(key, s, e)] += 1
                if new:
                    touched.add((key, s, e))
        return counts, touched
    assert gap is not None
    by_key: dict[str, list[tuple[int, bool]]] = {}
    for key, t, new in accepted:
        by_key.setdefault(key, []).append((t, new))
    for key, rows in by_key.items():
        rows.sort()
        sessions: list[list[Any]] = []  # [start, end, n, has_new]
        for t, new in rows:
            if sessions and t <= sessions[-1][1]:
                cur = sessions[-1]
                cur[1], cur[2], cur[3] = builtin_max(cur[1], t + gap), cur[2] + 1, cur[3] or new
            else:
                sessions.append([t, t + gap, 1, new])
        for s, e, n, has_new in sessions:
            counts[(key, s, e)] = n
            if has_new:
                touched.add((key, s, e))
    return counts, touched


def reference(batches: Sequence[Sequence[tuple[str, int]]], *, delay: int, mode: str,
              windows_of: Callable[[int], list[tuple[int, int]]] | None = None,
              gap: int | None = None) -> tuple[list[set[tuple[str, int, int, int]]], list[int]]:
    """Rows per batch and late rows per batch, per Spark's rules, recomputed from scratch each batch.

    Late: event time <= the previous batch's watermark (dropped, except in
    complete mode where it is only counted). Append: windows whose end <= this
    batch's watermark, once. Update: windows holding a row of this batch.
    Complete: every window. Watermark of the next batch: max(wm, max event time - delay).
    """
    wm_late = wm = 0
    accepted: list[tuple[str, int, bool]] = []
    emitted: set[tuple[str, int, int]] = set()
    out: list[set[tuple[str, int, int, int]]] = []
    lates: list[int] = []
    for rows in batches:
        late = [r for r in rows if r[1] <= wm_late]
        kept = rows if mode == "complete" else [r for r in rows if r[1] > wm_late]
        accepted = [(k, t, False) for k, t, _ in accepted] + [(k, t, True) for k, t in kept]
        counts, touched = reference_windows(accepted, windows_of, gap)
        if mode == "append":
            emit = {w for w in counts if w[2] <= wm and w not in emitted}
            emitted |= emit
        elif mode == "update":
            emit = touched
        else:
            emit = set(counts)
        out.append({(*w, counts[w]) for w in emit})
        lates.append(len(late))
        if rows:
            wm_next = builtin_max(wm, builtin_max(t for _, t in rows) - delay)
            wm_late, wm = wm, wm_next
        else:
            wm_late = wm
    return out, lates


def run_tester(batches: Sequence[Sequence[tuple[str, int]]], *, window: Any, delay: str | None, mode: str,
               ) -> tuple[list[set[tuple[str, int, int, int]]], list[int], StreamTester]:
    app = App("windows")
    app.aggregate(key="word", event_time="ts", window=window, watermark_delay=delay, aggs={"n": count()},
                  output_mode=mode)
    tester = StreamTester(app)
    out, lates = [], []
    for rows in batches:
        got = tester.run_batch([{"word": k, "ts": t} for k, t in rows])
        out.append({(r["word"], r["window_start"], r["window_end"], r["n"]) for r in got})
        assert len(got) == len(out[-1]), f"a window was emitted twice in one batch: {got}"
        p = tester.progress
        assert p is not None
        lates.append(p.records_late_kept if mode == "complete" else p.records_late)
    return out, lates, tester


def run_sessions(batches: Sequence[Sequence[tuple[str, int]]], mode: str,
                 ) -> tuple[list[list[dict[str, Any]]], dict[Any, Any], dict[Any, int | None]]:
    """Rows per batch, final states and timeouts of 3-minute session windows with order-sensitive aggregates."""
    app = App("sessions")
    app.aggregate(key="word", event_time="ts", window=session("3 minutes"), watermark_delay="5 minutes",
                  aggs={"n": count(), "s": sum("v"), "first": first("v"), "last": last("v"), "all": collect_list("v")},
                  output_mode=mode)
    tester = StreamTester(app)
    rows = [tester.run_batch([{"word": k, "ts": t, "v": i} for i, (k, t) in enumerate(b)]) for b in batches]
    states = tester.states()
    return rows, states, {k: tester.timeout_ms(k) for k in states}


# The classic timeline (Spark guide, "Handling Late Data and Watermarking"), with 5-minute
# tumbling windows and a 10-minute watermark. An empty batch is the no-data batch the
# executor runs when the watermark moved.
CLASSIC = [
    [("dog", at("12:07")), ("owl", at("12:08"))],
    [("dog", at("12:14")), ("cat", at("12:09"))],  # cat is out of order, still counted
    [],
    [("cat", at("12:15")), ("dog", at("12:08")), ("donkey", at("12:04")), ("owl", at("12:21"))],
    [],
    [("owl", at("12:17")), ("rabbit", at("12:09"))],
    [("dog", at("12:40"))],
    [],
]



FLOATING = {"avg", "variance", "var_pop", "stddev", "stddev_pop"}
"""Aggregates computed in floating point (compared with a tolerance)."""

class TestWindowSpecs:
    @given(st.lists(st.integers(-10**12, 10**13), max_size=30),
           st.sampled_from([(300_000, 300_000), (600_000, 300_000), (600_000, 200_000), (1000, 1000), (900, 400)]))
    @FAST
    def test_fixed_windows_are_those_that_contain_the_time(self, times: list[int], size_slide: tuple[int, int]) -> None:
        size, slide = size_slide
        spec = sliding(f"{size} ms", f"{slide} ms") if size != slide else tumbling(f"{size} ms")
        got: dict[tuple[int, int], list[int]] = spec.assign(times)
        expected: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(times):
            for w in fixed_windows_of(size, slide)(t):
                expected.setdefault(w, []).append(i)
        assert got == expected

    def test_offset_shifts_window_starts(self) -> None:
        spec = tumbling("1 hour", offset="15 minutes")
        assert list(spec.assign([at("12:10"), at("12:20")])) == [
            (at("11:15"), at("12:15")), (at("12:15"), at("13:15"))]

    @pytest.mark.parametrize("build, message", [
        (lambda: sliding("5 minutes", "10 minutes"), "must not be longer than size"),
        (lambda: tumbling("0 seconds"), "positive duration"),
        (lambda: session(gap="-5 ms"), "positive duration"),
        (lambda: tumbling("5 minutes", offset="5 minutes"), "offset must be"),
    ])
    def test_bad_specs_fail_with_the_reason(self, build: Callable[[], Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            build()


def fold(agg: Any, rows: list[dict[str, Any]], times: list[int], cuts: list[int], *, merged: bool) -> Any:
    """Aggregate ``rows`` in chunks split at ``cuts``: into one accumulator, or one per chunk then merged."""
    bounds = [0, *sorted(set(c % (len(rows) + 1) for c in cuts)), len(rows)]
    acc = agg.zero()
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = (agg.zero() if merged else acc)
        part = agg.update(part, rows[lo:hi], times[lo:hi], list(range(lo, hi)))
        acc = agg.merge(acc, part) if merged else part
    return agg.result(acc)


values_st = st.lists(st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False)),
                     max_size=40)


class TestAggregators:
    @given(values_st, st.lists(st.integers(0, 100), max_size=4), st.booleans())
    @FAST
    def test_each_aggregate_matches_a_direct_computation(self, values: list[Any], cuts: list[int],
                                                         merged: bool) -> None:
        rows = [{"x": v} for v in values]
        times = [0] * len(rows)
        xs = [v for v in values if v is not None]
        fsum = math.fsum(xs)
        expected: dict[str, Any] = {
            "count_rows": (count(), len(rows)),
            "count_col": (count("x"), len(xs)),
            "sum": (sum("x"), fsum if xs else None),
            "avg": (avg("x"), fsum / len(xs) if xs else None),
            "min": (min("x"), builtin_min(xs) if xs else None),
            "max": (max("x"), builtin_max(xs) if xs else None),
            "variance": (variance("x"), statistics.variance(xs) if len(xs) > 1 else None),
            "var_pop": (var_pop("x"), statistics.pvariance(xs) if xs else None),
            "stddev": (stddev("x"), statistics.stdev(xs) if len(xs) > 1 else None),
            "stddev_pop": (stddev_pop("x"), statistics.pstdev(xs) if xs else None),
            "collect_list": (collect_list("x"), xs),
            "collect_set": (collect_set("x"), list(dict.fromkeys(xs))),
        }
        for name, (agg, want) in expected.items():
            got = fold(agg, rows, times, cuts, merged=merged)
            # statistics computes exactly (an int variance for ints); the aggregators, like Spark, in doubles.
            if isinstance(want, float) or (name in FLOATING and want is not None):
                assert got == pytest.approx(want, rel=1e-7, abs=1e-6), name
            else:
                assert got == want, name

    @given(st.lists(st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 9))), max_size=30),
           st.lists(st.integers(0, 100), max_size=4), st.booleans())
    @FAST
    def test_first_and_last_go_by_event_time_then_arrival(self, rows: list[tuple[int, int | None]], cuts: list[int],
                                                         merged: bool) -> None:
        records = [{"v": v} for _, v in rows]
        times = [t for t, _ in rows]
        order = sorted(range(len(rows)), key=lambda i: (times[i], i))
        nonnull = [i for i in order if rows[i][1] is not None]
        assert fold(first("v"), records, times, cuts, merged=merged) == (rows[order[0]][1] if rows else None)
        assert fold(last("v"), records, times, cuts, merged=merged) == (rows[order[-1]][1] if rows else None)
        assert fold(first("v", ignore_nulls=True), records, times, cuts, merged=merged) == (
            rows[nonnull[0]][1] if nonnull else None)
        assert fold(last("v", ignore_nulls=True), records, times, cuts, merged=merged) == (
            rows[nonnull[-1]][1] if nonnull else None)

    def test_nulls_are_skipped_whatever_a_value_answers_to_equals_none(self) -> None:
        class Vague:  # like an array: == gives something that is neither true nor false
            def __eq__(self, other: object) -> Any:
                return self

            def __bool__(self) -> bool:
                raise ValueError("the truth value is ambiguous")

            __hash__ = object.__hash__

        class Agreeable:  # equal to everything, None included, and still a value
            def __eq__(self, other: object) -> bool:
                return True

            __hash__ = object.__hash__

        vague, agreeable = Vague(), Agreeable()
        agg = collect_list("x")
        for values, want in (([vague, None, 1], [vague, 1]), ([agreeable, 2], [agreeable, 2]),
                             ([agreeable, None], [agreeable]), ([3, 4], [3, 4])):
            assert agg.values([{"x": v} for v in values]) == want

    def test_sum_in_one_pass_and_value_by_value_agree(self) -> None:
        # The one-pass sum is taken only when every row has a number; a null, a missing field or a row
        # that is not a mapping falls back to the general path, which skips nulls (as Spark) or raises.
        agg, three = sum("x"), [0, 0, 0]
        assert agg.update(None, [{"x": 1}, {"x": 2.5}, {"x": 3}], three, three) == 6.5
        assert agg.update(10, [{"x": 1}, {"x": None}, {}], three, three) == 11
        assert agg.update(None, [{"x": None}, {}], [0, 0], [0, 0]) is None
        assert agg.update(7, [], [], []) == 7
        with pytest.raises(TypeError):
            agg.update(None, [{"x": 1}, {"x": "2"}], [0, 0], [0, 0])

    def test_rows_take_the_result_of_an_aggregator_that_overrides_it(self) -> None:
        class Cents(Sum):  # with its own result
            def result(self, acc: Any) -> Any:
                return None if acc is None else round(acc * 100)

        app = App("cents")
        app.aggregate(key="k", event_time="ts", window=tumbling("1 minute"), output_mode="update",
                      watermark_delay="1 minute", aggs={"n": count(), "cents": Cents("v")})
        out = StreamTester(app).run_batch([{"k": "a", "ts": NOON, "v": 1.25}, {"k": "a", "ts": NOON + 1, "v": 2}])
        assert [(r["n"], r["cents"]) for r in out] == [(2, 325)]

    def test_a_column_set_after_construction_is_the_one_aggregated(self) -> None:
        agg = sum("a")
        rows = [{"a": 1, "b": 10}, {"a": 2, "b": 20}]
        assert agg.values(rows) == [1, 2]
        agg.column = "b"
        assert agg.values(rows) == [10, 20]
        agg.column = lambda r: r["a"] * 3
        assert agg.values(rows) == [3, 6]
        with pytest.raises(ConfigError, match="column must be a field name"):
            agg.column = 5  # type: ignore[assignment]

    def test_user_defined_aggregator_adds_merges_and_finishes(self) -> None:
        span = aggregator(zero=lambda: [None, None], column="v", name="span",
                          add=lambda a, v: [v if a[0] is None else builtin_min(a[0], v),
                                            v if a[1] is None else builtin_max(a[1], v)],
                          merge=lambda a, b: [builtin_min(x for x in (a[0], b[0]) if x is not None),
                                              builtin_max(x for x in (a[1], b[1]) if x is not None)],
                          result=lambda a: a[1] - a[0])
        rng = random.Random(3)
        vals = [rng.randint(-50, 50) for _ in range(25)]
        rows = [{"v": v} for v in vals]
        assert fold(span, rows, [0] * 25, [7, 13], merged=True) == builtin_max(vals) - builtin_min(vals)
        assert "span" in span.describe()

    def test_sketch_error_is_within_the_documented_bound(self) -> None:
        agg = approx_count_distinct("user")
        sigma = agg.standard_error
        assert agg.m == 512 and sigma == pytest.approx(1.04 / math.sqrt(512))
        rng = random.Random(8)
        errors = []
        for trial in range(16):
            n = rng.choice([3000, 10_000, 30_000])
            users = [f"u{trial}-{i}" for i in range(n)]
            rows = [{"user": u} for u in users + rng.sample(users, n // 3)]  # duplicates do not count
            est = agg.result(agg.update(agg.zero(), rows, [0] * len(rows), list(range(len(rows)))))
            errors.append((est - n) / n)
        assert builtin_max(map(abs, errors)) < 4 * sigma, errors
        assert math.sqrt(builtin_sum(e * e for e in errors) / len(errors)) < 1.6 * sigma, errors

    def test_small_distinct_counts_use_linear_counting(self) -> None:
        agg = approx_count_distinct("u")
        for n, tolerance in ((0, 0), (1, 0), (10, 1), (100, 13)):  # 100 of 512 registers: sd ~3.2 %
            rows = [{"u": i} for i in range(n)] * 2
            est = agg.result(agg.update(agg.zero(), rows, [0] * len(rows), list(range(len(rows)))))
            assert abs(est - n) <= tolerance

    @given(st.sets(st.text(max_size=6), max_size=60), st.sets(st.text(max_size=6), max_size=60))
    @FAST
    def test_sketches_merge_to_the_sketch_of_the_union(self, a: set[str], b: set[str]) -> None:
        agg = approx_count_distinct("u")

        def sketch(vals: set[str]) -> bytes:
            rows = [{"u": v} for v in sorted(vals)]
            return agg.update(agg.zero(), rows, [0] * len(rows), list(range(len(rows))))

        assert agg.merge(sketch(a), sketch(b)) == sketch(a | b)
        assert isinstance(sketch(a), bytes)


class TestClassicTimeline:
    """5-minute windows, 10-minute watermark, the Spark guide's sequence of events."""

    @pytest.mark.parametrize("mode", ["append", "update", "complete"])
    def test_rows_per_batch_match_the_reference_model(self, mode: str) -> None:
        got, lates, _ = run_tester(CLASSIC, window=tumbling("5 minutes"), delay="10 minutes", mode=mode)
        want, want_lates = reference(CLASSIC, delay=10 * MIN, mode=mode,
                                     windows_of=fixed_windows_of(5 * MIN, 5 * MIN))
        assert got == want
        assert lates == want_lates

    def test_watermark_is_max_event_time_minus_delay_of_the_previous_batch(self) -> None:
        app = App("classic")
        app.aggregate(key="word", event_time="ts", window=tumbling("5 minutes"), watermark_delay="10 minutes",
                      aggs={"n": count()})
        tester = StreamTester(app)
        tester.run_batch([{"word": w, "ts": t} for w, t in CLASSIC[0]])
        tester.run_batch([{"word": w, "ts": t} for w, t in CLASSIC[1]])
        assert tester.watermark_ms == at("12:04")  # max 12:14 gives 12:04 for the next trigger
        tester.run_batch([])
        assert tester.progress is not None and tester.progress.watermark_ms == at("12:04")

    def test_late_data_updates_an_open_window_and_older_data_is_dropped(self) -> None:
        got, lates, tester = run_tester(CLASSIC, window=tumbling("5 minutes"), delay="10 minutes", mode="append")
        closed = {(w, s): n for batch in got for w, s, _, n in batch}
        assert closed[("dog", at("12:05"))] == 2  # 12:07 on time + 12:08 late but above the watermark
        assert ("donkey", at("12:00")) not in closed  # 12:04 == watermark 12:04: late, dropped
        assert ("rabbit", at("12:05")) not in closed  # 12:09 <= 12:11
        assert lates[3] == 1 and lates[5] == 1
        # Append emits windows only once the watermark (12:11) passes their end.
        assert got[4] == {("dog", at("12:05"), at("12:10"), 2), ("owl", at("12:05"), at("12:10"), 1),
                          ("cat", at("12:05"), at("12:10"), 1)}
        assert list(tester.states()) == ["dog"] and len(tester.states()["dog"][1]) == 1  # [12:40, 12:45)

    def test_windows_close_through_the_timer_index_without_new_data_for_the_key(self) -> None:
        _, _, tester = run_tester(CLASSIC[:5], window=tumbling("5 minutes"), delay="10 minutes", mode="append")
        progress = tester.progress
        assert progress is not None and progress.records_read == 0
        assert progress.timeouts_fired == 3  # dog, owl and cat each had a window ending <= 12:11
        assert tester.timeout_ms("cat") == at("12:20") - 1


batch_st = st.lists(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40 * MIN).map(lambda m: NOON + m)),
                             max_size=6), min_size=1, max_size=8)


class TestOutputModes:
    @given(batch_st, st.sampled_from(["append", "update", "complete"]))
    @FAST
    def test_tumbling_windows_follow_the_reference_model(self, batches: list[list[tuple[str, int]]], mode: str) -> None:
        got, lates, _ = run_tester(batches, window=tumbling("5 minutes"), delay="10 minutes", mode=mode)
        want, want_lates = reference(batches, delay=10 * MIN, mode=mode, windows_of=fixed_windows_of(5 * MIN, 5 * MIN))
        assert (got, lates) == (want, want_lates)

    @given(batch_st, st.sampled_from(["append", "update", "complete"]))
    @FAST
    def test_sliding_windows_follow_the_reference_model(self, batches: list[list[tuple[str, int]]], mode: str) -> None:
        got, lates, _ = run_tester(batches, window=sliding("10 minutes", "5 minutes"), delay="5 minutes", mode=mode)
        want, want_lates = reference(batches, delay=5 * MIN, mode=mode, windows_of=fixed_windows_of(10 * MIN, 5 * MIN))
        assert (got, lates) == (want, want_lates)

    @given(batch_st, st.sampled_from(["append", "update", "complete"]))
    @FAST
    def test_session_windows_follow_the_reference_model(self, batches: list[list[tuple[str, int]]], mode: str) -> None:
        got, lates, _ = run_tester(batches, window=session("3 minutes"), delay="5 minutes", mode=mode)
        want, want_lates = reference(batches, delay=5 * MIN, mode=mode, gap=3 * MIN)
        assert (got, lates) == (want, want_lates)

    # Minutes on a short span: sessions (3 minutes) often touch, continue and follow each other exactly.
    @given(st.lists(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 15).map(lambda m: NOON + m * MIN)),
                             max_size=8), min_size=1, max_size=6),
           st.sampled_from(["append", "update", "complete"]))
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_session_shortcut_gives_what_the_sweep_gives(self, batches: list[list[tuple[str, int]]],
                                                          mode: str) -> None:
        shortcut = run_sessions(batches, mode)
        with mock.patch.object(WindowAggregation, "_in_runs", return_value=None):
            assert run_sessions(batches, mode) == shortcut

    @pytest.mark.parametrize("step", [3 * MIN - 1, 3 * MIN, 3 * MIN + 1])
    def test_a_session_splits_exactly_where_neighbours_are_more_than_the_gap_apart(self, step: int) -> None:
        # One batch, out of order, each time with a stored session (continued) and without: the one-run
        # shortcut and the run splitting meet the gap to the millisecond.
        t0 = at("12:00")
        batches = [[("a", t0 + step), ("a", t0)], [("a", t0 + 2 * step + 5), ("a", t0 + step + 5)]]
        shortcut = run_sessions(batches, "update")
        with mock.patch.object(WindowAggregation, "_in_runs", return_value=None):
            assert run_sessions(batches, "update") == shortcut
        starts = [[r["window_start"] for r in b] for b in shortcut[0]]
        assert starts == ([[t0]] * 2 if step <= 3 * MIN else [[t0, t0 + step], [t0 + step, t0 + 2 * step + 5]])

    def test_runs_split_only_at_steps_over_the_gap(self) -> None:
        t0, gap = at("12:00"), 3 * MIN
        batches = [[("a", t0 + 2 * gap + 1), ("a", t0), ("a", t0 + gap)]]  # steps: the gap, then one more
        shortcut = run_sessions(batches, "update")
        with mock.patch.object(WindowAggregation, "_in_runs", return_value=None):
            assert run_sessions(batches, "update") == shortcut
        assert [(r["window_start"], r["n"]) for r in shortcut[0][0]] == [(t0, 2), (t0 + 2 * gap + 1, 1)]

    def test_session_shortcut_is_taken_when_records_continue_or_follow_the_latest_session(self) -> None:
        batches = [[("a", at("12:00")), ("a", at("12:02"))],   # no open session: one run
                   [("a", at("12:04")), ("a", at("12:03"))],   # continues it (out of order within the batch)
                   [("a", at("12:20"))],                       # follows it, past its end
                   [("a", at("12:25")), ("a", at("12:21"))],   # two runs (12:21 continues it, 12:25 starts one)
                   [("a", at("12:27"))],                       # continues the latest of two open sessions
                   [("a", at("12:22"))]]                       # before the latest one's start: the sweep
        taken: list[bool] = []
        real = WindowAggregation._in_runs

        def spy(self: WindowAggregation, *args: Any) -> Any:
            result = real(self, *args)
            taken.append(result is not None)
            return result

        with mock.patch.object(WindowAggregation, "_in_runs", spy):
            rows, states, _ = run_sessions(batches, "update")
        assert taken == [True, True, True, True, True, False]
        assert [[(r["window_start"], r["window_end"], r["n"], r["all"]) for r in b] for b in rows] == [
            [(at("12:00"), at("12:05"), 2, [0, 1])], [(at("12:00"), at("12:07"), 4, [0, 1, 0, 1])],
            [(at("12:20"), at("12:23"), 1, [0])],
            [(at("12:20"), at("12:24"), 2, [0, 1]), (at("12:25"), at("12:28"), 1, [0])],
            [(at("12:25"), at("12:30"), 2, [0, 0])],
            [(at("12:20"), at("12:30"), 5, [0, 1, 0, 0, 0])]]  # 12:22 joins both: one session
        # The watermark of batch 4 (12:20 - 5 minutes) closed the first session.
        assert [w[:2] for w in states["a"][1]] == [[at("12:20"), at("12:30")]]

    def test_a_state_in_the_older_map_layout_continues_as_the_list_layout_does(self) -> None:
        # Checkpoints written before the [arrivals, windows] layout hold {"n": arrivals, "w": windows}.
        app = App("layout")
        app.aggregate(key="k", event_time="ts", window=session("3 minutes"), watermark_delay="5 minutes",
                      aggs={"n": count(), "first": first("v"), "all": collect_list("v")}, output_mode="update")
        assert app.operator is not None
        handler = app.operator.func  # the WindowAggregation
        stored = [[NOON, NOON + 4 * MIN, 2, [NOON, 0, "a"], ["a", "b"]]]
        values = [{"k": "x", "ts": NOON + 2 * MIN, "v": "c"}, {"k": "x", "ts": NOON + 9 * MIN, "v": "d"}]

        def call(state_value: Any) -> tuple[Any, Any]:
            state = GroupState(state_value, True, timeout=GroupStateTimeout.EVENT_TIME,
                               batch_processing_time_ms=0, watermark_ms=NOON, watermark_present=True)
            rows = handler("x", values, state)
            return rows, state.get_option()

        old_rows, old_state = call({"n": 2, "w": stored})
        new_rows, new_state = call([2, stored])
        assert old_rows == new_rows and old_state == new_state
        assert new_state[0] == 4 and [(w[0], w[1], w[2]) for w in new_state[1]] == [
            (NOON, NOON + 5 * MIN, 3), (NOON + 9 * MIN, NOON + 12 * MIN, 1)]

    def test_update_without_watermark_keeps_every_window(self) -> None:
        got, lates, tester = run_tester(CLASSIC, window=tumbling("5 minutes"), delay=None, mode="update")
        assert lates == [0] * len(CLASSIC)
        assert builtin_sum(len(s[1]) for s in tester.states().values()) == len(
            reference_windows([(k, t, False) for b in CLASSIC for k, t in b], fixed_windows_of(5 * MIN, 5 * MIN),
                              None)[0])

    def test_append_mode_leaves_no_state_once_the_watermark_passes_every_window(self) -> None:
        batches = [*CLASSIC, [("zebra", at("14:00"))], []]
        _, _, tester = run_tester(batches, window=tumbling("5 minutes"), delay="10 minutes", mode="append")
        assert list(tester.states()) == ["zebra"]

    def test_complete_mode_emits_keys_without_data_and_evicts_nothing(self) -> None:
        got, _, tester = run_tester(CLASSIC, window=tumbling("5 minutes"), delay="10 minutes", mode="complete")
        assert {w for w, *_ in got[-1]} == {"dog", "owl", "cat", "donkey", "rabbit"}
        assert len(tester.states()["dog"][1]) == 3  # 12:05, 12:10 and 12:40 windows, none evicted


class TestAggregateApi:
    def test_rows_carry_key_fields_window_bounds_and_every_aggregate(self) -> None:
        app = App("api")
        app.aggregate(key=["service", "region"], event_time="ts", window=tumbling("1 minute"),
                      watermark_delay="1 minute", output_mode="update",
                      aggs={"n": count(), "p": avg("ms"), "users": approx_count_distinct("user"),
                            "who": collect_set("user")})
        tester = StreamTester(app)
        out = tester.run_batch([{"service": "api", "region": "eu", "ts": NOON + i * 1000, "ms": i, "user": f"u{i % 3}"}
                                for i in range(10)])
        assert out == [{"service": "api", "region": "eu", "window_start": NOON, "window_end": NOON + MIN, "n": 10,
                        "p": 4.5, "users": 3, "who": ["u0", "u1", "u2"]}]

    def test_global_aggregation_has_one_group(self) -> None:
        app = App("global")
        app.aggregate(key=None, event_time="ts", window=tumbling("1 minute"), output_mode="complete",
                      aggs={"n": count(), "total": sum("v")})
        tester = StreamTester(app)
        tester.run_batch([{"ts": NOON + i * 20_000, "v": i} for i in range(6)])
        assert sorted(tester.run_batch([{"ts": NOON, "v": 100}]), key=lambda r: r["window_start"]) == [
            {"window_start": NOON, "window_end": NOON + MIN, "n": 4, "total": 103},
            {"window_start": NOON + MIN, "window_end": NOON + 2 * MIN, "n": 3, "total": 12}]

    @pytest.mark.parametrize("kwargs, message", [
        ({"output_mode": "append", "watermark_delay": None}, "needs watermark_delay"),
        ({"window": "5 minutes"}, "window must be tumbling"),
        ({"aggs": {}}, "non-empty dict"),
        ({"aggs": {"n": len}}, "must be an aggregator"),
        ({"aggs": {"window_start": count()}}, "clash"),
        ({"aggs": {"service": count()}}, "clash"),
        ({"event_time": None}, "event_time= is required"),
        ({"output_mode": "sometimes"}, "output_mode must be one of"),
    ])
    def test_wrong_arguments_fail_at_definition_time(self, kwargs: dict[str, Any], message: str) -> None:
        args: dict[str, Any] = {"key": "service", "event_time": "ts", "window": tumbling("1 minute"),
                                "watermark_delay": "1 minute", "aggs": {"n": count()}, **kwargs}
        with pytest.raises(ConfigError, match=message):
            App("bad").aggregate(**args)

    def test_a_second_operator_is_refused(self) -> None:
        app = App("twice")
        options = {"key": "k", "event_time": "ts", "window": tumbling("1 second"), "watermark_delay": "0 ms"}
        app.aggregate(**options, aggs={"n": count()})
        with pytest.raises(ConfigError, match="already has the stateful operator"):
            app.aggregate(**options, aggs={"n": count()})


# --- restarts with a durable checkpoint

RECORDS = [{"service": random.Random(i).choice(["api", "db", "web"]),
            "ts": NOON + i * 7_000 - (i % 5) * 40_000, "ms": i % 17} for i in range(240)]


def window_app(name: str, source: Any, sink: Any, checkpoint_dir: Any) -> App:
    app = App(name, source=source, checkpoint_dir=checkpoint_dir, trigger="available_now",
              max_records_per_trigger=25)
    app.aggregate(key="service", event_time="ts", window=tumbling("1 minute"), watermark_delay="2 minutes",
                  aggs={"n": count(), "max_ms": max("ms"), "first_ms": first("ms")}, sink=sink)
    return app


def uninterrupted_rows() -> list[dict[str, Any]]:
    sink = MemorySink()
    window_app("ref", MemorySource(RECORDS), sink, None).run()
    return sink.rows


def by_window(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    keyed = {(r["service"], r["window_start"]): r for r in rows}
    assert len(keyed) == len(rows), "a window was emitted more than once"
    return keyed


class TestRestart:
    def test_a_stopped_and_restarted_app_emits_each_window_once(self, tmp_path: Path) -> None:
        expected = by_window(uninterrupted_rows())
        assert len(expected) > 10
        first_sink, second_sink = MemorySink(), MemorySink()
        app = window_app("restart", MemorySource(RECORDS), first_sink, tmp_path / "ckpt")
        app.add_listener(lambda p: app.stop() if p.batch_id == 3 else None)
        app.run()
        assert 0 < len(first_sink.rows) < len(expected)
        window_app("restart", MemorySource(RECORDS), second_sink, tmp_path / "ckpt").run()
        assert not set(first_sink.batches) & set(second_sink.batches)
        assert by_window(first_sink.rows + second_sink.rows) == expected

    def test_a_different_window_refuses_the_old_checkpoint(self, tmp_path: Path) -> None:
        window_app("sig", MemorySource(RECORDS[:30]), MemorySink(), tmp_path / "ckpt").run()
        app = App("sig", source=MemorySource(RECORDS), checkpoint_dir=tmp_path / "ckpt", trigger="once")
        app.aggregate(key="service", event_time="ts", window=tumbling("2 minutes"), watermark_delay="2 minutes",
                      aggs={"n": count(), "max_ms": max("ms"), "first_ms": first("ms")})
        with pytest.raises(IncompatibleStateError):
            app.run()

    def test_sigkill_before_commit_replays_the_batch_and_emits_each_window_once(self, tmp_path: Path) -> None:
        data = tmp_path / "in" / "events.jsonl"
        data.parent.mkdir()
        data.write_text("".join(f'{{"service": "{r["service"]}", "ts": {r["ts"]}, "ms": {r["ms"]}}}\n'
                                for r in RECORDS))
        out, ckpt = tmp_path / "out", tmp_path / "ckpt"
        script = tmp_path / "job.py"
        script.write_text(textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
            sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
            from statefulstream.sources.file import FileSource
            from statefulstream.state.rocksdb import RocksDBStateStore
            from statefulstream.jsonl_sink import JsonlFileSink
            from test_windows import window_app

            kill_at = int(os.environ.get("KILL_AT", sys.maxsize))
            commit = RocksDBStateStore.commit

            def dying_commit(self, record):
                written = os.path.exists(os.path.join({str(out)!r}, f"part-{{record.batch_id:08d}}.jsonl"))
                if record.batch_id >= kill_at and written:  # output written, state not yet committed
                    os.kill(os.getpid(), signal.SIGKILL)
                commit(self, record)

            RocksDBStateStore.commit = dying_commit
            window_app("killed", FileSource({str(data)!r}), JsonlFileSink({str(out)!r}), {str(ckpt)!r}).run()
        """))
        killed = subprocess.run([sys.executable, str(script)], env={**os.environ, "KILL_AT": "4"}, timeout=120,
                                capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        written_before = JsonlFileSink.read_batches(out)
        victim = builtin_max(written_before)  # its output reached the sink, its commit did not happen
        assert victim >= 4
        done = subprocess.run([sys.executable, str(script)], timeout=120, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        batches = JsonlFileSink.read_batches(out)
        assert batches[victim] == written_before[victim]  # replayed: the same rows under the same batch id
        assert by_window(JsonlFileSink.read_all(out)) == uninterrupted_rows_by_window()


def uninterrupted_rows_by_window() -> dict[tuple[str, int], dict[str, Any]]:
    return by_window(uninterrupted_rows())


class TestWindowCountsExample:
    @staticmethod
    def example() -> Any:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
        try:
            import window_counts
        finally:
            sys.path.pop(0)
        return window_counts

    def test_committed_sample_is_what_the_generator_writes(self) -> None:
        example = self.example()
        assert example.DATA.read_text() == "".join(line + "\n" for line in example.sample_lines())

    def test_errors_per_service_minute_match_the_reference_model(self) -> None:
        example = self.example()
        sink = MemorySink()
        late: list[int] = []
        app = example.build_app(sink=sink)
        app.add_listener(lambda p: late.append(p.records_late))
        app.run()
        events = [json.loads(line) for line in example.sample_lines()]
        batches = [[(e["service"], e["ts"]) for e in events[i:i + 500] if e["level"] == "error"]
                   for i in range(0, len(events), 500)]
        want, want_lates = reference([*batches, []], delay=10 * MIN, mode="append",
                                     windows_of=fixed_windows_of(MIN, MIN))
        got = {(r["service"], r["window_start"], r["window_end"], r["errors"]) for r in sink.rows}
        assert got == set().union(*want)
        assert builtin_sum(late) == builtin_sum(want_lates) > 0
        assert len(by_window(sink.rows)) > 50


def test_a_window_whose_timer_moved_away_and_back_closes_once() -> None:
    """Found by the model test: a key's timer set to T, moved to U, then back to T fired twice in one batch."""
    batches = [[("a", NOON + 5 * MIN)], [("a", NOON), ("a", NOON + 15 * MIN)], [("a", NOON + 20 * MIN)], []]
    got, lates, _ = run_tester(batches, window=tumbling("5 minutes"), delay="10 minutes", mode="append")
    want, want_lates = reference(batches, delay=10 * MIN, mode="append", windows_of=fixed_windows_of(5 * MIN, 5 * MIN))
    assert (got, lates) == (want, want_lates)
