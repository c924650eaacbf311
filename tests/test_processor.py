"""Stateful processors (transform_with_state): variables, TTL, timers, call order, errors, through StreamTester."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statefulstream import (
    App,
    ConfigError,
    ExpiredTimerInfo,
    ProcessorHandleError,
    StatefulProcessor,
    StatefulProcessorHandle,
    TimeMode,
    TimerValues,
    UserFunctionError,
)
from statefulstream.memory_sink import MemorySink
from statefulstream.processor import layout
from statefulstream.processor.variables import ListState, ProcessorStats, Scope
from statefulstream.sources.file import FileSource
from statefulstream.sources.memory import MemorySource
from statefulstream.state.kv import MemoryKV, StagedKV
from statefulstream.testing import StreamTester


class Recorder(StatefulProcessor):
    """Logs every call and applies scripted operations carried by the rows."""

    def __init__(self, ttl: str | None = None) -> None:
        self.ttl = ttl
        self.calls: list[tuple[Any, ...]] = []

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.value = handle.get_value_state("value", ttl=self.ttl)
        self.items = handle.get_list_state("items", ttl=self.ttl)
        self.table = handle.get_map_state("table", ttl=self.ttl)
        self.calls.append(("init",))

    def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
        self.calls.append(("rows", key, [r.get("op") for r in rows]))
        for row in rows:
            op, arg = row.get("op"), row.get("arg")
            if op == "set":
                self.value.update(arg)
            elif op == "append":
                self.items.append_value(arg)
            elif op == "put_list":
                self.items.put(arg)
            elif op == "map_put":
                self.table.put(arg[0], arg[1])
            elif op == "map_remove":
                self.table.remove(arg)
            elif op == "clear":
                self.value.clear()
                self.items.clear()
                self.table.clear()
            elif op == "timer":
                self.handle.register_timer(arg)
            elif op == "untimer":
                self.handle.delete_timer(arg)
            elif op == "fail":
                raise RuntimeError("scripted failure")
        yield {"key": key, "value": self.value.get(), "items": list(self.items.get()),
               "table": dict(self.table.items()),
               "timers": self.handle.list_timers() if self.handle.time_mode is not TimeMode.NONE else None}

    def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                             expired_timer_info: ExpiredTimerInfo) -> Iterator[Any]:
        ts = expired_timer_info.get_expiry_time_in_ms()
        self.calls.append(("timer", key, ts))
        yield {"key": key, "fired": ts, "now": timer_values.get_current_processing_time_in_ms()}

    def close(self) -> None:
        self.calls.append(("close",))


def make_tester(processor: StatefulProcessor, time_mode: str = "processing_time", **options: Any) -> StreamTester:
    app = App("proc")
    app.transform_with_state(processor, key="k", time_mode=time_mode, **options)
    return StreamTester(app, start_ms=1_000)


class TestVariables:
    def test_value_list_and_map_state_per_key(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "set", "arg": 1}, {"k": "a", "op": "append", "arg": "x"},
                     {"k": "a", "op": "append", "arg": "y"}, {"k": "a", "op": "map_put", "arg": ["m", 2]},
                     {"k": "b", "op": "append", "arg": "z"}])
        assert t.variables("a") == {"value": 1, "items": ["x", "y"], "table": {"m": 2}}
        assert t.variables("b") == {"value": None, "items": ["z"], "table": {}}
        out = t.run_batch([{"k": "a", "op": "put_list", "arg": [7, 8]}, {"k": "a", "op": "map_remove", "arg": "m"},
                           {"k": "a", "op": "map_put", "arg": [("t", 1), {"nested": [1]}]}])
        assert out == [{"key": "a", "value": 1, "items": [7, 8], "table": {("t", 1): {"nested": [1]}},
                        "timers": []}]
        t.run_batch([{"k": "a", "op": "clear"}])
        assert t.variables("a") == {"value": None, "items": [], "table": {}}

    def test_list_append_and_map_put_write_one_entry_not_the_whole_variable(self) -> None:
        committed = MemoryKV()
        kv = StagedKV(committed)
        scope = Scope(kv, 0, ProcessorStats())
        scope.set_key("device", b"\xa6device")
        readings = ListState("readings", None, scope)
        readings.append_list(range(500))
        committed.apply(kv.staged())
        kv.discard()
        readings.append_value(500)
        staged = [k for k, _ in kv.staged()]
        prefix = layout.entry_prefix("readings", b"\xa6device")
        assert staged == [prefix + layout.COUNTER_SUFFIX, prefix + layout.element_suffix(500)]
        assert list(readings.get()) == list(range(501))

    def test_update_none_is_refused_with_the_variable_named(self) -> None:
        class Bad(Recorder):
            def handle_input_rows(self, key: Hashable, rows: list[Any], tv: TimerValues) -> None:
                self.value.update(None)

        t = make_tester(Bad())
        with pytest.raises(UserFunctionError) as info:
            t.run_batch([{"k": "a"}])
        assert isinstance(info.value.__cause__, ProcessorHandleError)
        assert "'value'" in str(info.value) and "clear()" in str(info.value)

    def test_a_value_the_codec_cannot_store_fails_the_batch_naming_the_key(self) -> None:
        t = make_tester(Recorder())
        t.run_batch([{"k": "a", "op": "map_put", "arg": ["m", 1]}])
        with pytest.raises(UserFunctionError) as info:
            t.run_batch([{"k": "a", "op": "map_put", "arg": ["m", object()]}])
        assert info.value.key == "a" and "cannot" in str(info.value.__cause__)
        assert t.variables("a")["table"] == {"m": 1}

    def test_declaring_a_stored_variable_as_another_kind_is_refused(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "set", "arg": 1}])

        def init(handle: StatefulProcessorHandle) -> None:
            handle.get_list_state("value")

        p.init = init  # type: ignore[method-assign]
        with pytest.raises(UserFunctionError, match="stored as a value variable but now declared as a list"):
            t.run_batch([{"k": "a"}])

    def test_delete_if_exists_purges_a_variable_for_every_key(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "append", "arg": 1}, {"k": "b", "op": "append", "arg": 2}])
        original = p.init

        def init(handle: StatefulProcessorHandle) -> None:
            handle.delete_if_exists("items")
            original(handle)

        p.init = init  # type: ignore[method-assign]
        t.run_batch([])
        assert t.variable("a", "items") == [] and t.variable("b", "items") == []
        assert t.progress is not None and t.progress.processor is not None
        assert t.progress.processor["deleted_state_vars"] == 1


class TestTTL:
    def test_expired_values_are_never_visible_and_removed_at_the_end_of_the_batch(self) -> None:
        p = Recorder(ttl="1 second")
        t = make_tester(p, time_mode="none")
        t.run_batch([{"k": "a", "op": "set", "arg": 1}, {"k": "a", "op": "append", "arg": 1},
                     {"k": "a", "op": "map_put", "arg": ["m", 1]}], processing_time_ms=1_000)
        t.run_batch([{"k": "a", "op": "append", "arg": 2}], processing_time_ms=1_500)
        # At 2_000 the first three values expire (written at 1_000 + 1_000); the append at 1_500 lives on.
        out = t.run_batch([{"k": "a"}], processing_time_ms=2_000)
        assert out[0]["value"] is None and out[0]["items"] == [2] and out[0]["table"] == {}
        assert t.progress is not None and t.progress.processor is not None
        assert t.progress.processor["values_removed_by_ttl"] == 3
        assert t.progress.processor["vars_with_ttl"] == 3
        t.run_batch([{"k": "b"}], processing_time_ms=2_500)  # key "a" not read: removed by the cleanup
        assert t.progress.processor["values_removed_by_ttl"] == 1
        assert t.variables("a") == {"value": None, "items": [], "table": {}}
        assert t.store.kv().scan(layout.TTL_INDEX) == []

    def test_ttl_in_milliseconds_by_name_and_a_bare_number_refused(self) -> None:
        class Millis(Recorder):
            def init(self, handle: StatefulProcessorHandle) -> None:
                super().init(handle)
                self.value = handle.get_value_state("millis", ttl_duration_ms=1_000)

        t = make_tester(Millis(), time_mode="none")
        t.run_batch([{"k": "a", "op": "set", "arg": 1}], processing_time_ms=1_000)
        assert t.run_batch([{"k": "a"}], processing_time_ms=1_999)[0]["value"] == 1
        assert t.run_batch([{"k": "a"}], processing_time_ms=2_000)[0]["value"] is None
        with pytest.raises(UserFunctionError) as info:
            make_tester(Recorder(ttl=1_000), time_mode="none").run_batch([{"k": "a"}])  # type: ignore[arg-type]
        assert isinstance(info.value.__cause__, ConfigError) and "bare number" in str(info.value)

    def test_an_update_restarts_the_ttl(self) -> None:
        t = make_tester(Recorder(ttl="1 second"), time_mode="none")
        t.run_batch([{"k": "a", "op": "set", "arg": 1}], processing_time_ms=1_000)
        t.run_batch([{"k": "a", "op": "set", "arg": 2}], processing_time_ms=1_900)
        out = t.run_batch([{"k": "a"}], processing_time_ms=2_500)
        assert out[0]["value"] == 2
        assert t.progress is not None and t.progress.processor is not None
        assert t.progress.processor["values_removed_by_ttl"] == 0


class TestTimers:
    def test_timers_fire_after_all_input_rows_in_timestamp_order_once_each(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "b", "op": "timer", "arg": 3_000}, {"k": "a", "op": "timer", "arg": 5_000},
                     {"k": "a", "op": "timer", "arg": 2_000}, {"k": "c", "op": "timer", "arg": 9_000}])
        assert t.timers("a") == [2_000, 5_000]
        assert t.timers() == [(2_000, "a"), (3_000, "b"), (5_000, "a"), (9_000, "c")]
        p.calls.clear()
        out = t.run_batch([{"k": "c", "op": "x"}], processing_time_ms=5_000)
        # Input rows first (key c), then due timers (ts <= batch time) by timestamp, across keys.
        assert p.calls == [("init",), ("rows", "c", ["x"]), ("timer", "a", 2_000), ("timer", "b", 3_000),
                           ("timer", "a", 5_000), ("close",)]
        assert [o.get("fired") for o in out] == [None, 2_000, 3_000, 5_000]
        assert t.timers() == [(9_000, "c")]
        p.calls.clear()
        t.run_batch([], processing_time_ms=8_999)
        assert [c for c in p.calls if c[0] == "timer"] == []
        assert t.progress is not None and t.progress.processor is not None
        assert t.progress.processor["timers_expired"] == 0

    def test_a_timer_registered_by_input_rows_below_the_threshold_fires_in_the_same_batch(self) -> None:
        p = Recorder()
        t = make_tester(p)
        out = t.run_batch([{"k": "a", "op": "timer", "arg": 500}], processing_time_ms=1_000)
        assert out[1] == {"key": "a", "fired": 500, "now": 1_000}
        assert t.timers() == []

    def test_timer_handlers_see_timers_as_they_stood_when_the_timer_phase_began(self) -> None:
        class Chain(Recorder):
            def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                                     expired_timer_info: ExpiredTimerInfo) -> Iterator[Any]:
                yield from super().handle_expired_timer(key, timer_values, expired_timer_info)
                if expired_timer_info.get_expiry_time_in_ms() == 2_000:
                    self.handle.delete_timer(3_000)  # due too, but deleted before its turn: never fires
                    self.handle.register_timer(2_500)  # due, but registered in the timer phase: next batch

        p = Chain()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "timer", "arg": 2_000}, {"k": "a", "op": "timer", "arg": 3_000}])
        out = t.run_batch([], processing_time_ms=4_000)
        assert [o["fired"] for o in out] == [2_000]
        assert t.timers("a") == [2_500]
        out = t.run_batch([], processing_time_ms=4_001)
        assert [o["fired"] for o in out] == [2_500] and t.timers() == []

    def test_delete_and_duplicate_register(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "timer", "arg": 4_000}, {"k": "a", "op": "timer", "arg": 4_000},
                     {"k": "a", "op": "timer", "arg": 6_000}, {"k": "a", "op": "untimer", "arg": 6_000},
                     {"k": "a", "op": "untimer", "arg": 7_000}])
        assert t.timers("a") == [4_000]
        figures = t.progress.processor if t.progress else None
        assert figures is not None and figures["timers_registered"] == 2 and figures["timers_deleted"] == 1

    def test_event_time_timers_fire_when_the_watermark_reaches_them(self) -> None:
        p = Recorder()
        app = App("proc")
        app.transform_with_state(p, key="k", time_mode="event_time", event_time="ts", watermark_delay="1 second")
        t = StreamTester(app, start_ms=1_000)
        t.run_batch([{"k": "a", "ts": 10_000, "op": "timer", "arg": 12_000}])
        assert t.watermark_ms == 9_000
        t.run_batch([{"k": "a", "ts": 12_999}])
        assert [c for c in p.calls if c[0] == "timer"] == []  # the batch ran with watermark 9_000
        out = t.run_batch([])  # watermark 11_999: not yet
        assert out == []
        t.run_batch([{"k": "b", "ts": 13_000}])  # watermark 12_000 for the next batch
        out = t.run_batch([])
        assert out == [{"key": "a", "fired": 12_000, "now": 1_000}]

    def test_late_rows_are_dropped_whenever_a_watermark_is_set(self) -> None:
        p = Recorder()
        app = App("proc")
        app.transform_with_state(p, key="k", time_mode="none", event_time="ts", watermark_delay="0 ms")
        t = StreamTester(app)
        t.run_batch([{"k": "a", "ts": 5_000}])
        t.run_batch([])
        out = t.run_batch([{"k": "a", "ts": 5_000, "op": "late"}, {"k": "a", "ts": 5_001, "op": "ok"}])
        assert [c for c in p.calls if c[0] == "rows"][-1] == ("rows", "a", ["ok"])
        assert out and t.progress is not None and t.progress.records_late == 1

    def test_timers_refused_in_init_and_without_a_time_mode(self) -> None:
        class InInit(Recorder):
            def init(self, handle: StatefulProcessorHandle) -> None:
                handle.register_timer(1)

        with pytest.raises(UserFunctionError, match="not allowed in init"):
            make_tester(InInit()).run_batch([{"k": "a"}])
        with pytest.raises(UserFunctionError, match="time_mode is 'none'"):
            make_tester(Recorder(), time_mode="none").run_batch([{"k": "a", "op": "timer", "arg": 1}])


class TestBatches:
    def test_a_failing_handler_commits_nothing_and_the_batch_can_be_replayed(self) -> None:
        p = Recorder()
        t = make_tester(p)
        t.run_batch([{"k": "a", "op": "append", "arg": 1}, {"k": "a", "op": "timer", "arg": 9_000}])
        with pytest.raises(UserFunctionError) as info:
            t.run_batch([{"k": "a", "op": "append", "arg": 2}, {"k": "b", "op": "fail"}])
        assert info.value.key == "b" and info.value.batch_id == 1
        assert "handle_input_rows" in str(info.value)
        assert t.variables("a")["items"] == [1] and t.timers() == [(9_000, "a")]

    def test_initial_state_is_loaded_in_batch_zero_only_before_input_rows(self) -> None:
        class Loaded(Recorder):
            def handle_initial_state(self, key: Hashable, initial_state: Any, timer_values: TimerValues) -> None:
                self.calls.append(("initial", key))
                self.value.update(initial_state)

        p = Loaded()
        t = make_tester(p, initial_state={"a": 10, "z": 26})
        out = t.run_batch([{"k": "a"}])
        assert p.calls[:4] == [("init",), ("initial", "a"), ("initial", "z"), ("rows", "a", [None])]
        assert out[0]["value"] == 10 and t.variable("z", "value") == 26
        p.calls.clear()
        t.run_batch([{"k": "a"}])
        assert ("initial", "a") not in p.calls

    def test_a_batch_query_calls_each_key_once_fires_no_timer_and_keeps_nothing(self) -> None:
        p = Recorder()
        app = App("proc")
        app.transform_with_state(p, key="k", time_mode="processing_time")
        rows = [{"k": "b", "op": "append", "arg": 1}, {"k": "a", "op": "timer", "arg": 0},
                {"k": "b", "op": "append", "arg": 2}]
        out = app.run_batch(rows)
        assert [(o["key"], o["items"]) for o in out] == [("a", []), ("b", [1, 2])]
        assert [c[0] for c in p.calls] == ["init", "rows", "rows", "close"]  # the due timer is not fired
        assert app.run_batch([{"k": "b"}])[0]["items"] == []  # nothing was kept

    def test_the_spark_engine_refuses_a_processor_before_anything_starts(self, tmp_path: Path) -> None:
        from statefulstream.spark.plan import plan_for_spark  # what app.run(engine="spark") checks first

        app = App("proc", source=FileSource(str(tmp_path)), checkpoint_dir=str(tmp_path / "cp"))
        app.transform_with_state(Recorder(), key="k")
        with pytest.raises(ConfigError, match="processors are not mapped to Spark's transformWithStateInPandas"):
            plan_for_spark(app, app.trigger)
        assert not (tmp_path / "cp").exists()

    def test_initial_state_needs_handle_initial_state(self) -> None:
        with pytest.raises(ConfigError, match="does not override handle_initial_state"):
            App("x").transform_with_state(Recorder(), key="k", initial_state={"a": 1})

    def test_decorator_form_and_option_errors(self) -> None:
        app = App("x")

        @app.transform_with_state(key="k")
        class Echo(StatefulProcessor):
            def init(self, handle: StatefulProcessorHandle) -> None:
                pass

            def handle_input_rows(self, key: Hashable, rows: list[Any], tv: TimerValues) -> list[Any]:
                return rows

        assert app.operator is not None and isinstance(app.operator.processor, Echo)
        assert StreamTester(app).run_batch([{"k": 1}, {"k": 1}]) == [{"k": 1}, {"k": 1}]
        with pytest.raises(ConfigError, match="did you mean 'time_mode'"):
            App("y").transform_with_state(Echo(), key="k", timemode="none")
        with pytest.raises(ConfigError, match="needs a watermark"):
            App("y").transform_with_state(Echo(), key="k", time_mode="event_time")
        with pytest.raises(ConfigError, match="takes a StatefulProcessor"):
            App("y").transform_with_state(lambda k, v, s: None, key="k")


class TestDurable:
    def test_state_and_timers_survive_a_restart_on_rocksdb(self, tmp_path: Path) -> None:
        source = MemorySource()  # one source, as a topic that outlives the app

        def run(records: list[dict[str, Any]], now: int) -> tuple[list[Any], Recorder]:
            p = Recorder()
            sink = MemorySink()
            source.add(records)
            app = App("durable", source=source, checkpoint_dir=str(tmp_path / "cp"), clock=lambda: now)
            app.transform_with_state(p, key="k", time_mode="processing_time", sink=sink)
            app.run("once")
            return sink.rows, p

        run([{"k": "a", "op": "append", "arg": 1}, {"k": "a", "op": "timer", "arg": 5_000},
             {"k": "a", "op": "map_put", "arg": ["x", 1]}], 1_000)
        rows, p = run([{"k": "a", "op": "append", "arg": 2}], 6_000)
        assert rows[0]["items"] == [1, 2] and rows[0]["table"] == {"x": 1}
        assert rows[1] == {"key": "a", "fired": 5_000, "now": 6_000}
        rows, p = run([{"k": "a"}], 7_000)
        assert [c for c in p.calls if c[0] == "timer"] == []  # fired once, not again after the restart


class Model:
    """An independent model of a processor's per-key list and map state."""

    def __init__(self) -> None:
        self.lists: dict[str, list[int]] = {}
        self.maps: dict[str, dict[int, int]] = {}


def test_random_list_and_map_operations_match_a_model_over_many_batches() -> None:
    rng = random.Random(11)
    p, model = Recorder(), Model()
    t = make_tester(p, time_mode="none")
    for _ in range(40):
        rows: list[dict[str, Any]] = []
        staged = Model()
        staged.lists = {k: list(v) for k, v in model.lists.items()}
        staged.maps = {k: dict(v) for k, v in model.maps.items()}
        for _ in range(rng.randrange(1, 15)):
            key = rng.choice("abc")
            op = rng.choice(["append", "put_list", "map_put", "map_remove", "clear"])
            if op == "append":
                arg: Any = rng.randrange(100)
                staged.lists.setdefault(key, []).append(arg)
            elif op == "put_list":
                arg = [rng.randrange(100) for _ in range(rng.randrange(4))]
                staged.lists[key] = list(arg)
            elif op == "map_put":
                arg = [rng.randrange(5), rng.randrange(100)]
                staged.maps.setdefault(key, {})[arg[0]] = arg[1]
            elif op == "map_remove":
                arg = rng.randrange(5)
                staged.maps.get(key, {}).pop(arg, None)
            else:
                arg = None
                staged.lists[key], staged.maps[key] = [], {}
            rows.append({"k": key, "op": op, "arg": arg})
        t.run_batch(rows)
        model = staged
        for key in "abc":
            got = t.variables(key)
            assert got["items"] == model.lists.get(key, [])
            assert got["table"] == model.maps.get(key, {})
