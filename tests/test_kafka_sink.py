"""KafkaSink and KafkaDeadLetterSink against a real (tansu) broker."""

from __future__ import annotations

import datetime as dt
import uuid

import msgpack
import orjson
import pytest
from confluent_kafka import Message
from kafka_broker import TansuBroker
from slow_proxy import SlowProxy

from statefulstream.errors import SinkError
from statefulstream.kafka_txn import FencedError
from statefulstream.records import DeadLetter
from statefulstream.sink import SinkContext
from statefulstream.sinks.kafka import (
    HEADER_ATTEMPT,
    HEADER_BATCH,
    HEADER_SINK,
    KafkaDeadLetterSink,
    KafkaSink,
)

pytestmark = pytest.mark.kafka


def headers(message: Message) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or []}


def make_sink(broker, topic: str, txid: str, **kwargs) -> KafkaSink:
    sink = KafkaSink(topic, bootstrap_servers=broker.bootstrap, transactional_id=txid, timeout="10 seconds",
                     **kwargs)
    sink.open(SinkContext(app_name="test"))
    return sink


class TestKafkaSink:
    def test_batches_are_written_with_batch_headers_and_one_marker_each(self, kafka_broker):
        topic = kafka_broker.create_topic()
        sink = make_sink(kafka_broker, topic, "tx-" + topic, key="user")
        sink.write(0, [{"user": "a", "n": 1}, {"user": "b", "n": 2}])
        sink.write(1, [{"user": "a", "n": 3}])
        sink.close()
        out = kafka_broker.read_all(topic)
        assert [orjson.loads(m.value()) for m in out] == [{"user": "a", "n": 1}, {"user": "b", "n": 2},
                                                           {"user": "a", "n": 3}]
        assert [m.key() for m in out] == [b"a", b"b", b"a"]
        assert [headers(m)[HEADER_BATCH] for m in out] == ["0", "0", "1"]
        markers = [orjson.loads(m.value()) for m in kafka_broker.read_all(f"{topic}.batches")]
        assert [(m["batch_id"], m["records"]) for m in markers] == [(0, 2), (1, 1)]

    def test_a_replayed_batch_whose_marker_is_committed_is_skipped_after_reopen(self, kafka_broker):
        topic = kafka_broker.create_topic()
        first = make_sink(kafka_broker, topic, "tx-" + topic)
        first.write(0, [{"n": 0}])
        first.write(1, [{"n": 1}])
        first.close()
        # Crash after the sink committed batch 1 but before the checkpoint did: batch 1 is replayed.
        second = make_sink(kafka_broker, topic, "tx-" + topic)
        assert second.last_committed == 1
        second.write(1, [{"n": 1}])
        second.write(2, [{"n": 2}])
        second.close()
        assert [orjson.loads(m.value())["n"] for m in kafka_broker.read_all(topic)] == [0, 1, 2]

    def test_an_unfinished_transaction_is_aborted_and_its_batch_rewritten_once(self, kafka_broker):
        topic = kafka_broker.create_topic()
        txid = "tx-" + topic
        crashed = make_sink(kafka_broker, topic, txid)
        crashed.write(0, [{"n": 0}])
        # Crash mid-batch 1: records flushed to the broker, no marker, no commit.
        assert crashed._txn is not None
        producer = crashed._txn.producer
        producer.begin_transaction()
        producer.produce(topic, orjson.dumps({"n": 1}), headers=[(HEADER_SINK, txid), (HEADER_BATCH, "1"),
                                                                  (HEADER_ATTEMPT, crashed._txn.attempt)])
        producer.flush(10)
        restarted = make_sink(kafka_broker, topic, txid)  # fences the crashed producer, aborting its transaction
        assert restarted.last_committed == 0
        restarted.write(1, [{"n": 1}])
        restarted.close()
        assert [orjson.loads(m.value())["n"] for m in kafka_broker.committed_view(topic)] == [0, 1]

    def test_a_fenced_older_incarnation_fails_with_a_sink_error(self, kafka_broker):
        topic = kafka_broker.create_topic()
        zombie = make_sink(kafka_broker, topic, "tx-" + topic)
        make_sink(kafka_broker, topic, "tx-" + topic).close()
        try:
            with pytest.raises(FencedError, match="fenced .*another process now writes with this transactional id"):
                zombie.write(0, [{"n": 0}])
        finally:
            zombie.close()
        assert kafka_broker.read_all(topic) == []

    def test_value_formats_and_key_functions(self, kafka_broker):
        topic = kafka_broker.create_topic()
        sink = make_sink(kafka_broker, topic, "tx-" + topic, value_format="msgpack", key=lambda r: r["id"])
        sink.write(0, [{"id": 7, "blob": b"\x00"}])
        sink.close()
        (message,) = kafka_broker.read_all(topic)
        assert (message.key(), msgpack.unpackb(message.value())) == (b"7", {"id": 7, "blob": b"\x00"})

    def test_a_row_that_cannot_be_serialized_is_dead_lettered_and_the_batch_goes_on(self, kafka_broker):
        topic = kafka_broker.create_topic()
        dead: list[DeadLetter] = []
        sink = KafkaSink(topic, bootstrap_servers=kafka_broker.bootstrap, transactional_id="tx-" + topic)
        sink.open(SinkContext(app_name="test", dead_letter=dead.append))
        sink.write(0, [{"n": 1}, {"n": object()}, {"n": 3}])
        sink.close()
        assert [orjson.loads(m.value())["n"] for m in kafka_broker.read_all(topic)] == [1, 3]
        assert [(d.error, d.position["row"]) for d in dead] == [("sink", 1)]
        assert "cannot be serialized" in dead[0].reason

    def test_a_missing_output_topic_is_a_clear_error(self, kafka_broker):
        missing = "missing-" + uuid.uuid4().hex[:6]
        sink = KafkaSink(missing, bootstrap_servers=kafka_broker.bootstrap, transactional_id="tx-" + missing)
        with pytest.raises(SinkError, match=f"topic '{missing}' does not exist.*create it first"):
            sink.open(SinkContext())

    def test_default_transactional_id_is_app_name_and_topic(self, kafka_broker):
        topic = kafka_broker.create_topic()
        sink = KafkaSink(topic, bootstrap_servers=kafka_broker.bootstrap)
        sink.open(SinkContext(app_name="sessions"))
        sink.close()
        assert sink.transactional_id == f"sessions.{topic}"


class TestKafkaSinkAgainstASlowBroker:
    def test_reopen_finds_the_last_marker_when_every_answer_takes_far_longer_than_20_ms(self, tmp_path):
        """The marker read on reopen waits for its whole timeout (issue 12: "20 seconds" was read as 20 ms)."""
        broker = TansuBroker(log_path=tmp_path / "tansu.log")
        proxy = SlowProxy(broker.port)
        broker.advertised_port = proxy.port
        with proxy, broker:
            topic = broker.create_topic()
            via_proxy = f"127.0.0.1:{proxy.port}"
            first = KafkaSink(topic, bootstrap_servers=via_proxy, transactional_id="tx-" + topic, timeout="20 seconds")
            first.open(SinkContext(app_name="test"))
            for batch_id in range(3):
                first.write(batch_id, [{"n": batch_id}])
            first.close()
            proxy.delay = dt.timedelta(milliseconds=300)
            reopened = KafkaSink(topic, bootstrap_servers=via_proxy, transactional_id="tx-" + topic,
                                 timeout="20 seconds")
            reopened.open(SinkContext(app_name="test"))
            assert reopened.last_committed == 2
            reopened.write(2, [{"n": 2}])  # a replay: skipped
            reopened.close()
            assert proxy.connections > 0
            proxy.delay = dt.timedelta(0)
            assert [orjson.loads(m.value())["n"] for m in broker.read_all(topic)] == [0, 1, 2]


class TestKafkaDeadLetterSink:
    def test_dead_letters_carry_error_reason_and_source_position_headers(self, kafka_broker):
        topic = kafka_broker.create_topic()
        sink = KafkaDeadLetterSink(topic, bootstrap_servers=kafka_broker.bootstrap, transactional_id="dlq-" + topic)
        sink.open(SinkContext(app_name="test"))
        letter = DeadLetter(reason="value is not valid json", source="kafka", raw=b"nope",
                            position={"topic": "events", "partition": 2, "offset": 41}, error="decode")
        sink.write(5, [letter.to_row(5)])
        sink.close()
        (message,) = kafka_broker.read_all(topic)
        assert {k: v for k, v in headers(message).items() if k.startswith("dlq.")} == {
            "dlq.error": "decode", "dlq.reason": "value is not valid json", "dlq.source": "kafka",
            "dlq.topic": "events", "dlq.partition": "2", "dlq.offset": "41"}
        assert message.key() == b"events:2"
        assert orjson.loads(message.value())["raw"] == "nope"
