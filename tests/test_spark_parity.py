"""Spark behaviours a PySpark port relies on: batch queries, skipEmittingInitialStateKeys, a flat
function returning None, values consumed with next(), GroupState construction errors (issue 13)."""

from __future__ import annotations

import collections
import itertools
from typing import Any

import pytest

from statefulstream import (
    App,
    ConfigError,
    GroupState,
    GroupStateTimeout,
    GroupValues,
    RecordError,
    TimeoutNotConfiguredError,
    UserFunctionError,
)
from statefulstream.testing import FakeClock, StreamTester
from statefulstream.windows import count, tumbling

PT = GroupStateTimeout.PROCESSING_TIME
ET = GroupStateTimeout.EVENT_TIME


def clicks() -> list[dict[str, Any]]:
    users = ["a", "b", "c", "a", "a", "c", "d", "b"]
    return [{"user": u, "ts": 1_000 * (i + 1), "n": i} for i, u in enumerate(users)]


class TestBatchQuery:
    """SEMANTICS.md B.7: one call per key, no timeouts, watermark ignored, initial state, nothing kept."""

    def test_one_call_per_key_with_all_values_and_no_lasting_state(self) -> None:
        app = App("batch", clock=FakeClock(5_000))
        calls: list[tuple[Any, list[int], bool, bool]] = []

        @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="1 second", timeout=PT)
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            calls.append((user, [e["n"] for e in events], state.exists, state.has_timed_out))
            state.update(len(events))
            state.set_timeout_duration("1 minute")  # allowed by the type check, ignored
            yield {"user": user, "sum": sum(e["n"] for e in events),
                   "wm": state.get_current_watermark_ms(), "now": state.get_current_processing_time_ms()}

        records = clicks()
        expected_values: dict[str, list[int]] = collections.defaultdict(list)
        for r in records:
            expected_values[r["user"]].append(r["n"])
        first = app.run_batch(records)
        assert calls == [(u, expected_values[u], False, False) for u in sorted(expected_values)]
        assert first == [{"user": u, "sum": sum(v), "wm": -1, "now": 5_000} for u, v in sorted(expected_values.items())]
        calls.clear()
        assert app.run_batch(records) == first  # state updates had no effect
        assert all(exists is False for _, _, exists, _ in calls)

    def test_timeout_setters_keep_their_type_checks(self) -> None:
        app = App("batch")

        @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="0 ms", timeout=ET)
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            state.set_timeout_timestamp(1)  # below any watermark a stream would have: no check here (-1)
            state.set_timeout_duration(10)  # wrong kind for EVENT_TIME: fails as in Spark
            return []

        with pytest.raises(UserFunctionError) as info:
            app.run_batch(clicks())
        assert isinstance(info.value.__cause__, TimeoutNotConfiguredError)

    def test_initial_state_is_honoured(self) -> None:
        app = App("batch")
        seen: dict[Any, tuple[list[int], Any]] = {}

        @app.map_groups_with_state(key="user", initial_state={"a": 100, "z": 7})
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            seen[user] = ([e["n"] for e in events], state.get_option())
            return (user, (state.get_option() or 0) + len(events))

        records = clicks()
        users = sorted({r["user"] for r in records} | {"z"})
        out = app.run_batch(records)
        sizes = collections.Counter(r["user"] for r in records)
        initial = {"a": 100, "z": 7}
        assert out == [(u, initial.get(u, 0) + sizes[u]) for u in users]
        assert seen["z"] == ([], 7)

    def test_stateless_steps_run_and_bad_records_fail_or_are_collected(self) -> None:
        app = App("batch")
        app.filter(lambda r: r["n"] % 2 == 0)

        @app.map_groups_with_state(key="user")
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            return (user, len(events))

        records = [*clicks(), {"no_user": 1, "n": 0}]
        with pytest.raises(RecordError, match="dead_letters=") as info:
            app.run_batch(records)
        assert [d.raw for d in info.value.dead_letters] == [{"no_user": 1, "n": 0}]
        assert info.value.dead_letters[0].position == {"index": len(records) - 1, "batch_id": 0}
        dead: list[Any] = []
        out = app.run_batch(records, dead_letters=dead)
        kept = collections.Counter(r["user"] for r in records if "user" in r and r["n"] % 2 == 0)
        assert out == sorted(kept.items()) and len(dead) == 1

    def test_shares_the_streaming_per_key_step(self) -> None:
        app = App("batch")

        @app.flat_map_groups_with_state(key="user")
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            return None

        with pytest.raises(UserFunctionError, match="return \\[\\] for no rows"):
            app.run_batch(clicks())

    def test_windowed_aggregation_is_refused(self) -> None:
        app = App("batch")
        app.aggregate(key="user", event_time="ts", window=tumbling("1 minute"), watermark_delay="0 ms",
                      aggs={"n": count()})
        with pytest.raises(ConfigError, match="windowed"):
            app.run_batch(clicks())


class TestSkipEmittingInitialStateKeys:
    def make(self, **options: Any) -> tuple[App, list[Any]]:
        app = App("init")
        called: list[Any] = []

        @app.flat_map_groups_with_state(key="user", initial_state={"a": 10, "z": 5}, **options)
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            called.append(user)
            state.update(state.get() + len(events) if state.exists else len(events))
            return []

        return app, called

    def test_off_by_default_as_in_spark(self) -> None:
        app, called = self.make()
        StreamTester(app).run_batch([{"user": "b"}])
        assert called == ["a", "b", "z"]

    def test_on_initial_keys_without_data_are_stored_but_not_called(self) -> None:
        app, called = self.make(skip_emitting_initial_state_keys=True)
        t = StreamTester(app)
        t.run_batch([{"user": "a"}, {"user": "b"}])
        assert called == ["a", "b"]
        assert t.states() == {"a": 11, "b": 1, "z": 5}
        t.run_batch([{"user": "z"}])
        assert called[-1] == "z" and t.state("z") == 6

    def test_applies_to_batch_queries(self) -> None:
        app, called = self.make(skip_emitting_initial_state_keys=True)
        app.run_batch([{"user": "b"}])
        assert called == ["b"]

    def test_must_be_a_bool(self) -> None:
        with pytest.raises(ConfigError, match="skip_emitting_initial_state_keys must be True or False"):
            App("x").flat_map_groups_with_state(key="k", skip_emitting_initial_state_keys="yes")(
                lambda k, v, s: [])


class TestFlatFunctionReturningNone:
    def test_fails_the_batch_naming_the_key_and_the_fix(self) -> None:
        app = App("none")

        @app.flat_map_groups_with_state(key="user")
        def f(user: str, events: list, state: GroupState[int]) -> Any:
            state.update(1)
            return None if user == "b" else [user]

        t = StreamTester(app)
        with pytest.raises(UserFunctionError, match=r"return \[\] for no rows.*key 'b'") as info:
            t.run_batch([{"user": "a"}, {"user": "b"}])
        assert info.value.key == "b" and t.states() == {} and t.outputs == []


class TestValuesAreAlsoAnIterator:
    def test_next_consumes_in_arrival_order_and_may_stop_early(self) -> None:
        app = App("next")

        @app.flat_map_groups_with_state(key="user")
        def first_two(user: str, events: Any, state: GroupState[int]) -> Any:
            first = next(events)  # PySpark style
            second = next(events, None)
            rest = [e["n"] for e in events]  # continues after what next() took, as an iterator does
            yield (user, first["n"], second and second["n"], rest, len(events), events[0]["n"])

        records = clicks()
        by_user: dict[str, list[int]] = collections.defaultdict(list)
        for r in records:
            by_user[r["user"]].append(r["n"])
        out = StreamTester(app).run_batch(records)
        assert out == [(u, ns[0], ns[1] if len(ns) > 1 else None, ns[2:], len(ns), ns[0])
                       for u, ns in sorted(by_user.items())]

    def test_list_use_is_unchanged(self) -> None:
        values = GroupValues([3, 1, 2])
        assert [v for v in values] == [v for v in values] == [3, 1, 2]
        assert sorted(values) == [1, 2, 3] and values[-1] == 2 and len(values) == 3
        assert list(itertools.islice(values, 2)) == [3, 1]

    def test_timeout_calls_get_an_empty_iterator(self) -> None:
        app = App("empty", clock=FakeClock(0))

        @app.flat_map_groups_with_state(key="user", timeout=PT)
        def f(user: str, events: Any, state: GroupState[int]) -> Any:
            if state.has_timed_out:
                yield (user, next(events, "none"))
                state.remove()
                return
            state.update(1)
            state.set_timeout_duration(10)

        t = StreamTester(app)
        t.run_batch([{"user": "a"}], processing_time_ms=0)
        assert t.run_batch([], processing_time_ms=100) == [("a", "none")]
