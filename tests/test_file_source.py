"""Tests of ``FileSource`` (JSON lines, CSV, Parquet) and of the shipped sample data.

Expected records are computed independently from the files with the stdlib
(``json``, ``csv``) or pyarrow, never by hand.
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import json
import pathlib
import random
import subprocess
import sys
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from statefulstream import App
from statefulstream.errors import ConfigError, DataLossError, SourceError
from statefulstream.memory_sink import MemorySink
from statefulstream.schema import Schema
from statefulstream.sources import file as file_module
from statefulstream.sources import file_index
from statefulstream.sources.base import ReadResult
from statefulstream.sources.file import FileSource

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "data" / "events.jsonl"
EVENT_SCHEMA = Schema({"user": str, "ts": int, "page": str, "action": str})


def read_all(src: FileSource, start: dict[str, int] | None = None) -> tuple[dict[str, int], ReadResult]:
    """Plan from ``start`` to everything available and read it; return the end and the result."""
    begin, latest = src.available(start or {})
    return latest, src.read(begin, latest)


def json_objects(lines: list[str]) -> list[Any]:
    """The records a JSON-lines reader should keep, computed with the stdlib json module."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def write_lines(path: pathlib.Path, lines: list[str], *, end: str = "\n") -> None:
    path.write_text("".join(line + end for line in lines))


def append(path: pathlib.Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


class TestFileSourceJsonLines:
    def test_reads_every_object_in_file_order(self, tmp_path: pathlib.Path) -> None:
        lines = [json.dumps({"k": i, "v": [i, str(i)]}) for i in range(50)]
        write_lines(tmp_path / "a.jsonl", lines)
        end, result = read_all(FileSource(tmp_path / "a.jsonl"))
        assert result.records == json_objects(lines)
        assert end == {str(tmp_path / "a.jsonl"): 50}
        assert result.dead_letters == []

    def test_bad_lines_are_dead_lettered_with_file_line_and_reason_and_the_rest_kept(
            self, tmp_path: pathlib.Path) -> None:
        lines = ['{"k": 1}', '{"k": 2, "v": "trunc', "plain text", "[1, 2]", '"a string"', '{"k": 3}', "{}"]
        path = tmp_path / "a.jsonl"
        write_lines(path, lines)
        _, result = read_all(FileSource(path))
        assert result.records == json_objects(lines)
        got = [(dl.position, dl.error, dl.raw, dl.source) for dl in result.dead_letters]
        assert got == [({"file": str(path), "line": n}, "decode", lines[n - 1].encode(), "file") for n in (2, 3, 4, 5)]
        reasons = [dl.reason for dl in result.dead_letters]
        assert reasons[0] == "line is truncated or not valid JSON: unexpected end of data: line 1 column 21 (char 20)"
        assert reasons[2] == "line is a JSON list, not an object"
        assert reasons[3] == "line is a JSON str, not an object"

    def test_records_plus_dead_letters_equal_lines_read(self, tmp_path: pathlib.Path) -> None:
        rng = random.Random(7)
        choices = ['{"user": "u1", "ts": 1}', '{"user": "u1"}', '{"user": 5, "ts": 2}', "{bad", "[]", '{"ts": 3}']
        lines = [rng.choice(choices) for _ in range(400)]
        write_lines(tmp_path / "a.jsonl", lines)
        src = FileSource(tmp_path, schema=Schema({"user": str, "ts": int}))
        start, latest = src.available({})
        p = str(tmp_path / "a.jsonl")
        for lo in range(0, 400, 37):  # a batch at a time, as the executor with max_records_per_trigger
            hi = min(lo + 37, 400)
            result = src.read({p: lo}, {p: hi})
            assert len(result.records) + len(result.dead_letters) == hi - lo
        total = src.read(start, latest)
        expected = [r for r in json_objects(lines) if type(r.get("user")) is str and type(r.get("ts")) is int]
        assert total.records == expected
        assert collections.Counter(dl.error for dl in total.dead_letters) == {
            "decode": sum(1 for line in lines if line in ("{bad", "[]")),
            "schema": sum(1 for line in lines if line in ('{"user": "u1"}', '{"user": 5, "ts": 2}', '{"ts": 3}'))}

    def test_schema_violations_are_dead_lettered_in_line_order_with_raw_line(self, tmp_path: pathlib.Path) -> None:
        lines = ['{"user": "a", "ts": 1}', "nope", '{"user": "b", "ts": "x"}', '{"user": "c", "ts": 3}']
        path = tmp_path / "a.jsonl"
        write_lines(path, lines)
        _, result = read_all(FileSource(path, schema=Schema({"user": str, "ts": int})))
        assert [r["user"] for r in result.records] == ["a", "c"]
        assert [(dl.position["line"], dl.error) for dl in result.dead_letters] == [(2, "decode"), (3, "schema")]
        assert result.dead_letters[1].raw == lines[2].encode()
        assert result.dead_letters[1].reason == "field 'ts' must be int, got str 'x'"

    def test_blank_lines_hold_positions_but_are_not_records(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_text('{"k": 1}\n\n   \n{"k": 2}\n')
        end, result = read_all(FileSource(path))
        assert end == {str(path): 4}
        assert result.records == [{"k": 1}, {"k": 2}] and result.dead_letters == []

    def test_invalid_utf8_line_is_dead_lettered(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_bytes(b'{"k": 1}\n{"k": "\xff\xfe"}\n{"k": 2}\n')
        _, result = read_all(FileSource(path))
        assert result.records == [{"k": 1}, {"k": 2}]
        assert [dl.position["line"] for dl in result.dead_letters] == [2]

    def test_crlf_line_endings_are_read(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        write_lines(path, ['{"k": 1}', '{"k": 2}'], end="\r\n")
        assert read_all(FileSource(path))[1].records == [{"k": 1}, {"k": 2}]

    def test_same_range_returns_same_records_every_time_and_after_restart(self, tmp_path: pathlib.Path) -> None:
        # Over 1 MiB, so ranges start and end on both sides of the seek index's checkpoints.
        lines = [json.dumps({"i": i, "pad": "x" * (i % 150)}) if i % 101 else "garbage" for i in range(25_000)]
        path = tmp_path / "big.jsonl"
        write_lines(path, lines)
        assert path.stat().st_size > 2 * (1 << 20)
        p = str(path)
        src = FileSource(path)
        src.available({})
        rng = random.Random(3)
        for lo, hi in [(0, 25_000), (24_990, 25_000), *[sorted(rng.sample(range(25_001), 2)) for _ in range(20)]]:
            first = src.read({p: lo}, {p: hi})
            again = src.read({p: lo}, {p: hi})
            fresh = FileSource(path).read({p: lo}, {p: hi})  # a restart: no index built yet
            assert first == again == fresh
            assert first.records == json_objects(lines[lo:hi])
            assert [dl.position["line"] for dl in first.dead_letters] == [
                i + 1 for i in range(lo, hi) if lines[i] == "garbage"]

    def test_half_written_last_line_is_not_available_until_complete(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_text('{"k": 1}\n{"k": 2, "v": "ha')
        src = FileSource(path)
        end, result = read_all(src)
        assert end == {str(path): 1} and result.records == [{"k": 1}]
        append(path, 'lf"}\n{"k": 3}')  # the writer finishes line 2; line 3 holds a whole object
        end2, result2 = read_all(src, end)
        assert end2 == {str(path): 3}
        assert result2.records == [{"k": 2, "v": "half"}, {"k": 3}] and result2.dead_letters == []

    def test_unterminated_whole_object_is_read_and_its_newline_later_adds_nothing(
            self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_text('{"k": 1}\n{"k": 2}')
        src = FileSource(path)
        end, result = read_all(src)
        assert result.records == [{"k": 1}, {"k": 2}]
        append(path, '\n{"k": 3}\n')
        end2, result2 = read_all(src, end)
        assert end2 == {str(path): 3} and result2.records == [{"k": 3}]
        assert FileSource(path).read({}, end2).records == [{"k": 1}, {"k": 2}, {"k": 3}]

    def test_writing_onto_a_line_already_read_is_an_error(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        path.write_text('{"k": 1}')
        src = FileSource(path)
        end, _ = read_all(src)
        append(path, '{"k": 2}\n')
        with pytest.raises(SourceError, match="appended to the same line. Terminate every line with a newline"):
            src.available(end)


class TestChunkedReads:
    """A batch is read and decoded about ``CHUNK`` bytes at a time; where the chunks end changes nothing."""

    KINDS = ('{"k": %d}', '{"k": %d, "pad": "' + "x" * 40 + '"}', "", "bad %d", "[%d]", '{"k": %d, "c": "\\n,"}')

    @staticmethod
    def expected(lines: list[str], lo: int, hi: int) -> tuple[list[tuple[int, Any]], list[int]]:
        """(line, record) of the good lines and the lines of the bad ones among lines ``[lo, hi)``, 1-based."""
        good, bad = [], []
        for n in range(lo + 1, hi + 1):
            line = lines[n - 1]
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if isinstance(rec, dict):
                good.append((n, rec))
            else:
                bad.append(n)
        return good, bad

    @staticmethod
    def got(result: ReadResult) -> tuple[list[tuple[int, Any]], list[int]]:
        positions = [result.position(i) for i in range(len(result.records))]
        good = [(pos["line"], rec) for pos, rec in zip(positions, result.records, strict=True) if pos]
        return good, [dl.position["line"] for dl in result.dead_letters]

    @pytest.mark.parametrize("chunk", [1, 7, 40, 97, 1 << 20])
    def test_any_chunk_size_reads_the_same_records_dead_letters_and_positions(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
        rng = random.Random(chunk)
        lines = [rng.choice(self.KINDS).replace("%d", str(i)) for i in range(300)] + ['{"k": "last"}']
        path = tmp_path / "a.jsonl"
        path.write_text("\n".join(lines))  # the last object has no newline yet: it is still a record
        monkeypatch.setattr(file_index, "CHUNK", chunk)  # checkpoints every ``chunk`` bytes too
        src = FileSource(path)
        start, latest = src.available({})
        p = str(path)
        assert latest == {p: len(lines)}
        cuts = sorted({0, len(lines), *rng.sample(range(1, len(lines)), 12)})
        for lo, hi in itertools.pairwise(cuts):
            assert self.got(src.read({p: lo}, {p: hi})) == self.expected(lines, lo, hi), (lo, hi)
            # a restarted source knows only the batch's own start and end (its plan's hint)
            restarted = FileSource(path)
            restarted.restore_position_index(src.position_index({p: lo}, {p: hi}))
            assert self.got(restarted.read({p: lo}, {p: hi})) == self.expected(lines, lo, hi), (lo, hi)

    @pytest.mark.parametrize("chunk", [1, 13, 1 << 20])
    def test_csv_chunks_keep_the_header_out_and_positions_right(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
        rows = [f"u{i},{i}" if i % 17 else f"u{i},{i},extra" for i in range(120)]
        path = tmp_path / "a.csv"
        write_lines(path, ["user,n", *rows])
        monkeypatch.setattr(file_index, "CHUNK", chunk)
        src = FileSource(path)
        start, latest = src.available({})
        result = src.read(start, latest)
        assert result.records == [{"user": f"u{i}", "n": str(i)} for i in range(120) if i % 17]
        assert [dl.position["line"] for dl in result.dead_letters] == [i + 2 for i in range(120) if not i % 17]


class TestFileSourceDiscovery:
    def test_new_files_are_picked_up_and_done_files_keep_their_end_position(self, tmp_path: pathlib.Path) -> None:
        write_lines(tmp_path / "b.jsonl", ['{"f": "b"}'] * 3)
        src = FileSource(tmp_path)
        end, first = read_all(src)
        assert end == {str(tmp_path / "b.jsonl"): 3}
        write_lines(tmp_path / "a.jsonl", ['{"f": "a"}'] * 2)  # sorts first, arrives later
        write_lines(tmp_path / "c.jsonl", ['{"f": "c"}'])
        start2, latest2 = src.available(end)
        assert start2 == {str(tmp_path / p): n for p, n in [("a.jsonl", 0), ("b.jsonl", 3), ("c.jsonl", 0)]}
        assert latest2 == {str(tmp_path / p): n for p, n in [("a.jsonl", 2), ("b.jsonl", 3), ("c.jsonl", 1)]}
        assert [r["f"] for r in src.read(start2, latest2).records] == ["a", "a", "c"]

    def test_done_files_are_not_read_again_to_compute_available(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("a.jsonl", "b.jsonl"):
            write_lines(tmp_path / name, ['{"x": 1}'] * 5)
        src = FileSource(tmp_path)
        end, _ = read_all(src)
        scanned: list[str] = []
        real_scan = file_module.scan_lines
        monkeypatch.setattr(file_module, "scan_lines", lambda path, *a, **kw: (scanned.append(path),
                                                                                real_scan(path, *a, **kw)))
        append(tmp_path / "b.jsonl", '{"x": 2}\n')
        _, latest = src.available(end)
        assert scanned == [str(tmp_path / "b.jsonl")]
        assert latest == {str(tmp_path / "a.jsonl"): 5, str(tmp_path / "b.jsonl"): 6}

    def test_deleted_file_that_was_read_is_data_loss(self, tmp_path: pathlib.Path) -> None:
        write_lines(tmp_path / "a.jsonl", ['{"x": 1}'])
        src = FileSource(tmp_path)
        end, _ = read_all(src)
        (tmp_path / "a.jsonl").unlink()
        with pytest.raises(DataLossError, match=r"a.jsonl' is gone .*but 1 records of it were already read"):
            src.available(end)

    def test_hidden_and_underscore_files_and_unknown_extensions_are_skipped(self, tmp_path: pathlib.Path) -> None:
        for name in (".a.jsonl.part", "_tmp.jsonl", "notes.txt", "x.jsonl"):
            write_lines(tmp_path / name, ['{"x": 1}'])
        (tmp_path / "sub").mkdir()
        write_lines(tmp_path / "sub" / "y.jsonl", ['{"x": 1}'])  # a directory is not recursive
        assert list(FileSource(tmp_path).available({})[1]) == [str(tmp_path / "x.jsonl")]

    def test_explicit_format_reads_every_file_in_a_directory(self, tmp_path: pathlib.Path) -> None:
        write_lines(tmp_path / "part-0001", ['{"x": 1}'])
        write_lines(tmp_path / "part-0000", ['{"x": 0}'])
        _, result = read_all(FileSource(tmp_path, format="ndjson"))
        assert result.records == [{"x": 0}, {"x": 1}]

    def test_glob_matches_files_recursively_in_sorted_order(self, tmp_path: pathlib.Path) -> None:
        for sub, x in (("d2", 2), ("d1", 1)):
            (tmp_path / sub).mkdir()
            write_lines(tmp_path / sub / "e.jsonl", [json.dumps({"x": x})])
            write_lines(tmp_path / sub / "e.csv", ["x", "9"])
        _, result = read_all(FileSource(str(tmp_path / "**" / "*.jsonl")))
        assert result.records == [{"x": 1}, {"x": 2}]

    def test_missing_path_is_a_source_error_naming_it(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(SourceError, match="path '.*nowhere' does not exist; create the directory"):
            FileSource(tmp_path / "nowhere").available({})

    def test_unknown_format_and_extension_fail_at_definition(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(ConfigError, match=r"must be one of jsonl, csv, parquet or None \(infer\); got 'xml'"):
            FileSource(tmp_path, format="xml")
        (tmp_path / "data.txt").write_text("x\n")
        with pytest.raises(ConfigError, match="cannot tell the format of .*data.txt.* pass format="):
            FileSource(tmp_path / "data.txt")

    def test_truncated_file_is_an_error_not_a_silent_restart(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "a.jsonl"
        write_lines(path, ['{"x": 1}'] * 10)
        src = FileSource(path)
        end, _ = read_all(src)
        write_lines(path, ['{"x": 1}'] * 3)
        with pytest.raises(DataLossError, match="truncated, replaced or deleted. FileSource needs append-only"):
            src.available(end)
        with pytest.raises(DataLossError, match="has 3 records, but the batch was planned up to record 10"):
            FileSource(path).read({}, end)


class TestFileSourceCsv:
    def test_header_names_fields_and_values_stay_text_without_schema(self, tmp_path: pathlib.Path) -> None:
        text = 'user,ts,note\nu1,5,"a, b"\nu2,6,"say ""hi"""\n'
        path = tmp_path / "e.csv"
        path.write_text(text)
        end, result = read_all(FileSource(path))
        assert end == {str(path): 2}
        assert result.records == list(csv.DictReader(io.StringIO(text)))

    def test_schema_parses_numbers_from_text(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_text("user,ts,amount\nu1,5,2.5\nu2,x,1\nu3,7,\n")
        src = FileSource(path, schema=Schema({"user": str, "ts": int, "amount": float}, optional=["amount"]))
        _, result = read_all(src)
        assert result.records == [{"user": "u1", "ts": 5, "amount": 2.5}, {"user": "u3", "ts": 7, "amount": None}]
        [dl] = result.dead_letters
        assert (dl.position, dl.error, dl.raw) == ({"file": str(path), "line": 3}, "schema", b"u2,x,1")

    def test_wrong_field_count_is_dead_lettered_with_its_line(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_text("a,b\n1,2\n1,2,3\n4\n5,6\n")
        _, result = read_all(FileSource(path))
        assert result.records == [{"a": "1", "b": "2"}, {"a": "5", "b": "6"}]
        assert [(dl.position["line"], dl.reason) for dl in result.dead_letters] == [
            (3, "line has 3 fields but the header has 2"), (4, "line has 1 fields but the header has 2")]

    def test_quoted_newline_is_dead_lettered_the_same_whatever_the_batch_cut(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_text('a,b\n1,2\n3,"x\ny"\n5,6\n')
        src = FileSource(path)
        whole = read_all(src)[1]
        p = str(path)
        pieces = [src.read({p: i}, {p: i + 1}) for i in range(4)]
        assert whole.records == [r for piece in pieces for r in piece.records] == [{"a": "1", "b": "2"},
                                                                                   {"a": "5", "b": "6"}]
        assert whole.dead_letters == [dl for piece in pieces for dl in piece.dead_letters]
        assert [dl.position["line"] for dl in whole.dead_letters] == [3, 4]

    def test_byte_order_mark_is_not_part_of_the_first_column(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_bytes("user,n\r\nu1,1\r\n".encode("utf-8-sig"))
        assert read_all(FileSource(path))[1].records == [{"user": "u1", "n": "1"}]

    def test_header_only_or_incomplete_header_has_no_records(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_text("user,n")
        src = FileSource(path)
        end, _ = read_all(src)
        assert end == {str(path): 0}
        append(path, "\nu1,1\n")
        assert read_all(src, end)[1].records == [{"user": "u1", "n": "1"}]

    def test_repeated_column_names_are_an_error(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "e.csv"
        path.write_text("a,b,a\n1,2,3\n")
        with pytest.raises(SourceError, match=r"repeated column names \['a'\]; name each column once"):
            FileSource(path).available({})


class TestFileSourceParquet:
    @pytest.fixture
    def table(self) -> pa.Table:
        n = 1000
        return pa.table({"user": [f"u{i % 13}" for i in range(n)], "ts": list(range(n)),
                         "amount": [None if i % 7 == 0 else i / 4 for i in range(n)]})

    def test_ranges_across_row_groups_match_the_table(self, tmp_path: pathlib.Path, table: pa.Table) -> None:
        path = tmp_path / "t.parquet"
        pq.write_table(table, path, row_group_size=64)
        src = FileSource(path)
        start, latest = src.available({})
        assert latest == {str(path): table.num_rows}
        rows = table.to_pylist()
        p = str(path)
        for lo, hi in [(0, 1000), (0, 64), (63, 65), (500, 501), (130, 999), (999, 1000)]:
            assert src.read({p: lo}, {p: hi}).records == rows[lo:hi]

    def test_schema_violations_are_dead_lettered_by_row(self, tmp_path: pathlib.Path, table: pa.Table) -> None:
        path = tmp_path / "t.parquet"
        pq.write_table(table, path, row_group_size=100)
        _, result = read_all(FileSource(path, schema=Schema({"user": str, "ts": int, "amount": float})))
        rows = table.to_pylist()
        assert result.records == [r for r in rows if r["amount"] is not None]
        assert [dl.position["row"] for dl in result.dead_letters] == [
            i + 1 for i, r in enumerate(rows) if r["amount"] is None]
        assert result.dead_letters[0].raw == rows[0] and result.dead_letters[0].error == "schema"

    def test_file_still_being_written_has_no_rows_until_complete(
            self, tmp_path: pathlib.Path, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        path = tmp_path / "t.parquet"
        path.write_bytes(data[: len(data) // 2])
        src = FileSource(tmp_path)
        end, result = read_all(src)
        assert end == {str(path): 0} and result.records == []
        path.write_bytes(data)
        assert read_all(src, end)[1].records == table.to_pylist()

    def test_missing_pyarrow_is_a_config_error_with_the_install_command(
            self, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # makes the import fail
        with pytest.raises(ConfigError, match=r"needs pyarrow: pip install 'statefulstream\[parquet\]'"):
            FileSource(tmp_path, format="parquet")


class TestSampleData:
    def test_generator_reproduces_the_committed_file_byte_for_byte(self, tmp_path: pathlib.Path) -> None:
        out = tmp_path / "events.jsonl"
        subprocess.run([sys.executable, str(ROOT / "examples" / "generate_data.py"), "--out", str(out)],
                       check=True, capture_output=True, timeout=60)
        assert out.read_bytes() == SAMPLE.read_bytes()

    def test_sample_has_sessions_gaps_disorder_and_a_few_bad_lines(self) -> None:
        lines = SAMPLE.read_text().splitlines()
        events = [r for r in json_objects(lines) if type(r.get("ts")) is int]
        assert 2000 <= len(events) <= 10_000 and SAMPLE.stat().st_size < 1 << 20
        by_user = collections.defaultdict(list)
        for e in events:
            by_user[e["user"]].append(e["ts"])
        gaps = [b - a for ts in by_user.values() for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False)]
        assert len(by_user) >= 200
        assert sum(g > 30_000 for g in gaps) > 200 and sum(20_000 < g <= 30_000 for g in gaps) > 10
        disorder = [max(e["ts"] for e in events[:i]) - events[i]["ts"] for i in range(1, len(events))]
        assert 0 < max(disorder) < 10_000  # some out of order, none beyond the example's watermark delay
        assert 3 <= len(lines) - len(events) <= 10

    def test_file_source_dead_letters_exactly_the_bad_sample_lines(self) -> None:
        lines = SAMPLE.read_text().splitlines()
        _, result = read_all(FileSource(SAMPLE, schema=EVENT_SCHEMA))
        expected = [r for r in json_objects(lines) if all(type(r.get(f)) is str for f in ("user", "page", "action"))
                    and type(r.get("ts")) is int]
        assert result.records == expected
        assert len(result.records) + len(result.dead_letters) == len(lines)
        assert {dl.error for dl in result.dead_letters} == {"decode", "schema"}


class TestFileSourceInApp:
    def test_app_counts_every_good_record_once_and_dead_letters_the_rest(self, tmp_path: pathlib.Path) -> None:
        lines = SAMPLE.read_text().splitlines()
        data = tmp_path / "in"
        data.mkdir()
        write_lines(data / "part-1.jsonl", lines[:3000])
        write_lines(data / "part-2.jsonl", lines[3000:])
        out, dead = MemorySink(), MemorySink()
        read = []
        app = App("counts", source=FileSource(data, schema=EVENT_SCHEMA), trigger="available_now",
                  max_records_per_trigger=997, dead_letters=dead)
        app.add_listener(lambda progress: read.append(progress.records_read))

        @app.flat_map_groups_with_state(key="user", output_mode="update", sink=out)
        def count(user: str, events: list[dict[str, Any]], state: Any) -> Any:
            total = (state.get_option() or 0) + len(events)
            state.update(total)
            yield {"user": user, "count": total}

        app.run()
        final = {row["user"]: row["count"] for row in out.rows}
        good = [r for r in json_objects(lines) if EVENT_SCHEMA.conform([r])[0]]
        assert final == collections.Counter(r["user"] for r in good)
        assert sum(read) == len(lines) and max(read) <= 997
        offset = {str(data / "part-1.jsonl"): 0, str(data / "part-2.jsonl"): 3000}
        bad_lines = sorted(offset[row["position"]["file"]] + row["position"]["line"] for row in dead.rows)
        assert bad_lines == [i + 1 for i, line in enumerate(lines) if not json_objects([line])
                             or not EVENT_SCHEMA.conform(json_objects([line]))[0]]
