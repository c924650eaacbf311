"""GroupState follows SEMANTICS.md A (Spark's GroupStateImpl and GroupStateSuite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from statefulstream import (
    App,
    ConfigError,
    GroupState,
    GroupStateTimeout,
    InvalidStateValueError,
    InvalidTimeoutError,
    StateNotFoundError,
    TimeoutNotConfiguredError,
    WatermarkNotDefinedError,
)
from statefulstream.records import NO_TIMEOUT_MS, NO_WATERMARK_MS
from statefulstream.state.group_state import Action, Outcome, call_states
from statefulstream.testing import StreamTester, make_group_state
from statefulstream.timeutil import MAX_TIME_MS

PT = GroupStateTimeout.PROCESSING_TIME
ET = GroupStateTimeout.EVENT_TIME
NONE = GroupStateTimeout.NO_TIMEOUT


class TestFactoryPreconditions:
    def test_negative_batch_time_is_rejected(self) -> None:
        with pytest.raises(ConfigError, match="batch_processing_time_ms must be 0 or positive"):
            GroupState(None, False, timeout=NONE, batch_processing_time_ms=-1, watermark_ms=-1,
                       watermark_present=False)

    def test_negative_watermark_when_present_is_rejected(self) -> None:
        with pytest.raises(ConfigError, match="watermark_ms must be 0 or positive"):
            GroupState(None, False, timeout=ET, batch_processing_time_ms=0, watermark_ms=-5,
                       watermark_present=True)

    def test_timed_out_without_timeout_kind_is_an_unsupported_operation(self) -> None:
        # Spark: UnsupportedOperationException, the error of the other illegal calls (not an argument error).
        with pytest.raises(TimeoutNotConfiguredError, match="has_timed_out") as caught:
            make_group_state(timeout=NONE, has_timed_out=True)
        assert not isinstance(caught.value, ValueError)

    def test_test_factory_builds_the_same_object_as_production(self) -> None:
        state = make_group_state({"a": 1}, timeout=ET, batch_processing_time_ms=5, watermark_ms=3,
                                 has_timed_out=True)
        assert type(state) is GroupState
        assert state.get() == {"a": 1} and state.has_timed_out
        assert state.get_current_processing_time_ms() == 5 and state.get_current_watermark_ms() == 3


class TestReadingAndUpdating:
    def test_new_group_has_no_state(self) -> None:
        state = make_group_state()
        assert state.exists is False
        assert state.get_option() is None
        with pytest.raises(StateNotFoundError, match="get_option"):
            state.get()

    def test_update_defines_state(self) -> None:
        state = make_group_state()
        state.update({"n": 1})
        assert state.exists and state.get() == {"n": 1} and state.get_option() == {"n": 1}

    def test_update_none_is_an_error(self) -> None:
        state = make_group_state(3)
        with pytest.raises(InvalidStateValueError, match="'None' is not a valid state value"):
            state.update(None)
        assert state.get() == 3

    @pytest.mark.parametrize("value", [0, "", [], False])
    def test_falsy_values_are_valid_state(self, value: object) -> None:
        state = make_group_state()
        state.update(value)
        assert state.exists and state.get() == value

    def test_remove_is_idempotent_and_clears(self) -> None:
        state = make_group_state(5)
        state.remove()
        state.remove()
        assert not state.exists and state.get_option() is None
        with pytest.raises(StateNotFoundError):
            state.get()

    def test_update_after_remove_defines_state_again(self) -> None:
        state = make_group_state(5)
        state.remove()
        state.update(6)
        assert state.exists and state.get() == 6
        assert state.outcome(NO_TIMEOUT_MS) == Outcome("put", 6, NO_TIMEOUT_MS)

    def test_has_timed_out_only_in_timeout_call(self) -> None:
        assert make_group_state(timeout=PT).has_timed_out is False
        assert make_group_state(timeout=PT, has_timed_out=True).has_timed_out is True


class TestProcessingTimeTimeout:
    def test_duration_is_added_to_batch_time(self) -> None:
        state = make_group_state(timeout=PT, batch_processing_time_ms=1000)
        state.set_timeout_duration(500)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 1500

    def test_last_call_wins(self) -> None:
        state = make_group_state(timeout=PT, batch_processing_time_ms=1000)
        state.set_timeout_duration("1 minute")
        state.set_timeout_duration("10 seconds")
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 11_000

    @pytest.mark.parametrize("duration", [0, -1])
    def test_non_positive_duration_is_rejected(self, duration: int) -> None:
        state = make_group_state(timeout=PT)
        with pytest.raises(InvalidTimeoutError):
            state.set_timeout_duration(duration)

    def test_month_counts_as_31_days_in_strings(self) -> None:
        state = make_group_state(timeout=PT, batch_processing_time_ms=0)
        state.set_timeout_duration("-1 month 31 days 1 second")
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 1000

    def test_zero_string_duration_is_rejected(self) -> None:
        state = make_group_state(timeout=PT)
        with pytest.raises(InvalidTimeoutError, match="positive"):
            state.set_timeout_duration("1 month -31 day")

    def test_negative_string_duration_is_rejected(self) -> None:
        state = make_group_state(timeout=PT)
        with pytest.raises(InvalidTimeoutError, match="negative"):
            state.set_timeout_duration("-2 seconds")

    @pytest.mark.parametrize("kind", [NONE, ET])
    def test_duration_needs_processing_time_kind_checked_first(self, kind: GroupStateTimeout) -> None:
        state = make_group_state(timeout=kind, watermark_ms=0 if kind is ET else None)
        with pytest.raises(TimeoutNotConfiguredError, match="PROCESSING_TIME"):
            state.set_timeout_duration(-5)  # invalid value too: the kind is checked first

    def test_failed_setter_keeps_previous_timeout(self) -> None:
        state = make_group_state(timeout=PT, batch_processing_time_ms=100)
        state.set_timeout_duration(50)
        with pytest.raises(InvalidTimeoutError):
            state.set_timeout_duration(0)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 150

    @pytest.mark.parametrize("kind", [PT])
    def test_timestamp_setter_is_wrong_kind_for_processing_time(self, kind: GroupStateTimeout) -> None:
        with pytest.raises(TimeoutNotConfiguredError, match="EVENT_TIME"):
            make_group_state(timeout=kind).set_timeout_timestamp(10)


class TestEventTimeTimeout:
    def test_timestamp_is_stored(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=100)
        state.set_timeout_timestamp(500)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 500

    def test_timestamp_equal_to_watermark_is_allowed(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=100)
        state.set_timeout_timestamp(100)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 100

    def test_timestamp_below_watermark_is_rejected(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=100)
        with pytest.raises(InvalidTimeoutError, match=r"Timeout timestamp \(99\) cannot be earlier than the "
                                                      r"current watermark \(100\)"):
            state.set_timeout_timestamp(99)

    @pytest.mark.parametrize("ts", [0, -10])
    def test_non_positive_timestamp_is_rejected(self, ts: int) -> None:
        with pytest.raises(InvalidTimeoutError, match="must be positive"):
            make_group_state(timeout=ET, watermark_ms=0).set_timeout_timestamp(ts)

    def test_additional_duration_is_added(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=0)
        state.set_timeout_timestamp(1000, "1 second")
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 2000

    def test_negative_additional_duration_is_rejected(self) -> None:
        with pytest.raises(InvalidTimeoutError, match="negative"):
            make_group_state(timeout=ET, watermark_ms=0).set_timeout_timestamp(5000, "-1 second")

    def test_datetime_with_and_without_additional(self) -> None:
        when = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
        state = make_group_state(timeout=ET, watermark_ms=0)
        state.set_timeout_timestamp(when)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == int(when.timestamp() * 1000)
        state.set_timeout_timestamp(when.replace(tzinfo=None), "1 minute")  # naive means UTC
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == int(when.timestamp() * 1000) + 60_000

    @pytest.mark.parametrize("kind", [NONE, PT])
    def test_timestamp_needs_event_time_kind_checked_first(self, kind: GroupStateTimeout) -> None:
        with pytest.raises(TimeoutNotConfiguredError, match="EVENT_TIME"):
            make_group_state(timeout=kind).set_timeout_timestamp(-1)

    def test_duration_setter_is_wrong_kind_for_event_time(self) -> None:
        with pytest.raises(TimeoutNotConfiguredError):
            make_group_state(timeout=ET, watermark_ms=0).set_timeout_duration(1000)

    def test_failed_setter_keeps_previous_timeout(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=100)
        state.set_timeout_timestamp(200)
        with pytest.raises(InvalidTimeoutError):
            state.set_timeout_timestamp(50)
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 200


class TestTimeoutIndependentOfState:
    @pytest.mark.parametrize("kind", [PT, ET])
    def test_timeout_can_be_set_without_state_after_update_and_after_remove(self, kind: GroupStateTimeout) -> None:
        def set_timeout(state: GroupState[int]) -> None:
            if kind is PT:
                state.set_timeout_duration(1000)
            else:
                state.set_timeout_timestamp(1000)

        fresh = make_group_state(timeout=kind, watermark_ms=0 if kind is ET else None)
        set_timeout(fresh)
        assert fresh.outcome(NO_TIMEOUT_MS) == Outcome("put", None, 1000)
        updated = make_group_state(timeout=kind, watermark_ms=0 if kind is ET else None)
        set_timeout(updated)
        updated.update(7)  # update does not change the timeout
        assert updated.outcome(NO_TIMEOUT_MS) == Outcome("put", 7, 1000)
        removed = make_group_state(3, timeout=kind, watermark_ms=0 if kind is ET else None)
        set_timeout(removed)
        removed.remove()  # remove does not clear the timeout
        assert removed.outcome(NO_TIMEOUT_MS) == Outcome("put", None, 1000)


class TestClockAndWatermark:
    @pytest.mark.parametrize("kind", [NONE, PT, ET])
    def test_watermark_without_declared_watermark_is_an_error(self, kind: GroupStateTimeout) -> None:
        state = make_group_state(timeout=kind)
        with pytest.raises(WatermarkNotDefinedError, match="watermark"):
            state.get_current_watermark_ms()

    @pytest.mark.parametrize("kind", [NONE, PT, ET])
    def test_watermark_is_readable_when_declared_for_every_kind(self, kind: GroupStateTimeout) -> None:
        assert make_group_state(timeout=kind, watermark_ms=42).get_current_watermark_ms() == 42

    def test_processing_time_is_the_batch_time(self) -> None:
        assert make_group_state(batch_processing_time_ms=1234).get_current_processing_time_ms() == 1234


class TestWriteBackRule:
    """SEMANTICS.md A.3: what is written back after a call."""

    def test_remove_without_timeout_deletes(self) -> None:
        state = make_group_state(1, timeout=PT)
        state.remove()
        assert state.outcome(500).action == "delete"

    def test_remove_with_timeout_leaves_stateless_row(self) -> None:
        state = make_group_state(1, timeout=PT, batch_processing_time_ms=10)
        state.remove()
        state.set_timeout_duration(5)
        assert state.outcome(NO_TIMEOUT_MS) == Outcome("put", None, 15)

    def test_untouched_state_with_stored_timeout_clears_the_timeout(self) -> None:
        state = make_group_state(1, timeout=PT)
        assert state.outcome(500) == Outcome("put", 1, NO_TIMEOUT_MS)

    def test_untouched_state_without_timeout_writes_nothing(self) -> None:
        assert make_group_state(1, timeout=PT).outcome(NO_TIMEOUT_MS).action == "keep"

    def test_same_timeout_and_no_update_writes_nothing(self) -> None:
        state = make_group_state(1, timeout=PT, batch_processing_time_ms=0)
        state.set_timeout_duration(500)
        assert state.outcome(500).action == "keep"


class TestPySparkSpellings:
    def test_aliases_behave_like_snake_case(self) -> None:
        state = make_group_state(2, timeout=PT, batch_processing_time_ms=7, watermark_ms=3)
        assert state.getOption == 2 and state.hasTimedOut is False and state.exists is True
        state.setTimeoutDuration(10)
        assert state.getCurrentProcessingTimeMs() == 7 and state.getCurrentWatermarkMs() == 3
        assert state.outcome(NO_TIMEOUT_MS).timeout_ms == 17
        et = make_group_state(timeout="EventTimeTimeout", watermark_ms=0)
        et.setTimeoutTimestamp(99)
        assert et.outcome(NO_TIMEOUT_MS).timeout_ms == 99
        assert GroupStateTimeout.ProcessingTimeTimeout is PT


class TestStatePerCall:
    """``call_states``: each handler call's state starts fresh (A.1), even though the object is reused."""

    def states(self) -> Any:
        return call_states(ET, 1000, 100, True)

    def test_each_call_starts_from_its_stored_value_without_timeout_or_changes(self) -> None:
        state_for = self.states()
        first = state_for({"n": 1}, False)
        first.update({"n": 2})
        first.set_timeout_timestamp(5000)
        del first
        second = state_for(None, True)
        assert (second.exists, second.get_option(), second.has_timed_out) == (False, None, True)
        assert second.outcome(NO_TIMEOUT_MS) == Outcome(Action.KEEP, None, NO_TIMEOUT_MS)
        del second
        third = state_for(7, False)
        assert (third.get(), third.has_timed_out, third.get_current_watermark_ms()) == (7, False, 100)
        assert third.outcome(4000) == Outcome(Action.PUT, 7, NO_TIMEOUT_MS)  # the stored timeout is dropped

    def test_a_state_the_handler_keeps_is_never_handed_out_again(self) -> None:
        state_for = self.states()
        kept = [state_for(value, False) for value in (1, 2, 3)]  # each call's state is still referenced
        kept[0].update(10)
        assert [s.get() for s in kept] == [10, 2, 3]
        assert len({id(s) for s in kept}) == 3

    def test_handlers_keeping_their_state_see_their_own_call_in_a_real_batch(self) -> None:
        app = App("keep")
        seen: list[tuple[str, GroupState[int]]] = []

        @app.flat_map_groups_with_state(key="k")
        def handler(key: str, values: list[Any], state: GroupState[int]) -> list[Any]:
            state.update((state.get_option() or 0) + len(values))
            if key != "b":
                seen.append((key, state))  # kept beyond the call, as some handlers do
            return []

        tester = StreamTester(app)
        tester.run_batch([{"k": "a"}, {"k": "b"}, {"k": "b"}, {"k": "c"}, {"k": "c"}, {"k": "c"}])
        assert [(key, state.get()) for key, state in seen] == [("a", 1), ("c", 3)]
        assert tester.states() == {"a": 1, "b": 2, "c": 3}


class TestTimestampFastPath:
    """The common epoch-ms case of ``set_timeout_timestamp`` obeys the same rules as the general one."""

    @pytest.mark.parametrize("watermark", [NO_WATERMARK_MS, 0, 500])
    @pytest.mark.parametrize("ts", [-5, 0, 1, 499, 500, 501, MAX_TIME_MS, MAX_TIME_MS + 1])
    def test_int_timestamps_match_the_datetime_path(self, watermark: int, ts: int) -> None:
        def outcome(value: Any) -> Any:
            state = make_group_state(timeout=ET, watermark_ms=watermark) if watermark != NO_WATERMARK_MS \
                else GroupState(None, False, timeout=ET, batch_processing_time_ms=0, watermark_ms=-1,
                                watermark_present=False)
            try:
                state.set_timeout_timestamp(value)
            except InvalidTimeoutError:
                return "rejected"
            return state.outcome(NO_TIMEOUT_MS).timeout_ms

        as_datetime = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ts) if 0 <= ts <= MAX_TIME_MS else None
        expected = outcome(as_datetime) if as_datetime is not None else "rejected"
        assert outcome(ts) == expected
