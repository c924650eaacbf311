"""App and decorators fail at definition time with messages that name the argument (SEMANTICS.md B.1, B.5)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import statefulstream
from statefulstream import App, ConfigError, GroupState, GroupStateTimeout, OutputMode
from statefulstream.durations import parse_duration_ms
from statefulstream.sources import MemorySource
from statefulstream.triggers import Trigger, TriggerKind


def handler(key: Any, values: list, state: GroupState[Any]) -> Any:
    return []


def decorate(flat: bool = True, **options: Any) -> App:
    app = App("a")
    deco = app.flat_map_groups_with_state if flat else app.map_groups_with_state
    deco(**options)(handler)
    return app


class TestDecoratorValidation:
    def test_key_is_required(self) -> None:
        with pytest.raises(ConfigError, match="key= is required"):
            decorate()

    def test_unknown_argument_suggests_the_right_one(self) -> None:
        with pytest.raises(ConfigError, match="unknown argument 'keys' \\(did you mean 'key'\\?\\)"):
            decorate(key="k", keys="k")

    def test_bare_decorator_is_explained(self) -> None:
        app = App("a")
        with pytest.raises(ConfigError, match=r"needs arguments: write @app.flat_map_groups_with_state\(key=...\)"):
            app.flat_map_groups_with_state(handler)

    def test_handler_must_take_three_arguments(self) -> None:
        app = App("a")
        with pytest.raises(ConfigError, match="must accept three arguments \\(key, values, state\\)"):
            app.flat_map_groups_with_state(key="k")(lambda key, values: [])

    @pytest.mark.parametrize("key", [3, "", [], [1, 2]])
    def test_bad_key_spec(self, key: Any) -> None:
        with pytest.raises(ConfigError, match="key must be a field name"):
            decorate(key=key)

    def test_complete_mode_is_rejected(self) -> None:
        with pytest.raises(ConfigError, match="should be 'append' or 'update'"):
            decorate(key="k", output_mode="complete")

    def test_unknown_output_mode(self) -> None:
        with pytest.raises(ConfigError, match="output_mode must be one of"):
            decorate(key="k", output_mode="upsert")

    @pytest.mark.parametrize("mode", ["append", OutputMode.APPEND])
    def test_map_groups_only_in_update_mode(self, mode: Any) -> None:
        with pytest.raises(ConfigError, match="output_mode must be 'update'"):
            decorate(flat=False, key="k", output_mode=mode)

    def test_map_groups_defaults_to_update(self) -> None:
        assert decorate(flat=False, key="k").operator.output_mode is OutputMode.UPDATE  # type: ignore[union-attr]

    def test_event_time_timeout_needs_a_watermark(self) -> None:
        with pytest.raises(ConfigError, match="timeout=EVENT_TIME needs a watermark"):
            decorate(key="k", timeout=GroupStateTimeout.EVENT_TIME)

    def test_negative_watermark_delay(self) -> None:
        with pytest.raises(ConfigError, match="watermark_delay should not be negative"):
            decorate(key="k", event_time="ts", watermark_delay="-1 second")

    def test_watermark_delay_needs_event_time_and_vice_versa(self) -> None:
        with pytest.raises(ConfigError, match="watermark_delay= needs event_time="):
            decorate(key="k", watermark_delay="1 second")
        with pytest.raises(ConfigError, match="event_time= needs watermark_delay="):
            decorate(key="k", event_time="ts")

    def test_month_and_year_units_in_watermark_delay(self) -> None:
        app = decorate(key="k", event_time="ts", watermark_delay="1 year 1 month")
        assert app.operator.watermark_delay_ms == 13 * 31 * 86_400_000  # type: ignore[union-attr]

    def test_unknown_timeout_kind(self) -> None:
        with pytest.raises(ConfigError, match="timeout must be one of"):
            decorate(key="k", timeout="wallclock")

    def test_sink_must_be_a_sink_with_hint_for_functions(self) -> None:
        with pytest.raises(ConfigError, match="wrap a function with statefulstream.sinks.ForeachSink"):
            decorate(key="k", sink=print)

    def test_duplicate_initial_state_keys(self) -> None:
        with pytest.raises(ConfigError, match="several rows for key 'a'.*de-duplicate"):
            decorate(key="k", initial_state=[("a", 1), ("a", 2)])

    def test_initial_state_none_value(self) -> None:
        with pytest.raises(ConfigError, match="initial state of key 'a' is None"):
            decorate(key="k", initial_state={"a": None})

    def test_one_stateful_operator_per_app(self) -> None:
        app = decorate(key="k")
        with pytest.raises(ConfigError, match="already has the stateful operator"):
            app.flat_map_groups_with_state(key="k")(handler)

    def test_steps_must_come_before_the_operator(self) -> None:
        app = decorate(key="k")
        with pytest.raises(ConfigError, match="define them before"):
            app.map(lambda r: r)


class TestAppValidation:
    @pytest.mark.parametrize("kwargs,match", [
        ({"max_records_per_trigger": 0}, "max_records_per_trigger must be a positive int"),
        ({"keep_batches": 0}, "keep_batches must be an int >= 1"),
        ({"trigger": "sometimes"}, "trigger must be None, 'once', 'available_now'"),
        ({"dead_letters": 5}, "dead_letters must be a Sink"),
    ])
    def test_bad_app_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            App("a", **kwargs)

    def test_run_without_source_or_operator(self) -> None:
        with pytest.raises(ConfigError, match="has no source"):
            App("a").run()
        with pytest.raises(ConfigError, match="has no stateful operator"):
            App("a", source=MemorySource()).run()

    def test_snapshot_needs_a_checkpoint(self) -> None:
        with pytest.raises(ConfigError, match="no checkpoint_dir"):
            App("a").snapshot("/tmp/x")


class TestDurationsAndTriggers:
    @pytest.mark.parametrize("text,ms", [("10 seconds", 10_000), ("1 hour 30 minutes", 5_400_000),
                                         ("500 ms", 500), ("2d", 172_800_000), ("interval 1 minute", 60_000),
                                         ("1.5 seconds", 1500), ("1 month", 31 * 86_400_000)])
    def test_parse(self, text: str, ms: int) -> None:
        assert parse_duration_ms(text) == ms

    @pytest.mark.parametrize("text", ["ten seconds", "5 parsecs", "", "5"])
    def test_bad_durations_name_the_argument(self, text: str) -> None:
        with pytest.raises(ConfigError, match="^trigger interval"):
            parse_duration_ms(text, name="trigger interval")

    def test_trigger_spellings(self) -> None:
        assert Trigger.parse("available_now").kind is TriggerKind.AVAILABLE_NOW
        assert Trigger.parse("availableNow").kind is TriggerKind.AVAILABLE_NOW
        assert Trigger.parse("once").stops and not Trigger.parse(None).stops
        assert Trigger.parse(dt.timedelta(milliseconds=250)) == Trigger.processing_time("250 ms")
        with pytest.raises(ConfigError, match="trigger must be"):
            Trigger.parse("0 seconds")


def test_public_surface_is_exact_and_sorted() -> None:
    exported = statefulstream.__all__
    assert exported == sorted(set(exported))
    for name in exported:
        assert hasattr(statefulstream, name), name
    public = {n for n in dir(statefulstream) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(exported)
