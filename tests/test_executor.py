"""The micro-batch loop follows SEMANTICS.md B (FlatMapGroupsWithStateExec, MicroBatchExecution)."""

from __future__ import annotations

import datetime as dt
import gc
import threading
from typing import Any

import pytest

from statefulstream import App, GroupState, GroupStateTimeout, SinkError, SinkUnavailableError, UserFunctionError
from statefulstream.executor import Executor
from statefulstream.sinks import MemorySink
from statefulstream.sources import CRASH, MemorySource, SimulatedCrashError
from statefulstream.testing import FakeClock, StreamTester
from statefulstream.triggers import Trigger

PT = GroupStateTimeout.PROCESSING_TIME
ET = GroupStateTimeout.EVENT_TIME


def recorder_app(timeout: GroupStateTimeout = GroupStateTimeout.NO_TIMEOUT, **options: Any) -> tuple[App, list]:
    """An app whose handler records every call and counts values into state."""
    calls: list[dict[str, Any]] = []
    app = App("rec")
    if timeout is ET:
        options.setdefault("event_time", "ts")
        options.setdefault("watermark_delay", "10 ms")

    @app.flat_map_groups_with_state(key="k", timeout=timeout, **options)
    def handler(key: Any, values: list, state: GroupState[int]) -> Any:
        calls.append({"key": key, "values": [v.get("v") for v in values], "timed_out": state.has_timed_out,
                      "exists": state.exists, "ts": state.get_current_processing_time_ms()})
        if state.has_timed_out:
            state.remove()
            yield ("timeout", key)
            return
        state.update((state.get_option() or 0) + len(values))
        if timeout is PT:
            state.set_timeout_duration(100)
        elif timeout is ET:
            state.set_timeout_timestamp(max(v["ts"] for v in values) + 5)

    return app, calls


class TestCallOrder:
    def test_keys_sorted_and_values_in_arrival_order(self) -> None:
        app, calls = recorder_app()
        t = StreamTester(app)
        t.run_batch([{"k": "b", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 3}, {"k": "a", "v": 4}])
        assert [(c["key"], c["values"]) for c in calls] == [("a", [2, 4]), ("b", [1, 3])]

    def test_mixed_key_types_get_a_deterministic_order(self) -> None:
        app, calls = recorder_app()
        t = StreamTester(app)
        t.run_batch([{"k": 2}, {"k": "x"}, {"k": 1}, {"k": None}])
        first = [c["key"] for c in calls]
        app2, calls2 = recorder_app()
        StreamTester(app2).run_batch([{"k": None}, {"k": 1}, {"k": "x"}, {"k": 2}])
        assert first == [c["key"] for c in calls2] and set(first) == {1, 2, "x", None}

    def test_tuple_keys_from_field_lists(self) -> None:
        app = App("t")
        seen = []

        @app.flat_map_groups_with_state(key=["a", "b"])
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            seen.append((key, len(values)))
            return []

        StreamTester(app).run_batch([{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 1, "b": 3}])
        assert seen == [((1, 2), 2), ((1, 3), 1)]

    def test_timeouts_fire_after_all_data_keys(self) -> None:
        app, calls = recorder_app(PT)
        t = StreamTester(app)
        t.run_batch([{"k": "z"}], processing_time_ms=1000)  # z times out at 1100
        calls.clear()
        t.run_batch([{"k": "a"}, {"k": "b"}], processing_time_ms=2000)
        assert [(c["key"], c["timed_out"]) for c in calls] == [("a", False), ("b", False), ("z", True)]


class TestProcessingTimeTimeouts:
    def test_fires_strictly_after_deadline(self) -> None:
        app, calls = recorder_app(PT)
        t = StreamTester(app)
        t.run_batch([{"k": "a"}], processing_time_ms=1000)
        assert t.timeout_ms("a") == 1100
        assert t.run_batch([], processing_time_ms=1100) == []  # deadline == batch time: not yet
        assert t.run_batch([], processing_time_ms=1101) == [("timeout", "a")]
        assert t.state("a") is None and t.timeout_ms("a") == -1

    def test_timed_out_call_gets_no_values_and_the_state(self) -> None:
        app, calls = recorder_app(PT)
        t = StreamTester(app)
        t.run_batch([{"k": "a", "v": 1}, {"k": "a", "v": 2}], processing_time_ms=0)
        t.run_batch([], processing_time_ms=500)
        assert calls[-1] == {"key": "a", "values": [], "timed_out": True, "exists": True, "ts": 500}

    def test_key_with_data_does_not_time_out_in_the_same_batch(self) -> None:
        app, calls = recorder_app(PT)
        t = StreamTester(app)
        t.run_batch([{"k": "a"}], processing_time_ms=0)
        out = t.run_batch([{"k": "a"}], processing_time_ms=1000)  # old deadline 100 < 1000, but a has data
        assert out == [] and [c["timed_out"] for c in calls] == [False, False]
        assert t.timeout_ms("a") == 1100 and t.state("a") == 2

    def test_call_without_setting_timeout_clears_it(self) -> None:
        app = App("clear")

        @app.flat_map_groups_with_state(key="k", timeout=PT)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            if values and values[0].get("arm"):
                state.set_timeout_duration(10)
            state.update(1)
            return []

        t = StreamTester(app)
        t.run_batch([{"k": "a", "arm": True}], processing_time_ms=0)
        assert t.timeout_ms("a") == 10
        t.run_batch([{"k": "a"}], processing_time_ms=5)
        assert t.timeout_ms("a") == -1
        assert t.run_batch([], processing_time_ms=100) == [] and t.state("a") == 1

    def test_remove_with_timeout_leaves_a_stateless_row_that_times_out(self) -> None:
        app = App("tomb")
        seen: list[tuple[bool, bool]] = []

        @app.flat_map_groups_with_state(key="k", timeout=PT)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            seen.append((state.has_timed_out, state.exists))
            if not state.has_timed_out:
                state.remove()
                state.set_timeout_duration(10)
            return []

        t = StreamTester(app)
        t.run_batch([{"k": "a"}], processing_time_ms=0)
        assert t.state("a") is None and t.timeout_ms("a") == 10
        t.run_batch([], processing_time_ms=11)
        assert seen == [(False, False), (True, False)]
        assert t.timeout_ms("a") == -1 and dict(t.store.items()) == {}


class TestEventTime:
    def test_watermark_is_max_event_time_minus_delay_effective_next_batch(self) -> None:
        app, calls = recorder_app(ET, watermark_delay="10 minutes")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 100_000}])
        assert t.progress is not None and t.progress.watermark_ms == 0  # first batch runs with 0
        base = 12 * 3_600_000
        t.run_batch([{"k": "a", "ts": base + 14 * 60_000}, {"k": "a", "ts": base + 5 * 60_000}])
        assert t.watermark_ms == base + 4 * 60_000  # max 12:14 - 10 min = 12:04

    def test_watermark_never_moves_back(self) -> None:
        app, _ = recorder_app(GroupStateTimeout.NO_TIMEOUT, event_time="ts", watermark_delay="10 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 1000}])
        t.run_batch([{"k": "b", "ts": 500}])
        assert t.watermark_ms == 990

    def test_late_rows_at_or_below_previous_watermark_are_dropped_and_counted(self) -> None:
        app, calls = recorder_app(ET, watermark_delay="10 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 1000, "v": 1}])  # watermark for the next batch: 990
        t.run_batch([])  # the no-data batch a real run makes; now late rows are those <= 990
        calls.clear()
        t.run_batch([{"k": "b", "ts": 990, "v": 2}, {"k": "b", "ts": 991, "v": 3}, {"k": "c", "ts": 5, "v": 4}])
        assert [(c["key"], c["values"]) for c in calls if not c["timed_out"]] == [("b", [3])]
        p = t.progress
        assert p is not None
        assert (p.records_read, p.records_processed, p.records_late) == (3, 1, 2)

    def test_late_filter_uses_previous_batch_watermark_and_timeouts_the_current(self) -> None:
        """SPARK-40925: wmLate(N) = wmEvict(N-1); timeouts and get_current_watermark_ms use wmEvict(N)."""
        app = App("two-wm")
        seen: list[tuple[Any, int]] = []

        @app.flat_map_groups_with_state(key="k", event_time="ts", watermark_delay="0 ms", timeout=ET)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            seen.append((key, state.get_current_watermark_ms()))
            return []

        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 100}])          # next eviction watermark 100
        t.run_batch([{"k": "b", "ts": 200}])          # runs with evict 100, late filter 0
        assert seen[-1] == ("b", 100)
        t.run_batch([{"k": "c", "ts": 150}])          # late filter 100: 150 kept; evict 200
        assert seen[-1] == ("c", 200)
        t.run_batch([{"k": "d", "ts": 200}])          # late filter 200: 200 dropped (<=)
        assert seen[-1] == ("c", 200) and t.progress is not None and t.progress.records_late == 1

    def test_no_late_drop_without_event_time_timeout_but_counted(self) -> None:
        app, calls = recorder_app(GroupStateTimeout.NO_TIMEOUT, event_time="ts", watermark_delay="10 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 1000}])
        t.run_batch([])
        t.run_batch([{"k": "a", "ts": 1}])
        assert calls[-1]["key"] == "a" and t.progress is not None
        assert t.progress.records_late == 0 and t.progress.records_late_kept == 1

    def test_event_time_timeout_fires_when_watermark_passes_deadline(self) -> None:
        app, calls = recorder_app(ET, watermark_delay="10 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 100}])            # deadline 105; next watermark 90
        t.run_batch([{"k": "b", "ts": 115}])            # evict 90; next 105
        assert t.run_batch([]) == []                     # evict 105 == deadline: not yet
        t.run_batch([{"k": "b", "ts": 116}])            # evict 105, next 106
        assert t.run_batch([]) == [("timeout", "a")]     # evict 106 > 105

    def test_first_batch_drops_event_times_at_or_before_epoch(self) -> None:
        app, calls = recorder_app(ET, watermark_delay="10 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 0}, {"k": "b", "ts": 1}])
        assert [c["key"] for c in calls] == ["b"]

    @pytest.mark.parametrize("ts,expected_ms", [(1.5, 1500), ("1970-01-01T00:00:02Z", 2000)])
    def test_event_time_seconds_float_and_iso_strings(self, ts: Any, expected_ms: int) -> None:
        app, _ = recorder_app(GroupStateTimeout.NO_TIMEOUT, event_time="ts", watermark_delay="0 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": ts}])
        assert t.watermark_ms == expected_ms

    def test_bad_event_time_is_dead_lettered(self) -> None:
        app, calls = recorder_app(ET)
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 100}, {"k": "b"}, {"k": "c", "ts": "not a time"}])
        assert [c["key"] for c in calls] == ["a"]
        assert sorted(r["error"] for r in t.dead_letters.rows) == ["event_time", "event_time"]
        assert {r["raw"]["k"] for r in t.dead_letters.rows} == {"b", "c"}


class TestInitialState:
    def make(self) -> tuple[App, list]:
        app = App("init")
        calls: list[tuple[Any, list, bool, Any]] = []

        @app.flat_map_groups_with_state(key="k", initial_state={"a": 10, "c": 30})
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            calls.append((key, [v["v"] for v in values], state.exists, state.get_option()))
            if values:
                state.update(state.get_option() or 0 + len(values))
            return []

        return app, calls

    def test_called_for_data_and_initial_keys_in_batch_zero(self) -> None:
        app, calls = self.make()
        t = StreamTester(app)
        t.run_batch([{"k": "b", "v": 1}])
        assert calls == [("a", [], True, 10), ("b", [1], False, None), ("c", [], True, 30)]
        assert t.states() == {"a": 10, "b": 1, "c": 30}  # initial values persist without update

    def test_never_applied_again(self) -> None:
        app, calls = self.make()
        t = StreamTester(app)
        t.run_batch([])
        calls.clear()
        t.run_batch([{"k": "x", "v": 1}])
        assert [c[0] for c in calls] == ["x"]


class TestUserErrors:
    def test_handler_exception_fails_batch_with_key_and_nothing_committed(self) -> None:
        app = App("boom")

        @app.flat_map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.update(1)
            if key == "bad":
                raise ValueError("cannot handle")
            return [key]

        t = StreamTester(app)
        with pytest.raises(UserFunctionError, match="raised ValueError: cannot handle.*key 'bad', batch 0") as info:
            t.run_batch([{"k": "a"}, {"k": "bad"}])
        assert info.value.key == "bad" and info.value.batch_id == 0
        assert isinstance(info.value.__cause__, ValueError)
        assert t.states() == {} and t.outputs == []

    def test_state_changed_while_generator_is_consumed_counts(self) -> None:
        app = App("lazy")

        @app.flat_map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            yield "first"
            state.update(99)

        t = StreamTester(app)
        assert t.run_batch([{"k": "a"}]) == ["first"]
        assert t.state("a") == 99

    def test_map_groups_must_return_one_row(self) -> None:
        app = App("m")

        @app.map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            return None

        with pytest.raises(UserFunctionError, match="exactly one row"):
            StreamTester(app).run_batch([{"k": "a"}])

    def test_map_groups_emits_one_row_per_group(self) -> None:
        app = App("m")

        @app.map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.update(len(values))
            return {"k": key, "n": len(values)}

        assert StreamTester(app).run_batch([{"k": "a"}, {"k": "a"}, {"k": "b"}]) == [
            {"k": "a", "n": 2}, {"k": "b", "n": 1}]

    def test_flat_handler_returning_a_dict_is_an_error(self) -> None:
        app = App("d")

        @app.flat_map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            return {"k": key}

        with pytest.raises(UserFunctionError, match="iterable of rows"):
            StreamTester(app).run_batch([{"k": "a"}])


class TestAccounting:
    def test_read_equals_processed_plus_late_plus_dead_lettered(self) -> None:
        app, _ = recorder_app(ET, watermark_delay="0 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 50}])
        t.run_batch([])
        t.run_batch([{"k": "a", "ts": 40}, {"ts": 60}, {"k": "b", "ts": "x"}, {"k": "c", "ts": 70}])
        p = t.progress
        assert p is not None
        dead = sum(p.records_dead_lettered.values())
        assert (p.records_read, p.records_processed, p.records_late, dead) == (4, 1, 1, 2)
        assert p.records_read == p.records_processed + p.records_late + dead

    def test_stateless_steps_run_before_grouping_and_bad_records_are_dead_lettered(self) -> None:
        app = App("steps")
        app.filter(lambda r: r["v"] != 0)
        app.map(lambda r: {**r, "v": 10 // r["v"] if r["v"] != 5 else 1 // 0})
        app.flat_map(lambda r: [r, r])

        @app.flat_map_groups_with_state(key="k")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            return [(key, [v["v"] for v in values])]

        t = StreamTester(app)
        assert t.run_batch([{"k": "a", "v": 2}, {"k": "a", "v": 0}, {"k": "a", "v": 5}]) == [("a", [5, 5])]
        assert [r["error"] for r in t.dead_letters.rows] == ["step"]
        assert "ZeroDivisionError" in t.dead_letters.rows[0]["reason"]

    def test_missing_key_is_dead_lettered_not_fatal(self) -> None:
        app, calls = recorder_app()
        t = StreamTester(app)
        t.run_batch([{"k": "a"}, {"other": 1}, {"k": ["unhashable"]}])
        assert [c["key"] for c in calls] == ["a"]
        assert sorted(r["error"] for r in t.dead_letters.rows) == ["key", "key"]


def run_app(app: App, trigger: str) -> None:
    executor = app.build_executor()
    executor.start()
    executor.run(Trigger.parse(trigger), threading.Event())
    executor.close()


class TestTriggersAndNoDataBatches:
    def counting_app(self, timeout: GroupStateTimeout, records: list, **kw: Any) -> tuple[App, list]:
        app, calls = recorder_app(timeout, **kw)
        app.source = MemorySource(records)
        app.max_records_per_trigger = 2
        batches: list[int] = []
        app.add_listener(lambda p: batches.append(p.records_read))
        return app, batches

    def test_available_now_processes_everything_in_bounded_batches_then_stops(self) -> None:
        app, batches = self.counting_app(GroupStateTimeout.NO_TIMEOUT, [{"k": i} for i in range(5)])
        run_app(app, "available_now")
        assert batches == [2, 2, 1]  # no-data batches never run without timeouts

    def test_available_now_runs_the_no_data_batch_the_watermark_calls_for(self) -> None:
        app, batches = self.counting_app(ET, [{"k": "a", "ts": 100}, {"k": "b", "ts": 200}], watermark_delay="10 ms")
        run_app(app, "available_now")
        assert batches == [2, 0]  # the watermark moved to 190, so one no-data batch fires a's timeout

    def test_processing_time_timeouts_ask_for_a_no_data_batch(self) -> None:
        app, batches = self.counting_app(PT, [{"k": "a"}])
        run_app(app, "available_now")
        assert batches == [1, 0]

    def test_once_runs_one_batch_and_no_no_data_batch(self) -> None:
        app, batches = self.counting_app(PT, [{"k": i} for i in range(5)])
        run_app(app, "once")
        assert batches == [2]
        run_app(app, "once")  # state and position continue on the same app
        assert batches == [2, 2]

    def test_once_without_data_runs_nothing(self) -> None:
        app, batches = self.counting_app(PT, [])
        run_app(app, "once")
        assert batches == []

    def test_app_run_and_stop_from_another_thread(self) -> None:
        sink = MemorySink()
        source = MemorySource([{"k": "a"}])
        app = App("live", source=source, trigger="50 ms")

        @app.flat_map_groups_with_state(key="k", output_mode="update", sink=sink)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.update((state.get_option() or 0) + len(values))
            yield (key, state.get())

        thread = threading.Thread(target=app.run)
        thread.start()
        try:
            for _ in range(100):
                if sink.rows:
                    break
                threading.Event().wait(0.02)
            source.add([{"k": "a"}, {"k": "a"}])
            for _ in range(100):
                if len(sink.rows) >= 2:
                    break
                threading.Event().wait(0.02)
        finally:
            app.stop()
            thread.join(5)
        assert not thread.is_alive() and sink.rows == [("a", 1), ("a", 3)]


class TestReplay:
    def test_crash_mid_batch_replays_the_same_plan(self) -> None:
        clock = FakeClock(1000)
        sink = MemorySink()
        app = App("replay", source=MemorySource([{"k": "a"}, CRASH, {"k": "b"}]), clock=clock)

        @app.flat_map_groups_with_state(key="k", sink=sink, timeout=PT)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.update(1)
            state.set_timeout_duration(1)
            yield (key, state.get_current_processing_time_ms())

        with pytest.raises(SimulatedCrashError):
            app.run("once")
        clock.set(5000)  # a later clock must not change the replayed batch
        app.run("once")
        assert sink.batches == {0: [("a", 1000), ("b", 1000)]}
        assert isinstance(app.executor, Executor) and app.executor.next_batch_id == 1


class TestBackpressure:
    class Flaky(MemorySink):
        """Unavailable for the first ``failures`` calls of open and of write."""

        def __init__(self, failures: int) -> None:
            super().__init__()
            self.open_failures = self.write_failures = failures

        def open(self, context: Any) -> None:
            if self.open_failures:
                self.open_failures -= 1
                raise SinkUnavailableError("not up yet", retry_after=0.0)

        def write(self, batch_id: int, rows: Any) -> None:
            if self.write_failures:
                self.write_failures -= 1
                raise SinkUnavailableError("throttled")
            super().write(batch_id, rows)

    def make(self, sink: MemorySink, max_seconds: float) -> App:
        from statefulstream import RetryPolicy

        app = App("bp", source=MemorySource([{"k": "a"}]),
                  sink_retry=RetryPolicy(max_attempts=None, max_elapsed=dt.timedelta(seconds=max_seconds),
                                         initial_backoff="1 ms", max_backoff="10 ms"))

        @app.flat_map_groups_with_state(key="k", sink=sink)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.update(1)
            yield key

        return app

    def test_unavailable_sink_holds_open_and_write_until_it_recovers(self) -> None:
        sink = self.Flaky(3)
        app = self.make(sink, max_seconds=5)
        app.run("once")
        assert sink.rows == ["a"] and sink.open_failures == 0

    def test_sink_down_past_the_limit_stops_without_commit(self) -> None:
        sink = self.Flaky(10**6)
        sink.open_failures = 0
        app = self.make(sink, max_seconds=0.05)
        with pytest.raises(SinkError, match="stayed unavailable for 0.05 s while writing batch 0.*nothing was "
                                            "dropped"):
            app.run("once")
        assert app.executor is not None and app.executor.next_batch_id == 0
        assert dict(app.executor.store.items()) == {}


class TestGarbageCollectorPause:
    """The cyclic collector is off while the handler runs and back on after the batch, success or failure."""

    def _app(self, seen: list[bool], fail: bool = False) -> App:
        app = App("gc")

        @app.flat_map_groups_with_state(key="k")
        def handler(key: Any, values: list, state: GroupState[int]) -> Any:
            seen.append(gc.isenabled())
            if fail:
                raise ValueError("boom")
            return ()

        return app

    def test_paused_during_the_batch_and_enabled_after(self) -> None:
        seen: list[bool] = []
        assert gc.isenabled()
        StreamTester(self._app(seen)).run_batch([{"k": 1}, {"k": 2}])
        assert seen == [False, False]
        assert gc.isenabled()

    def test_enabled_again_after_a_failing_batch(self) -> None:
        seen: list[bool] = []
        with pytest.raises(UserFunctionError):
            StreamTester(self._app(seen, fail=True)).run_batch([{"k": 1}])
        assert seen == [False]
        assert gc.isenabled()

    def test_left_off_when_the_application_turned_it_off(self) -> None:
        seen: list[bool] = []
        gc.disable()
        try:
            StreamTester(self._app(seen)).run_batch([{"k": 1}])
            assert not gc.isenabled()
        finally:
            gc.enable()
        assert seen == [False]
