"""FileSource: lost data is never silent (issue 12 item 3), and a restart does not re-read old input (issue 14 item 5).

A file read before that shrank or vanished stops the app with ``DataLossError``
(file, position expected, what is there now, what to do) unless
``fail_on_data_loss=False``: then a WARNING, the
``statefulstream_source_data_loss`` metric, a shrunk file read again from its
start and a vanished one forgotten. Each plan keeps the byte offsets of its
start and end lines, so a restarted source counts only new bytes.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import pytest

from statefulstream import App, GroupState
from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.errors import DataLossError
from statefulstream.sinks import MemorySink
from statefulstream.sources import FileSource
from statefulstream.sources import file as file_module


def write(path: pathlib.Path, rows: list[dict[str, Any]], mode: str = "w") -> None:
    with path.open(mode) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))


def rows(tag: str, n: int) -> list[dict[str, Any]]:
    return [{"k": f"{tag}{i % 3}", "tag": tag, "i": i} for i in range(n)]


def collecting_app(data: pathlib.Path, ckpt: pathlib.Path, sink: MemorySink, *, max_records: int | None = None,
                   **source: Any) -> App:
    app = App("files", source=FileSource(data, **source), checkpoint_dir=ckpt, trigger="available_now",
              max_records_per_trigger=max_records)

    @app.flat_map_groups_with_state(key="k", sink=sink)
    def collect(key: str, values: list, state: GroupState[int]) -> Any:
        return [(v["tag"], v["i"]) for v in values]

    return app


class TestDataLoss:
    def test_a_shrunk_file_stops_the_app_naming_file_position_and_remedy(self, tmp_path: pathlib.Path) -> None:
        data, ckpt = tmp_path / "in", tmp_path / "ckpt"
        data.mkdir()
        write(data / "a.jsonl", rows("a", 10))
        collecting_app(data, ckpt, MemorySink()).run()
        before = (data / "a.jsonl").stat().st_size
        write(data / "a.jsonl", rows("b", 3))  # rewritten shorter
        with pytest.raises(DataLossError) as info:
            collecting_app(data, ckpt, MemorySink()).run()
        text = str(info.value)
        assert str(data / "a.jsonl") in text
        now = (data / "a.jsonl").stat().st_size
        assert f"has 3 records ({now} bytes, down from {before} seen before)" in text
        assert "but 10 records of it were already read" in text
        assert "Restore the file" in text and "fail_on_data_loss=False" in text

    def test_a_vanished_file_stops_the_app(self, tmp_path: pathlib.Path) -> None:
        data, ckpt = tmp_path / "in", tmp_path / "ckpt"
        data.mkdir()
        write(data / "a.jsonl", rows("a", 4))
        write(data / "b.jsonl", rows("b", 4))
        collecting_app(data, ckpt, MemorySink()).run()
        (data / "a.jsonl").unlink()
        with pytest.raises(DataLossError, match=r"a.jsonl' is gone \(deleted or renamed\), but 4 records of it"):
            collecting_app(data, ckpt, MemorySink()).run()

    def test_with_the_option_a_shrunk_file_is_read_again_with_a_warning_and_a_metric(
            self, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
        data, ckpt, sink = tmp_path / "in", tmp_path / "ckpt", MemorySink()
        data.mkdir()
        write(data / "a.jsonl", rows("a", 10))
        collecting_app(data, ckpt, sink, fail_on_data_loss=False).run()
        write(data / "a.jsonl", rows("b", 3))
        app = collecting_app(data, ckpt, sink, fail_on_data_loss=False)
        with caplog.at_level(logging.WARNING):
            app.run()
        assert sorted(r for r in sink.rows if r[0] == "b") == [("b", i) for i in range(3)]
        assert app.metrics.value("statefulstream_source_data_loss_total") == 1.0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("a.jsonl" in w and "read again from its first record" in w for w in warnings), warnings

    def test_with_the_option_a_vanished_file_is_forgotten_and_a_new_one_of_that_name_read_whole(
            self, tmp_path: pathlib.Path) -> None:
        data, ckpt, sink = tmp_path / "in", tmp_path / "ckpt", MemorySink()
        data.mkdir()
        write(data / "a.jsonl", rows("a", 5))
        collecting_app(data, ckpt, sink, fail_on_data_loss=False).run()
        (data / "a.jsonl").unlink()
        write(data / "b.jsonl", rows("b", 1))  # a batch to go past the loss (counted when it commits)
        app = collecting_app(data, ckpt, sink, fail_on_data_loss=False)
        app.run()
        assert app.metrics.value("statefulstream_source_data_loss_total") == 1.0
        plan = FilePlanLog(str(ckpt / "offsets")).latest()
        assert plan is not None and str(data / "a.jsonl") not in plan.end
        write(data / "a.jsonl", rows("c", 2))
        collecting_app(data, ckpt, sink, fail_on_data_loss=False).run()
        assert sorted(r for r in sink.rows if r[0] == "c") == [("c", 0), ("c", 1)]

    def test_a_planned_batch_whose_file_shrank_before_the_replay(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        write(path, rows("a", 10))
        src = FileSource(path)
        start, latest = src.available({})
        write(path, rows("a", 4))
        with pytest.raises(DataLossError, match="has 4 records, but the batch was planned up to record 10"):
            FileSource(path).read(start, latest)
        lenient = FileSource(path, fail_on_data_loss=False)
        assert [r["i"] for r in lenient.read(start, latest).records] == [0, 1, 2, 3]
        assert lenient.data_loss_events == 1

    def test_a_loss_asked_about_twice_from_the_same_position_is_gone_past_once(self, tmp_path: pathlib.Path) -> None:
        # Replaced by fewer bytes but more records: only the byte count tells, and only on the first look.
        path = tmp_path / "a.jsonl"
        write(path, [{"pad": "x" * 100, "i": i} for i in range(2)])
        src = FileSource(path, fail_on_data_loss=False)
        _, read_to = src.available({})
        write(path, [{"i": i} for i in range(5)])
        first = src.available(read_to)
        again = src.available(read_to)  # e.g. available_now's target, then the plan
        assert first == again == ({str(path): 0}, {str(path): 5})
        assert src.data_loss_events == 1

    def test_an_empty_file_that_vanished_is_no_loss(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "a.jsonl").write_text("")
        src = FileSource(tmp_path)
        start, latest = src.available({})
        assert latest == {str(tmp_path / "a.jsonl"): 0}
        (tmp_path / "a.jsonl").unlink()
        assert src.available(latest) == ({}, {})


class TestRestartDoesNotReread:
    def test_a_restart_counts_only_the_new_bytes(self, tmp_path: pathlib.Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        data, ckpt, sink = tmp_path / "in", tmp_path / "ckpt", MemorySink()
        data.mkdir()
        write(data / "a.jsonl", rows("a", 5000))
        write(data / "b.jsonl", rows("b", 3000))
        collecting_app(data, ckpt, sink, max_records=1500).run()
        sizes = {p.name: p.stat().st_size for p in data.iterdir()}
        write(data / "b.jsonl", rows("c", 7), "a")
        scans: list[tuple[str, int]] = []
        real = file_module.scan_lines

        def spy(path: str, idx: Any, **kw: Any) -> None:
            scans.append((pathlib.Path(path).name, idx.scanned))
            real(path, idx, **kw)

        monkeypatch.setattr(file_module, "scan_lines", spy)
        collecting_app(data, ckpt, sink, max_records=1500).run()
        # Each file is counted from where the last plan ended, never from byte 0.
        assert scans == [("a.jsonl", sizes["a.jsonl"]), ("b.jsonl", sizes["b.jsonl"])]
        assert sorted(r for r in sink.rows if r[0] == "c") == [("c", i) for i in range(7)]
        assert len(sink.rows) == 5000 + 3000 + 7

    def test_a_replay_after_a_restart_reads_the_planned_range_from_the_index(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.csv"
        path.write_text("k,n\n" + "".join(f"u{i % 4},{i}\n" for i in range(3000)))
        src = FileSource(path)
        start, latest = src.available({})
        mid = {str(path): 1234}
        index = src.position_index(mid, latest)
        fresh = FileSource(path)
        fresh.restore_position_index(index)
        assert fresh.read(mid, latest).records == src.read(mid, latest).records
        assert [r["n"] for r in fresh.read(mid, latest).records] == [str(i) for i in range(1234, 3000)]

    def test_an_unterminated_last_object_survives_the_restart(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_text('{"i": 0}\n{"i": 1}')  # the last line has no newline yet
        src = FileSource(path)
        start, latest = src.available({})
        assert latest == {str(path): 2}
        fresh = FileSource(path)
        fresh.restore_position_index(src.position_index(start, latest))
        with path.open("a") as f:
            f.write('\n{"i": 2}\n')
        start2, latest2 = fresh.available(latest)
        assert latest2 == {str(path): 3}
        assert fresh.read(start2, latest2).records == [{"i": 2}]

    def test_the_plan_log_keeps_the_index_and_reads_plans_without_one(self, tmp_path: pathlib.Path) -> None:
        data, ckpt = tmp_path / "in", tmp_path / "ckpt"
        data.mkdir()
        write(data / "a.jsonl", rows("a", 20))
        collecting_app(data, ckpt, MemorySink()).run()
        offsets = ckpt / "offsets"
        newest = max((p for p in offsets.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        doc = json.loads(newest.read_text())
        size = (data / "a.jsonl").stat().st_size
        assert doc["plan"]["source_index"] == {str(data / "a.jsonl"): [0, 0, 20, size, 0]}
        del doc["plan"]["source_index"]  # a plan written before the index existed
        newest.write_text(json.dumps(doc))
        write(data / "a.jsonl", rows("b", 2), "a")
        sink = MemorySink()
        collecting_app(data, ckpt, sink).run()
        assert sorted(sink.rows) == [("b", 0), ("b", 1)]
