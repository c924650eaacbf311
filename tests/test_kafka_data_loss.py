"""Lost Kafka data is never silent (issue 12): Spark's ``failOnDataLoss``, against a real (tansu) broker.

The broker loses the topic the way an operator's broker would: tansu runs on
memory storage, so a restart on the same port forgets every topic; the topic
is then recreated with fewer records than the checkpoint had read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka_broker import TansuBroker

from statefulstream import App
from statefulstream.errors import DataLossError
from statefulstream.memory_sink import MemorySink
from statefulstream.sources.kafka import KafkaSource

pytestmark = pytest.mark.kafka

FIRST, SECOND = 3000, 120


def values(n: int, tag: str) -> list[bytes]:
    return [orjson.dumps({"user": f"u{i % 7}", "n": i, "tag": tag}) for i in range(n)]


def counting_app(broker: TansuBroker, topic: str, checkpoint: Path, sink: MemorySink, **source: Any) -> App:
    app = App("loss", trigger="available_now", checkpoint_dir=str(checkpoint), max_records_per_trigger=1000,
              source=KafkaSource(topic, bootstrap_servers=broker.bootstrap, watermark_probe=True,
                                 read_timeout="10 seconds", **source))

    @app.flat_map_groups_with_state(key="user", output_mode="update", sink=sink)
    def count(user: str, events: list[dict], state: Any) -> Any:
        state.update((state.get_option() or 0) + len(events))
        yield from ({"n": e["n"], "tag": e["tag"]} for e in events)

    return app


@pytest.fixture
def lost_topic(tmp_path: Path) -> Any:
    """A job that finished at offset 3000, then a broker that lost the topic and has it again with 120 records."""
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    broker.start()
    try:
        topic = broker.create_topic()
        broker.produce(topic, values(FIRST, "old"), partition=0)
        first = MemorySink()
        counting_app(broker, topic, tmp_path / "ckpt", first).run()
        assert sorted(r["n"] for r in first.rows) == list(range(FIRST))
        broker.stop()
        broker.start()  # memory storage: every topic is gone
        broker.create_topic(topic)
        broker.produce(topic, values(SECOND, "new"), partition=0)
        yield broker, topic, tmp_path / "ckpt"
    finally:
        broker.stop()


def test_by_default_the_app_stops_with_an_error_naming_what_was_lost(lost_topic):
    broker, topic, checkpoint = lost_topic
    sink = MemorySink()
    for _ in range(2):  # and again on the next run: nothing was skipped in between
        with pytest.raises(DataLossError) as raised:
            counting_app(broker, topic, checkpoint, sink).run()
        text = str(raised.value)
        assert f"topic '{topic}' partition 0" in text
        assert f"next offset to read is {FIRST}" in text
        assert f"has offsets [0, {SECOND})" in text
        assert "fail_on_data_loss=False" in text and "new checkpoint_dir" in text
    assert sink.rows == []


def test_fail_on_data_loss_false_goes_on_from_the_earliest_offset_with_a_warning_and_a_metric(lost_topic, caplog):
    broker, topic, checkpoint = lost_topic
    sink = MemorySink()
    app = counting_app(broker, topic, checkpoint, sink, fail_on_data_loss=False)
    with caplog.at_level(logging.WARNING):
        app.run()
    assert sorted(r["n"] for r in sink.rows) == list(range(SECOND))
    assert {r["tag"] for r in sink.rows} == {"new"}
    warnings = [r.getMessage() for r in caplog.records if "data loss" in r.getMessage()]
    assert len(warnings) == 1 and f"next offset to read is {FIRST}" in warnings[0]
    assert "goes on from offset 0" in warnings[0]
    assert warnings[0].startswith("kafka source: Kafka data loss")
    assert app.metrics.value("statefulstream_source_data_loss_total") == 1
    # The next run resumes where this one ended: no further loss.
    again = MemorySink()
    counting_app(broker, topic, checkpoint, again, fail_on_data_loss=False).run()
    assert again.rows == []


def test_a_resume_offset_past_the_partition_end_is_data_loss_and_lenient_mode_restarts_at_earliest(kafka_broker):
    topic = kafka_broker.create_topic()
    kafka_broker.produce(topic, values(10, "x"), partition=0, batched=False)
    src = KafkaSource(topic, bootstrap_servers=kafka_broker.bootstrap, read_timeout="10 seconds")
    _, latest = src.available({})
    # A checkpoint that resumes past the partition's end is as lost as one before its start.
    with pytest.raises(DataLossError, match=r"next offset to read is 15, but .* has offsets \[0, 10\)"):
        src.available({f"{topic}:0": 15})
    src.close()
    lenient = KafkaSource(topic, bootstrap_servers=kafka_broker.bootstrap, fail_on_data_loss=False)
    start, end = lenient.available({f"{topic}:0": 15})
    assert start == {f"{topic}:0": 0} and end == latest
    lenient.available({f"{topic}:0": 15})  # asked again from the same position: the same loss, counted once
    assert lenient.data_loss_events == 1
    assert len(lenient.read(start, end).records) == 10
    lenient.close()


def test_a_planned_range_that_lost_its_records_fails_or_reads_what_is_left(tmp_path):
    """A replay of a plan made before the loss: the read checks the broker's offsets before giving up."""
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    with broker:
        topic = broker.create_topic()
        broker.produce(topic, values(10, "old"), partition=0, batched=False)
        planner = KafkaSource(topic, bootstrap_servers=broker.bootstrap, read_timeout="2 seconds")
        start, end = planner.available({})
        planner.close()
        assert end == {f"{topic}:0": 10}
        # The replay comes from a restarted process: its clients first meet the broker after the loss.
        # (A consumer kept connected while tansu restarts and the topic is recreated has crashed librdkafka.)
        broker.stop()
        broker.start()
        broker.create_topic(topic)
        broker.produce(topic, values(4, "new"), partition=0, batched=False)
        strict = KafkaSource(topic, bootstrap_servers=broker.bootstrap, read_timeout="2 seconds")
        lenient = KafkaSource(topic, bootstrap_servers=broker.bootstrap, read_timeout="2 seconds",
                              fail_on_data_loss=False)
        with pytest.raises(DataLossError, match=r"read is 4, but .* has offsets \[0, 4\).*planned range"):
            strict.read(start, end)
        assert [r["tag"] for r in lenient.read(start, end).records] == ["new"] * 4
        assert lenient.data_loss_events == 1
        strict.close()
        lenient.close()
