"""Event times and timeouts outside the representable range (issue 12 item 4).

Every time the runtime accepts lies in ``timeutil.MIN_TIME_MS..MAX_TIME_MS``
(years 1-9999); a record outside it is dead-lettered with its reason and
position, a timeout outside it raises ``InvalidTimeoutError`` naming the key,
and every command that prints stored times copes with any stored value.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
from typing import Any

import pytest
from click.testing import CliRunner

from statefulstream import App, GroupState, GroupStateTimeout, UserFunctionError
from statefulstream.cli import main
from statefulstream.errors import InvalidTimeoutError
from statefulstream.observe.progress import BatchProgress
from statefulstream.observe.progress_log import ProgressLog, progress_report
from statefulstream.observe.state_query import StateQueries
from statefulstream.sinks import MemorySink
from statefulstream.sources import FileSource
from statefulstream.state.rocksdb import RocksDBStateStore
from statefulstream.state.store import CommitRecord, StateRow
from statefulstream.testing import StreamTester, make_group_state
from statefulstream.timeutil import MAX_TIME_MS, MIN_TIME_MS, format_ms, to_epoch_ms

ET = GroupStateTimeout.EVENT_TIME
GAP_MS = 60_000
T0 = 1_700_000_000_000  # 2023-11-14, a normal event time

# (label, value in the JSON line, how the event_time getter below turns it into the raw event time)
OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("float seconds of year 33658", 1e12),
    ("huge float seconds", 1e300),
    ("int64 max ms", 2**63 - 1),
    ("int64 min ms", -(2**63)),
    ("ms before year 1", MIN_TIME_MS - 1),
    ("ms after year 9999", MAX_TIME_MS + 1),
    ("NaN seconds", "float:nan"),
    ("infinite seconds", "float:inf"),
    ("minus infinite seconds", "float:-inf"),
    ("ISO year 10000", "10000-01-01T00:00:00Z"),
    ("ISO 9999-12-31 at UTC-1 (past the end in UTC)", "9999-12-31T23:30:00-01:00"),
    ("boolean", True),
]


def event_time(record: dict[str, Any]) -> Any:
    """The raw event time; ``"float:x"`` stands for a float JSON cannot carry (NaN, infinities)."""
    value = record["ts"]
    if isinstance(value, str) and value.startswith("float:"):
        return float(value[6:])
    return value


@pytest.mark.parametrize(("label", "value"), OUT_OF_RANGE, ids=[label for label, _ in OUT_OF_RANGE])
def test_to_epoch_ms_refuses_every_kind_with_a_reason(label: str, value: Any) -> None:
    with pytest.raises(ValueError, match="event time") as info:
        to_epoch_ms(event_time({"ts": value}))
    text = str(info.value)
    assert any(word in text for word in ("representable", "finite", "between years", "must be epoch")), text


@pytest.mark.parametrize("value", [MIN_TIME_MS, MAX_TIME_MS, -1, "0001-01-01T00:00:00Z",
                                   "9999-12-31T23:59:59.999Z", dt.datetime.max, -62135596.8])
def test_the_edges_of_the_range_are_accepted(value: Any) -> None:
    ms = to_epoch_ms(value)
    assert MIN_TIME_MS <= ms <= MAX_TIME_MS
    assert format_ms(ms) is not None and "out of range" not in str(format_ms(ms))


def sessions_app(data: pathlib.Path, ckpt: pathlib.Path, sink: MemorySink, clock_ms: int | None = None,
                 trigger: str = "available_now", **options: Any) -> App:
    """Sessionization as in the examples: the timeout follows the newest event time of the key."""
    app = App("sessions", source=FileSource(data), checkpoint_dir=ckpt, trigger=trigger,
              clock=None if clock_ms is None else lambda: clock_ms)

    @app.flat_map_groups_with_state(key="user", event_time=event_time, watermark_delay="10 seconds", timeout=ET,
                                    sink=sink, **options)
    def sessionize(user: str, events: list, state: GroupState[dict]) -> Any:
        if state.has_timed_out:
            yield {"user": user, **state.get()}
            state.remove()
            return
        session = state.get_option() or {"n": 0, "last": 0}
        session = {"n": session["n"] + len(events), "last": max(session["last"], *(to_epoch_ms(event_time(e))
                                                                                  for e in events))}
        state.update(session)
        state.set_timeout_timestamp(session["last"] + GAP_MS)

    return app


def write_jsonl(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def dead_letter_rows(ckpt: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted((ckpt / "dead_letters").rglob("*.jsonl"))
            for line in f.read_text().splitlines()]


def test_out_of_range_event_times_are_dead_lettered_and_every_printer_copes(tmp_path: pathlib.Path) -> None:
    data, ckpt, sink = tmp_path / "in", tmp_path / "ckpt", MemorySink()
    data.mkdir()
    rows: list[dict[str, Any]] = []
    bad_lines: dict[int, str] = {}
    for i, (label, value) in enumerate(OUT_OF_RANGE):
        rows.append({"user": f"good{i}", "ts": T0 + i})
        rows.append({"user": f"bad{i}", "ts": value})
        bad_lines[len(rows)] = label  # 1-based line of the bad record
    rows.append({"user": "late-comer", "ts": T0 + 10 * GAP_MS})  # moves the watermark past the sessions' ends
    write_jsonl(data / "a.jsonl", rows)
    sessions_app(data, ckpt, sink).run()

    dead = dead_letter_rows(ckpt)
    assert sorted(d["position"]["line"] for d in dead) == sorted(bad_lines)
    for d in dead:
        assert d["error"] == "event_time" and d["source"] == "pipeline"
        assert d["position"]["file"] == str(data / "a.jsonl")
        assert d["raw"]["user"].startswith("bad") and "event time" in d["reason"]
    # The good records went on: one session each, closed when the watermark passed it (no-data batch).
    assert sorted(r["user"] for r in sink.rows) == sorted(f"good{i}" for i in range(len(OUT_OF_RANGE)))

    runner = CliRunner()
    for args in (["progress", str(ckpt)], ["progress", str(ckpt), "--json"], ["checkpoint", "show", str(ckpt)],
                 ["checkpoint", "show", str(ckpt), "--json"], ["state", "show", str(ckpt)], ["status", str(ckpt)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output, result.exception)


def test_printers_cope_with_values_an_older_version_stored(tmp_path: pathlib.Path) -> None:
    # Before the range existed, a 1e12-second event time made these watermarks and timeouts.
    huge = 10**15
    progress = BatchProgress(app="a", batch_id=0, batch_ts_ms=T0, watermark_ms=huge, next_watermark_ms=2**63 - 1,
                             max_event_time_ms=-(2**63))
    report = progress_report(progress, None)
    assert report["event_time"]["watermark"] == f"out of range ({huge} ms)"
    ProgressLog(str(tmp_path / "ckpt" / "progress")).on_batch(progress)
    store = RocksDBStateStore(str(tmp_path / "ckpt" / "state"))
    store.open({"key": "user"})
    store.put("u", StateRow({"n": 1}, huge))
    store.commit(CommitRecord(0, {"f": 1}, T0, huge, huge))
    code, body = StateQueries(store.committed_view).answer("/state/u", "")  # the HTTP state query
    assert code == 200 and json.loads(body)["timeout"] == f"out of range ({huge} ms)"
    store.close()
    runner = CliRunner()
    for args in (["checkpoint", "show", str(tmp_path / "ckpt")], ["state", "show", str(tmp_path / "ckpt")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert f"{huge} (out of range ({huge} ms))" in result.output
    for args in (["progress", str(tmp_path / "ckpt")], ["status", str(tmp_path / "ckpt")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output, result.exception)


class TestMaxEventTimeAhead:
    def year_3000_run(self, tmp_path: pathlib.Path, **options: Any) -> tuple[pathlib.Path, MemorySink, App]:
        data, ckpt, sink = tmp_path / "in", tmp_path / "ckpt", MemorySink()
        data.mkdir()
        write_jsonl(data / "a.jsonl", [{"user": "a", "ts": T0}, {"user": "future", "ts": "3000-01-01T00:00:00Z"},
                                       {"user": "b", "ts": T0 + 1}])
        # The batches' processing time is near the data's event times. One batch, so the next
        # batch has data and runs with the watermark that batch moved.
        sessions_app(data, ckpt, sink, T0 + 5_000, "once", **options).run()
        write_jsonl(data / "b.jsonl", [{"user": "c", "ts": T0 + 2_000}, {"user": "a", "ts": T0 + 3_000}])
        return ckpt, sink, sessions_app(data, ckpt, sink, T0 + 6_000, **options)

    def test_without_the_option_a_far_future_record_stops_the_job_naming_the_key(self,
                                                                               tmp_path: pathlib.Path) -> None:
        # The one case README names: the year-3000 record moves the watermark past every timeout
        # the handler then sets, and set_timeout_timestamp raises (as Spark's does).
        _, _, app = self.year_3000_run(tmp_path)
        with pytest.raises(UserFunctionError, match="cannot be earlier than the current watermark") as info:
            app.run()
        assert info.value.key in {"a", "c"}

    def test_with_the_option_the_far_future_record_is_dead_lettered_and_the_job_goes_on(
            self, tmp_path: pathlib.Path) -> None:
        ckpt, sink, app = self.year_3000_run(tmp_path, max_event_time_ahead="1 day")
        app.run()
        dead = dead_letter_rows(ckpt)
        assert [(d["error"], d["raw"]["user"], d["position"]["line"]) for d in dead] == [
            ("event_time_ahead", "future", 2)]
        assert "max_event_time_ahead" in dead[0]["reason"] and "3000-01-01" in dead[0]["reason"]
        assert not any(r["user"] == "future" for r in sink.rows)

    def test_the_bound_follows_the_batch_processing_time(self) -> None:
        app = App("ahead")
        seen: list[int] = []

        @app.flat_map_groups_with_state(key="k", event_time="ts", watermark_delay="0 ms",
                                        max_event_time_ahead="1 second")
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            seen.extend(v["ts"] for v in values)
            return []

        t = StreamTester(app)
        t.run_batch([{"k": 1, "ts": 5_000}, {"k": 1, "ts": 6_000}, {"k": 1, "ts": 6_001}], processing_time_ms=5_000)
        assert seen == [5_000, 6_000]
        assert [(d["error"], d["raw"]["ts"]) for d in t.dead_letters.rows] == [("event_time_ahead", 6_001)]

    def test_the_option_needs_event_time_and_a_positive_duration(self) -> None:
        from statefulstream.errors import ConfigError

        app = App("x")
        with pytest.raises(ConfigError, match="max_event_time_ahead= needs event_time="):
            app.flat_map_groups_with_state(key="k", max_event_time_ahead="1 day")(lambda k, v, s: [])
        with pytest.raises(ConfigError, match="max_event_time_ahead must be positive"):
            app.flat_map_groups_with_state(key="k", event_time="ts", watermark_delay="0 ms",
                                           max_event_time_ahead="0 seconds")(lambda k, v, s: [])


class TestTimeoutRange:
    def test_timestamp_past_the_range_raises_invalid_timeout(self) -> None:
        state = make_group_state(timeout=ET, watermark_ms=0)
        with pytest.raises(InvalidTimeoutError, match="latest representable time"):
            state.set_timeout_timestamp(2**63 - 1)
        with pytest.raises(InvalidTimeoutError, match="latest representable time"):
            state.set_timeout_timestamp(MAX_TIME_MS, "1 second")
        state.set_timeout_timestamp(MAX_TIME_MS)  # the last representable ms is fine

    def test_duration_past_the_range_raises_invalid_timeout(self) -> None:
        state = make_group_state(timeout=GroupStateTimeout.PROCESSING_TIME, batch_processing_time_ms=T0)
        with pytest.raises(InvalidTimeoutError, match="latest representable time"):
            state.set_timeout_duration(MAX_TIME_MS)

    def test_in_a_job_the_error_names_the_key_and_batch_instead_of_a_struct_error(self,
                                                                                  tmp_path: pathlib.Path) -> None:
        data = tmp_path / "in"
        data.mkdir()
        write_jsonl(data / "a.jsonl", [{"user": "u1", "ts": T0}])
        app = App("t", source=FileSource(data), checkpoint_dir=tmp_path / "ckpt", trigger="available_now")

        @app.flat_map_groups_with_state(key="user", event_time="ts", watermark_delay="0 ms", timeout=ET)
        def f(key: Any, values: list, state: GroupState[int]) -> Any:
            state.set_timeout_timestamp(2**63 - 1)
            return []

        with pytest.raises(UserFunctionError, match="InvalidTimeoutError") as info:
            app.run()
        assert info.value.key == "u1" and info.value.batch_id == 0
