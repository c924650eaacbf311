"""Every dead letter carries the source position it came from (issue 12 item 6).

A record that fails after decoding (no key, a missing or bad event time, a
stateless step raising) is dead-lettered with where the source read it:
file and line (row for Parquet), or topic, partition and offset; through
filters, flat_maps, late drops and schema checks.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import orjson
import pytest

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.lineage import Lineage
from statefulstream.schema import Schema
from statefulstream.sinks import MemorySink
from statefulstream.sources import FileSource, MemorySource
from statefulstream.sources.base import ReadResult
from statefulstream.testing import StreamTester


def no_op(key: Any, values: list, state: GroupState[Any]) -> list:
    return []


def run_file_app(path: pathlib.Path, configure: Any, **options: Any) -> list[dict[str, Any]]:
    """Run an app over ``path`` to the end; return its dead letters as rows."""
    dead = MemorySink()
    app = App("positions", source=FileSource(path, **options.pop("source", {})), dead_letters=dead,
              trigger="available_now")
    configure(app)
    options.setdefault("key", "k")
    app.flat_map_groups_with_state(**options)(no_op)
    app.run()
    return dead.rows


def positions(rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return sorted((r["error"], r["position"].get("line", r["position"].get("row"))) for r in rows)


def expected(lines: list[dict[str, Any] | str], fails: Any) -> list[tuple[str, int]]:
    """The (error, 1-based line) a record should be dead-lettered at, computed from the input."""
    return sorted((err, n) for n, rec in enumerate(lines, 1) if (err := fails(rec)) is not None)


class TestFileSourcePositions:
    def test_missing_key_and_bad_event_time_after_a_filter_a_flat_map_and_a_map(self, tmp_path: pathlib.Path) -> None:
        lines: list[dict[str, Any] | str] = []
        for i in range(300):
            rec: dict[str, Any] = {"k": i % 7, "ts": 1_000 + i, "n": i}
            if i % 11 == 3:
                del rec["k"]
            if i % 13 == 5:
                rec["ts"] = "not a time"
            if i % 17 == 0:
                rec["boom"] = True
            lines.append(rec)
            if i % 29 == 1:
                lines.append("{broken json")
        path = tmp_path / "in.jsonl"
        path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))

        def configure(app: App) -> None:
            app.filter(lambda r: r["n"] % 5 != 4)  # drops records, so indexes shift before the failures
            app.flat_map(lambda r: [r] if r["n"] % 2 else [r, dict(r, copy=True)])  # and multiplies them

            @app.map
            def explode(r: dict[str, Any]) -> dict[str, Any]:
                if r.get("boom"):
                    raise RuntimeError("boom")
                return r

        def fails(rec: dict[str, Any] | str) -> str | None:
            if isinstance(rec, str):
                return "decode"
            if rec["n"] % 5 == 4:
                return None
            if rec.get("boom"):
                return "step"
            if rec["ts"] == "not a time":
                return "event_time"
            return "key" if "k" not in rec else None

        def twice(rec: dict[str, Any] | str) -> int:
            return 1 if isinstance(rec, str) or rec["n"] % 2 else 2

        got = run_file_app(path, configure, event_time="ts", watermark_delay="0 ms")
        want = sorted(p for n, rec in enumerate(lines, 1) if (err := fails(rec)) for p in [(err, n)] * twice(rec))
        assert positions(got) == want
        assert {r["position"]["file"] for r in got} == {str(path)}
        for row in got:
            if row["error"] != "decode":
                assert row["raw"]["n"] == lines[row["position"]["line"] - 1]["n"]  # the raw record is that line's
                assert row["position"]["batch_id"] == row["batch_id"]

    def test_late_records_dropped_before_a_key_failure_do_not_shift_positions(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "in.jsonl"
        first = [{"k": 1, "ts": 100_000}]
        path.write_text("".join(json.dumps(r) + "\n" for r in first))
        dead = MemorySink()
        app = App("late", source=FileSource(path), dead_letters=dead, trigger="available_now")
        app.flat_map_groups_with_state(key="k", event_time="ts", watermark_delay="0 ms",
                                       timeout=GroupStateTimeout.EVENT_TIME)(no_op)
        app.run()  # batch 0 moves the watermark to 100000; the no-data batch 1 runs with it
        second = [{"k": 2, "ts": 5}, {"ts": 200_000}, {"k": 3, "ts": 6}, {"ts": 7}, {"ts": 300_000}]
        with path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in second))
        app.run()
        # Late ones (ts <= 100000) are dropped silently; the keyless on-time ones are dead letters.
        assert [(d["error"], d["position"]["line"]) for d in dead.rows] == [("key", 3), ("key", 6)]

    def test_csv_schema_violations_before_a_key_failure(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "in.csv"
        rows = [("a", "1"), ("b", "x"), ("", "3"), ("c", "4"), ("", "y"), ("", "6")]
        path.write_text("k,n\n" + "".join(f"{k},{n}\n" for k, n in rows))

        def key(r: dict[str, Any]) -> str:
            if not r["k"]:
                raise KeyError("k")
            return str(r["k"])

        got = run_file_app(path, lambda app: None, key=key, source={"schema": Schema({"k": str, "n": int})})
        # Line 1 is the header; n must parse as an int.
        assert positions(got) == [("key", 4), ("key", 7), ("schema", 3), ("schema", 6)]

    def test_parquet_rows(self, tmp_path: pathlib.Path) -> None:
        import pyarrow as pa  # the test extra installs it: a missing pyarrow fails here, it does not skip
        import pyarrow.parquet as pq

        path = tmp_path / "in.parquet"
        ks = [None if i % 4 == 2 else f"u{i}" for i in range(40)]
        pq.write_table(pa.table({"k": ks, "n": list(range(40))}), path, row_group_size=7)

        def key(r: dict[str, Any]) -> str:
            if r["k"] is None:
                raise KeyError("k")
            return str(r["k"])

        got = run_file_app(path, lambda app: app.filter(lambda r: r["n"] % 3 != 0), key=key)
        assert positions(got) == sorted(("key", i + 1) for i in range(40) if i % 4 == 2 and i % 3 != 0)


def test_memory_source_positions_are_partition_and_offset() -> None:
    app = App("mem")
    app.flat_map_groups_with_state(key="k")(no_op)
    t = StreamTester(app)
    t.run_batch([{"k": 1}, {"k": 2}])
    t.run_batch([{"k": 3}, {"nokey": 4}, {"k": 5}, {"nokey": 6}])
    assert [d["position"] for d in t.dead_letters.rows] == [
        {"partition": "memory", "offset": 3, "batch_id": 1}, {"partition": "memory", "offset": 5, "batch_id": 1}]


def test_a_source_that_gives_no_positions_still_says_which_record() -> None:
    class Bare(MemorySource):
        def read(self, start: Any, end: Any) -> ReadResult:
            return ReadResult(list(super().read(start, end).records))

    app = App("bare", source=Bare([{"k": 1}, {}, {"k": 2}]), trigger="available_now", dead_letters=MemorySink())
    app.flat_map_groups_with_state(key="k")(no_op)
    app.run()
    sink = app.dead_letter_sink
    assert isinstance(sink, MemorySink)
    assert [d["position"] for d in sink.rows] == [{"batch_id": 0, "record_index": 1}]


def test_lineage_maps_back_through_every_kind_of_stage() -> None:
    source = list(range(100))
    lin = Lineage(lambda i: {"offset": source[i]}, batch_id=0)
    stage = source
    keep = [i for i in range(len(stage)) if i % 3]
    lin.keep(keep)
    stage = [stage[i] for i in keep]
    verdicts = [x % 5 != 0 for x in stage]
    lin.mask(verdicts)
    stage = [x for x, ok in zip(stage, verdicts, strict=True) if ok]
    counts = [x % 3 for x in stage]
    lin.expand(counts)
    stage = [x for x, n in zip(stage, counts, strict=True) for _ in range(n)]
    assert [lin.position(i)["offset"] for i in range(len(stage))] == stage


@pytest.mark.kafka
def test_kafka_positions_are_topic_partition_and_offset(kafka_broker: Any) -> None:
    from statefulstream.sources.kafka import KafkaSource

    topic = kafka_broker.create_topic(partitions=2)
    for p in range(2):
        values = [orjson.dumps({"n": i} if i % 4 == 1 else {"k": p, "n": i}) for i in range(10)]
        values[6] = b"not json"
        kafka_broker.produce(topic, values, partition=p, batched=False)
    dead = MemorySink()
    app = App("kafka-positions", source=KafkaSource(topic, bootstrap_servers=kafka_broker.bootstrap,
                                                      read_timeout="10 seconds"),
              dead_letters=dead, trigger="available_now")
    app.filter(lambda r: r["n"] != 5)
    app.flat_map_groups_with_state(key="k")(no_op)
    app.run()
    got = sorted((d["error"], d["position"]["partition"], d["position"]["offset"]) for d in dead.rows)
    want = sorted([("decode", p, 6) for p in range(2)] + [("key", p, i) for p in range(2) for i in (1, 9)])
    assert got == want
    assert {d["position"]["topic"] for d in dead.rows} == {topic}


@pytest.mark.kafka
def test_kafka_positions_across_transaction_markers(kafka_broker: Any) -> None:
    """Committed transactions leave control records between data offsets: positions must skip them."""
    from confluent_kafka import Producer

    from statefulstream.sources.kafka import KafkaSource

    topic = kafka_broker.create_topic()
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": f"tx-{topic}",
                         "enable.idempotence": True})
    producer.init_transactions(30)
    keyless: list[int] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        if "k" not in orjson.loads(msg.value()):
            keyless.append(msg.offset())

    for txn in ([{"k": 1}, {"x": 1}, {"k": 2}], [{"x": 2}, {"k": 3}], [{"k": 4}, {"x": 3}]):
        producer.begin_transaction()
        for rec in txn:
            producer.produce(topic, orjson.dumps(rec), partition=0, on_delivery=delivered)
        producer.commit_transaction(30)
    dead = MemorySink()
    app = App("kafka-txn-positions", source=KafkaSource(topic, bootstrap_servers=kafka_broker.bootstrap,
                                                          read_timeout="10 seconds"),
              dead_letters=dead, trigger="available_now")
    app.flat_map_groups_with_state(key="k")(no_op)
    app.run()
    assert len(keyless) == 3 and keyless != list(range(keyless[0], keyless[0] + 3))  # markers make gaps
    assert sorted(d["position"]["offset"] for d in dead.rows) == sorted(keyless)
    assert all(d["raw"] == orjson.loads(b'{"x": %d}' % (i + 1)) for i, d in
               enumerate(sorted(dead.rows, key=lambda d: d["position"]["offset"])))


@pytest.mark.kafka
def test_file_path_topic_positions_name_the_message_and_the_line(kafka_broker: Any, tmp_path: pathlib.Path) -> None:
    from statefulstream.sources.file_path_topic import FilePathTopicSource

    files = []
    for f in range(2):
        path = tmp_path / f"part-{f}.jsonl"
        path.write_text("".join(json.dumps({"n": i} if (i + f) % 3 == 0 else {"k": f, "n": i}) + "\n"
                                for i in range(6)))
        files.append(path)
    topic = kafka_broker.create_topic()
    kafka_broker.produce(topic, [json.dumps({"path": str(p)}).encode() for p in files], partition=0, batched=False)
    dead = MemorySink()
    app = App("lake-positions", source=FilePathTopicSource(topic, bootstrap_servers=kafka_broker.bootstrap,
                                                             read_timeout="10 seconds"),
              dead_letters=dead, trigger="available_now")
    app.flat_map_groups_with_state(key="k")(no_op)
    app.run()
    got = sorted((d["position"]["offset"], d["position"]["file"], d["position"]["line"]) for d in dead.rows)
    want = sorted((f, str(files[f]), i + 1) for f in range(2) for i in range(6) if (i + f) % 3 == 0)
    assert got == want
    assert {(d["position"]["topic"], d["position"]["partition"], d["error"]) for d in dead.rows} == {
        (topic, 0, "key")}
