"""The light sinks: ConsoleSink, JsonlFileSink, ForeachSink, foreach_batch."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from statefulstream.errors import ConfigError, SinkError, SinkRejectedError, SinkUnavailableError
from statefulstream.records import DeadLetter, StateChange
from statefulstream.sink import SinkContext
from statefulstream.sinks import ConsoleSink, ForeachSink, JsonlFileSink, foreach_batch


@dataclasses.dataclass
class Session:
    user: str
    start: dt.datetime
    tags: set[str]


def collecting_context() -> tuple[SinkContext, list[DeadLetter]]:
    dead: list[DeadLetter] = []
    return SinkContext(app_name="t", dead_letter=dead.append), dead


class TestConsoleSink:
    def test_json_format_prints_one_line_per_row_prefixed_with_batch_id(self) -> None:
        out = io.StringIO()
        rows = [{"user": "a", "n": 1}, {"user": "b", "n": 2}]
        ConsoleSink(out).write(7, rows)
        lines = out.getvalue().splitlines()
        assert [line.split(" ", 2)[:2] for line in lines] == [["[batch", "7]"]] * 2
        assert [json.loads(line.split("] ", 1)[1]) for line in lines] == rows

    def test_default_stream_is_stdout_at_write_time(self, capsys: pytest.CaptureFixture[str]) -> None:
        ConsoleSink().write(0, [{"x": 1}])
        assert capsys.readouterr().out == '[batch 0] {"x":1}\n'

    def test_table_format_aligns_the_union_of_columns(self) -> None:
        out = io.StringIO()
        ConsoleSink(out, format="table").write(2, [{"user": "alice", "n": 1}, {"user": "b", "extra": True}, 5])
        header, rule, *body = out.getvalue().splitlines()[1:]
        assert [c.strip() for c in header.split("|")] == ["user", "n", "extra", "value"]
        assert {len(line) for line in (header, rule)} == {len(rule)}
        assert [[c.strip() for c in line.split("|")] for line in body] == [
            ["alice", "1", "", ""], ["b", "", "true", ""], ["", "", "", "5"]]
        assert out.getvalue().startswith("[batch 2] 3 row(s)\n")

    def test_table_format_shows_dataclass_fields_as_columns(self) -> None:
        out = io.StringIO()
        ConsoleSink(out, format="table").write(0, [StateChange(key="k", value={"n": 1}, removed=False)])
        assert [c.strip() for c in out.getvalue().splitlines()[1].split("|")] == [
            "key", "value", "removed", "timeout_ms"]

    def test_max_rows_truncates_and_says_how_many_were_left_out(self) -> None:
        out = io.StringIO()
        ConsoleSink(out, max_rows=2).write(1, list(range(5)))
        assert out.getvalue().splitlines() == ["[batch 1] 0", "[batch 1] 1", "[batch 1] ... 3 more row(s) not shown"]

    def test_unencodable_row_is_dead_lettered_and_the_rest_printed(self) -> None:
        out = io.StringIO()
        context, dead = collecting_context()
        sink = ConsoleSink(out)
        sink.open(context)
        sink.write(3, [{"ok": 1}, {"bad": object()}, {"ok": 2}])
        assert out.getvalue().splitlines() == ['[batch 3] {"ok":1}', '[batch 3] {"ok":2}']
        assert [(d.error, d.position) for d in dead] == [("sink", {"sink": "console", "batch_id": 3, "row": 1})]

    @pytest.mark.parametrize("kwargs", [{"format": "csv"}, {"max_rows": 0}])
    def test_invalid_options_fail_at_construction(self, kwargs: dict[str, Any]) -> None:
        with pytest.raises(ConfigError, match="ConsoleSink"):
            ConsoleSink(**kwargs)


class TestJsonlFileSink:
    def test_writes_one_file_per_batch_named_by_batch_id(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path / "out")
        sink.open(SinkContext())
        sink.write(0, [{"a": 1}, {"a": 2}])
        sink.write(12, [{"a": 3}])
        assert sorted(os.listdir(tmp_path / "out")) == ["part-00000000.jsonl", "part-00000012.jsonl"]
        lines = (tmp_path / "out" / "part-00000000.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == [{"a": 1}, {"a": 2}]

    def test_replayed_batch_rewrites_the_same_file_with_the_same_bytes(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        rows = [{"user": "a", "tags": {"y", "x"}}, {"user": "b", "tags": set()}]
        sink.write(5, rows)
        first = sink.path_for(5).read_bytes()
        sink.write(5, rows)
        assert sink.path_for(5).read_bytes() == first
        assert JsonlFileSink.read_all(tmp_path) == [{"user": "a", "tags": ["x", "y"]}, {"user": "b", "tags": []}]

    def test_read_all_returns_rows_in_batch_order_not_write_order(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        for batch_id in (10, 2, 100_000_000, 7):  # 100_000_000 has 9 digits: order must be numeric
            sink.write(batch_id, [{"b": batch_id}])
        assert JsonlFileSink.read_all(tmp_path) == [{"b": b} for b in sorted((10, 2, 100_000_000, 7))]
        assert list(JsonlFileSink.read_batches(tmp_path)) == [2, 7, 10, 100_000_000]

    def test_read_all_of_missing_directory_is_empty(self, tmp_path: Path) -> None:
        assert JsonlFileSink.read_all(tmp_path / "nothing") == []

    def test_read_all_ignores_leftover_temporary_files(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        sink.write(1, [{"a": 1}])
        (tmp_path / ".part-00000002.jsonl.abc.tmp").write_text('{"half": ')
        assert JsonlFileSink.read_all(tmp_path) == [{"a": 1}]

    def test_encodes_datetimes_dataclasses_sets_and_decimals(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        start = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
        sink.write(0, [Session("u", start, {"b", "a"}),
                       {"price": decimal.Decimal("1.10"), "naive": start.replace(tzinfo=None)}])
        assert JsonlFileSink.read_all(tmp_path) == [
            {"user": "u", "start": start.isoformat().replace("+00:00", "Z"), "tags": ["a", "b"]},
            {"price": "1.10", "naive": start.isoformat().replace("+00:00", "Z")}]

    def test_empty_batch_writes_an_empty_file(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        sink.write(3, [])
        assert sink.path_for(3).read_bytes() == b""
        assert JsonlFileSink.read_batches(tmp_path) == {3: []}

    def test_unencodable_row_is_dead_lettered_with_reason_and_position(self, tmp_path: Path) -> None:
        context, dead = collecting_context()
        sink = JsonlFileSink(tmp_path)
        sink.open(context)
        sink.write(4, [{"a": 1}, {"a": object()}])
        assert JsonlFileSink.read_all(tmp_path) == [{"a": 1}]
        assert len(dead) == 1
        assert dead[0].position == {"sink": "file", "batch_id": 4, "row": 1}
        assert "cannot be encoded as JSON" in dead[0].reason and "object" in dead[0].reason

    def test_unencodable_row_without_open_context_is_rejected_not_dropped(self, tmp_path: Path) -> None:
        with pytest.raises(SinkRejectedError, match="batch 4 row 0"):
            JsonlFileSink(tmp_path).write(4, [{"a": object()}])
        assert not JsonlFileSink(tmp_path).path_for(4).exists()

    def test_a_failed_write_leaves_no_partial_file_and_names_the_path(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        sink.write(1, [{"old": True}])
        sink.path_for(1).unlink()
        sink.path_for(1).mkdir()  # the rename onto a directory fails
        with pytest.raises(SinkError, match=r"cannot write batch 1 to .*part-00000001\.jsonl"):
            sink.write(1, [{"new": True}])
        assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []

    def test_concurrent_readers_never_see_a_partial_batch(self, tmp_path: Path) -> None:
        sink = JsonlFileSink(tmp_path)
        rows = [{"i": i, "pad": "x" * 200} for i in range(2000)]
        sink.write(0, rows)
        seen: list[int] = []
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                seen.append(len(JsonlFileSink.read_all(tmp_path)))

        thread = threading.Thread(target=reader)
        thread.start()
        for _ in range(20):
            sink.write(0, rows)
        stop.set()
        thread.join()
        assert seen and set(seen) == {len(rows)}


class TestForeachSink:
    def test_calls_fn_once_per_row_in_order(self) -> None:
        seen: list[Any] = []
        ForeachSink(seen.append).write(0, [3, 1, 2])
        assert seen == [3, 1, 2]

    def test_exception_is_wrapped_with_batch_and_row(self) -> None:
        def fn(row: int) -> None:
            if row == 2:
                raise KeyError("boom")

        with pytest.raises(SinkError, match=r"fn raised KeyError on batch 9 row 1") as info:
            ForeachSink(fn).write(9, [1, 2, 3])
        assert isinstance(info.value.__cause__, KeyError)

    def test_sink_unavailable_passes_through_for_backpressure(self) -> None:
        def fn(row: int) -> None:
            raise SinkUnavailableError("down", retry_after=2.0)

        with pytest.raises(SinkUnavailableError) as info:
            ForeachSink(fn).write(0, [1])
        assert info.value.retry_after == 2.0

    def test_not_callable_fails_at_construction(self) -> None:
        with pytest.raises(ConfigError, match="ForeachSink needs a callable; got int"):
            ForeachSink(3)  # type: ignore[arg-type]


class TestForeachBatch:
    def test_calls_fn_with_batch_id_and_rows(self) -> None:
        calls: list[tuple[int, list[Any]]] = []
        sink = foreach_batch(lambda batch_id, rows: calls.append((batch_id, rows)))
        sink.write(1, ("a", "b"))
        sink.write(2, [])
        assert calls == [(1, ["a", "b"]), (2, [])]

    def test_exception_is_wrapped_with_batch_id(self) -> None:
        def fn(batch_id: int, rows: list[Any]) -> None:
            raise RuntimeError("disk full")

        with pytest.raises(SinkError, match=r"raised RuntimeError on batch 5: disk full") as info:
            foreach_batch(fn).write(5, [1])
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_not_callable_fails_at_construction(self) -> None:
        with pytest.raises(ConfigError, match="foreach_batch needs a callable"):
            foreach_batch("print")  # type: ignore[arg-type]
