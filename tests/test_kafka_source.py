"""KafkaSource against a real (tansu) broker."""

from __future__ import annotations

import multiprocessing
import pathlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import msgpack
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_broker import TansuBroker
from running_app import wait_for

from statefulstream.errors import ConfigError, SourceError
from statefulstream.schema import Schema
from statefulstream.sources.kafka import KafkaSource

pytestmark = pytest.mark.kafka


def events(n: int, users: int = 4) -> list[dict]:
    return [{"user": f"u{i % users}", "ts": 1_000 * i, "n": i} for i in range(n)]


def produce_json(broker: TansuBroker, topic: str, rows: list[dict], *, partitions: int = 1,
                 batched: bool = False) -> None:
    for p in range(partitions):
        part = [orjson.dumps(r) for i, r in enumerate(rows) if i % partitions == p]
        broker.produce(topic, part, partition=p, batched=batched)


_OPENED: list[KafkaSource] = []


@pytest.fixture(autouse=True)
def _close_sources() -> Iterator[None]:
    """Close every source a test built: an open source keeps its reader thread and consumer running."""
    yield
    while _OPENED:
        _OPENED.pop().close()


def source(broker: TansuBroker, topic: str | None, **kwargs) -> KafkaSource:
    kwargs.setdefault("read_timeout", "10 seconds")
    src = KafkaSource(topic, bootstrap_servers=broker.bootstrap, **kwargs)
    _OPENED.append(src)
    return src


class TestKafkaSource:
    def test_planned_ranges_read_each_record_once_in_partition_order(self, kafka_broker):
        topic = kafka_broker.create_topic(partitions=3)
        rows = events(60)
        produce_json(kafka_broker, topic, rows, partitions=3)
        src = source(kafka_broker, topic)
        start, latest = src.available({})
        assert start == {f"{topic}:{p}": 0 for p in range(3)}
        assert latest == {f"{topic}:{p}": 20 for p in range(3)}
        mid = {p: 7 for p in latest}
        first, second = src.read(start, mid).records, src.read(mid, latest).records
        src.close()
        got = first + second
        assert sorted(r["n"] for r in got) == list(range(60))
        # Within a batch: partition by partition in name order, each in offset order.
        assert [r["n"] for r in first] == [p + 3 * i for p in range(3) for i in range(7)]

    def test_a_replayed_range_returns_the_same_records(self, kafka_broker):
        topic = kafka_broker.create_topic(partitions=2)
        produce_json(kafka_broker, topic, events(40), partitions=2)
        src = source(kafka_broker, topic)
        start, latest = src.available({})
        once = src.read(start, latest).records
        src.close()
        again = source(kafka_broker, topic).read(start, latest).records
        assert once == again and len(once) == 40

    def test_missing_topic_is_a_clear_source_error(self, kafka_broker):
        src = source(kafka_broker, "no-such-topic-" + uuid.uuid4().hex[:6])
        with pytest.raises(SourceError, match=r"topic\(s\) \['no-such-topic-.*do not exist.*create them"):
            src.available({})
        src.close()

    def test_undecodable_records_become_dead_letters_and_the_rest_go_on(self, kafka_broker):
        topic = kafka_broker.create_topic()
        kafka_broker.produce(topic, [b'{"n": 0}', b"not json", b'{"n": 2}', None, b'{"n": 4}'], batched=False)
        src = source(kafka_broker, topic)
        result = src.read(*src.available({}))
        src.close()
        assert [r["n"] for r in result.records] == [0, 2, 4]
        assert [(d.error, d.source, d.position["offset"], d.raw) for d in result.dead_letters] == [
            ("decode", "kafka", 1, b"not json"), ("decode", "kafka", 3, None)]
        assert result.dead_letters[0].position == {"topic": topic, "partition": 0, "offset": 1}
        assert "not valid json" in result.dead_letters[0].reason

    def test_schema_violations_are_dead_lettered_with_the_reason(self, kafka_broker):
        topic = kafka_broker.create_topic()
        rows = [{"user": "a", "ts": 1}, {"user": "b"}, {"user": "c", "ts": "x"}]
        produce_json(kafka_broker, topic, rows)
        src = source(kafka_broker, topic, schema=Schema({"user": str, "ts": int}))
        result = src.read(*src.available({}))
        src.close()
        assert result.records == [{"user": "a", "ts": 1}]
        assert [(d.error, d.position["offset"]) for d in result.dead_letters] == [("schema", 1), ("schema", 2)]
        assert "missing required field 'ts'" in result.dead_letters[0].reason

    def test_key_field_takes_the_message_key(self, kafka_broker):
        topic = kafka_broker.create_topic()
        kafka_broker.produce(topic, [b'{"n": 1}', b'{"n": 2}'], keys=[b"alice", None], partition=0, batched=False)
        src = source(kafka_broker, topic, key_field="user")
        records = src.read(*src.available({})).records
        src.close()
        assert records == [{"n": 1, "user": "alice"}, {"n": 2, "user": None}]

    @pytest.mark.parametrize(("value_format", "encode"), [
        ("msgpack", msgpack.packb),
        (lambda b: {"text": b.decode()}, lambda r: orjson.dumps(r).decode().encode()),
    ])
    def test_value_formats_decode_values(self, kafka_broker, value_format, encode):
        topic = kafka_broker.create_topic()
        rows = events(5)
        kafka_broker.produce(topic, [encode(r) for r in rows], batched=False)
        src = source(kafka_broker, topic, value_format=value_format)
        records = src.read(*src.available({})).records
        src.close()
        expected = rows if value_format == "msgpack" else [{"text": orjson.dumps(r).decode()} for r in rows]
        assert records == expected

    def test_raw_format_yields_spark_style_rows(self, kafka_broker):
        topic = kafka_broker.create_topic()
        kafka_broker.produce(topic, [b"\x00\x01"], keys=[b"k"], batched=False)
        src = source(kafka_broker, topic, value_format="raw")
        (row,) = src.read(*src.available({})).records
        src.close()
        assert {k: row[k] for k in ("key", "value", "topic", "partition", "offset")} == {
            "key": b"k", "value": b"\x00\x01", "topic": topic, "partition": 0, "offset": 0}
        assert row["timestamp"] > 0

    def test_starting_offsets_latest_and_explicit_apply_to_the_first_plan_only(self, kafka_broker):
        topic = kafka_broker.create_topic(partitions=2)
        produce_json(kafka_broker, topic, events(10), partitions=2)
        start, latest = source(kafka_broker, topic, starting_offsets="latest").available({})
        assert start == latest == {f"{topic}:0": 5, f"{topic}:1": 5}
        start, _ = source(kafka_broker, topic, starting_offsets={f"{topic}:0": 3}).available({})
        assert start == {f"{topic}:0": 3, f"{topic}:1": 0}
        # A partition new to a running app (non-empty start) starts at earliest whatever the option.
        start, _ = source(kafka_broker, topic, starting_offsets="latest").available({f"{topic}:0": 5})
        assert start == {f"{topic}:0": 5, f"{topic}:1": 0}

    def test_pattern_picks_up_topics_created_later(self, kafka_broker):
        prefix = f"pat-{uuid.uuid4().hex[:6]}"
        first = kafka_broker.create_topic(f"{prefix}-a")
        produce_json(kafka_broker, first, events(3))
        src = source(kafka_broker, None, pattern=f"^{prefix}-", read_timeout="60 seconds")
        start, latest = src.available({})
        assert latest == {f"{first}:0": 3}
        second = kafka_broker.create_topic(f"{prefix}-b")
        produce_json(kafka_broker, second, events(2))
        start2, latest2 = src.available(latest)
        src.close()
        assert start2 == {f"{first}:0": 3, f"{second}:0": 0} and latest2 == {f"{first}:0": 3, f"{second}:0": 2}

    def test_watermark_probe_finds_the_end_of_a_multi_record_last_batch(self, kafka_broker):
        topic = kafka_broker.create_topic()
        produce_json(kafka_broker, topic, events(50), batched=True)
        src = source(kafka_broker, topic, watermark_probe=True)
        start, latest = src.available({})
        assert latest == {f"{topic}:0": 50}
        assert len(src.read(start, latest).records) == 50
        src.close()

    def test_watermark_probe_ends_past_the_commit_marker_while_another_transaction_is_open(self, kafka_broker):
        # tansu answers a read_committed end of 0 while a transaction is open; the probe must still find the
        # committed end, marker included, or a position past that marker looks like data loss.
        topic = kafka_broker.create_topic()
        part = f"{topic}:0"
        writers = [Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": uuid.uuid4().hex})
                   for _ in range(2)]
        for w in writers:
            w.init_transactions(10)

        def commit(writer: Producer, n: int) -> None:
            writer.begin_transaction()
            for i in range(n):
                writer.produce(topic, orjson.dumps({"n": i}), partition=0)
            writer.commit_transaction(10)

        commit(writers[0], 2)  # offsets 0, 1 and the marker at 2
        src = source(kafka_broker, topic, watermark_probe=True)
        _, latest = src.available({})
        assert latest == {part: 3}
        writers[1].begin_transaction()
        writers[1].produce(topic, b"{}", partition=0)
        writers[1].flush(10)
        assert src.available(latest) == (latest, latest)  # the open transaction is held back
        commit(writers[0], 3)  # committed behind the open transaction: not readable yet
        assert src.available(latest) == (latest, latest)
        writers[1].commit_transaction(10)  # 3 and its marker at 8; 4-6 and their marker at 7
        writers[0].begin_transaction()  # tansu answers 0 again: the last probe's answer is stale
        writers[0].produce(topic, b"{}", partition=0)
        writers[0].flush(10)
        start, end = src.available(latest)
        assert end == {part: 9}
        assert len(src.read(start, end).records) == 4
        writers[0].abort_transaction(10)

    def test_transaction_markers_leave_gaps_the_read_steps_over(self, kafka_broker):
        topic = kafka_broker.create_topic()
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": uuid.uuid4().hex})
        producer.init_transactions(10)
        for t in range(3):
            producer.begin_transaction()
            for i in range(4):
                producer.produce(topic, orjson.dumps({"n": 4 * t + i}), partition=0)
            producer.commit_transaction(10)
        src = source(kafka_broker, topic, read_timeout="5 seconds")
        start, latest = src.available({})
        assert latest[f"{topic}:0"] > 12  # offsets also count the commit markers
        assert [r["n"] for r in src.read(start, latest).records] == list(range(12))
        src.close()

    def test_committed_offsets_reach_the_consumer_group(self, kafka_broker):
        topic = kafka_broker.create_topic()
        produce_json(kafka_broker, topic, events(5))
        group = f"lag-{uuid.uuid4().hex[:6]}"
        src = source(kafka_broker, topic, group_id=group)
        start, latest = src.available({})
        src.read(start, latest)
        src.committed(latest)
        src.close()
        probe = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": group})
        (tp,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
        probe.close()
        assert tp.offset == 5

    def test_a_broker_restart_is_survived_by_a_read_in_progress(self, tmp_path):
        """Run in a child process: librdkafka has crashed (SIGSEGV) in a consumer kept connected while tansu
        restarted empty and the topic was recreated (docs/kafka.md). Such a crash is retried once, in a
        fresh process and broker; a wrong read, an error, or a second crash fails the test."""
        crashes = []
        for attempt in range(2):
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                try:
                    records, rows = pool.submit(restart_during_read, str(tmp_path / f"try{attempt}")).result(180)
                except BrokenProcessPool as exc:  # the child died (a signal): see the docstring
                    crashes.append(repr(exc))
                    continue
            assert records == rows
            return
        pytest.fail(f"the read crashed twice: {crashes}")

    def test_an_unreadable_range_fails_after_the_read_timeout(self, tmp_path):
        broker = TansuBroker(log_path=tmp_path / "tansu.log")
        with broker:
            topic = broker.create_topic()
            produce_json(broker, topic, events(3))
            src = source(broker, topic, read_timeout="2 seconds")
            start, _ = src.available({})
        with pytest.raises(SourceError, match=rf"{topic}:0 at 0 of \[0, 10\).*replayed on restart"):
            src.read(start, {f"{topic}:0": 10})
        src.close()

    def test_secrets_are_masked_and_auto_commit_is_refused(self):
        src = KafkaSource("t", bootstrap_servers="127.0.0.1:1", config={"sasl.password": "hunter2"})
        assert "hunter2" not in repr(src)
        with pytest.raises(ConfigError, match="enable.auto.commit=true is not allowed"):
            KafkaSource("t", bootstrap_servers="127.0.0.1:1", config={"enable.auto.commit": True})
        with pytest.raises(ConfigError, match="exactly one of topics="):
            KafkaSource(bootstrap_servers="127.0.0.1:1")


def restart_during_read(workdir: str) -> tuple[list[Any], list[dict]]:
    """Read a range while the broker restarts (memory storage: it comes back empty and gets the same data
    again); return what was read and what was produced. Runs in a child process."""
    broker = TansuBroker(log_path=pathlib.Path(workdir + ".tansu.log"))
    broker.start()
    try:
        topic = broker.create_topic()
        rows = events(8)
        produce_json(broker, topic, rows)
        src = source(broker, topic, read_timeout="30 seconds")
        start, latest = src.available({})
        read: list[Any] = []
        reading = threading.Thread(target=lambda: read.append(src.read(start, latest).records))
        broker.stop()
        reading.start()
        # Bring the broker back only once the read is waiting for its range.
        wait_for(lambda: src._reader is not None and src._reader._want, "the read to start")  # noqa: SLF001
        broker.start()
        broker.create_topic(topic)
        produce_json(broker, topic, rows)
        reading.join(60)
        src.close()
        return read[0], rows
    finally:
        broker.stop()
