"""Streaming over the data lake: ParquetFileSink publishing paths, FilePathTopicSource reading them."""

from __future__ import annotations

import json
import os

import orjson
import pyarrow.parquet as pq
import pytest
from test_sessionization_example import EXPECTED, as_tuples, sessionization

from statefulstream import App, GroupStateTimeout
from statefulstream.errors import SinkError
from statefulstream.sink import SinkContext
from statefulstream.sinks import MemorySink
from statefulstream.sinks.kafka import KafkaSink
from statefulstream.sinks.parquet import ParquetFileSink
from statefulstream.sources.file_path_topic import FilePathTopicSource

pytestmark = pytest.mark.kafka


def valid_events() -> list[dict]:
    """The sample events the offline computation counts (JSON objects with a user and an int ts)."""
    out = []
    for line in sessionization.DATA.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("ts"), int) and "user" in event:
            out.append(event)
    return out


def read_parquet(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


class TestParquetFileSink:
    def test_each_batch_is_one_file_named_by_batch_id_and_a_replay_rewrites_it(self, tmp_path):
        sink = ParquetFileSink(tmp_path)
        sink.open(SinkContext())
        sink.write(0, [{"n": 1}, {"n": 2}])
        sink.write(1, [{"n": 3}])
        sink.write(0, [{"n": 1}, {"n": 2}])  # replay
        sink.write(2, [])
        sink.close()
        assert sorted(os.listdir(tmp_path)) == ["part-00000000.parquet", "part-00000001.parquet"]
        assert read_parquet(tmp_path / "part-00000000.parquet") == [{"n": 1}, {"n": 2}]

    def test_partition_by_writes_one_file_per_partition_value(self, tmp_path):
        sink = ParquetFileSink(tmp_path, partition_by=["country"])
        sink.open(SinkContext())
        sink.write(4, [{"country": "FR", "n": 1}, {"country": "DE", "n": 2}, {"country": "FR", "n": 3}])
        assert read_parquet(tmp_path / "country=FR" / "part-00000004.parquet") == [
            {"country": "FR", "n": 1}, {"country": "FR", "n": 3}]
        with pytest.raises(SinkError, match="has no partition field 'country'"):
            sink.write(5, [{"n": 1}])

    def test_rows_with_conflicting_types_are_a_clear_sink_error(self, tmp_path):
        sink = ParquetFileSink(tmp_path)
        with pytest.raises(SinkError, match="batch 0 rows do not form one table"):
            sink.write(0, [{"n": 1}, {"n": "one"}])
        assert not [p for p in os.listdir(tmp_path) if not p.startswith(".")]


class TestFilePathTopicSource:
    def test_missing_corrupt_and_unusable_paths_are_dead_lettered_and_good_files_read(self, kafka_broker, tmp_path):
        good = tmp_path / "good.jsonl"
        good.write_text('{"n": 1}\nnot json\n{"n": 3}\n')
        corrupt = tmp_path / "corrupt.parquet"
        corrupt.write_bytes(b"PAR1 this is not parquet")
        topic = kafka_broker.create_topic()
        messages = [str(good).encode(), orjson.dumps({"path": str(tmp_path / "gone.parquet")}),
                    str(corrupt).encode(), b"", orjson.dumps({"path": str(good)})]
        kafka_broker.produce(topic, messages, batched=False)
        source = FilePathTopicSource(topic, bootstrap_servers=kafka_broker.bootstrap)
        result = source.read(*source.available({}))
        source.close()
        assert result.records == [{"n": 1}, {"n": 3}, {"n": 1}, {"n": 3}]
        got = [(d.error, d.position["offset"], d.position.get("file"), d.position.get("line"))
               for d in result.dead_letters]
        assert got == [("decode", 0, str(good), 2), ("file", 1, str(tmp_path / "gone.parquet"), None),
                       ("file", 2, str(corrupt), None), ("file", 3, None, None), ("decode", 4, str(good), 2)]
        reasons = [d.reason for d in result.dead_letters]
        assert "does not exist" in reasons[1] and "not a readable Parquet file" in reasons[2]
        assert "empty" in reasons[3]


class TestDataLakePipeline:
    def test_loader_parquet_files_and_paths_feed_sessions_matching_the_offline_computation(self, kafka_broker,
                                                                                           tmp_path):
        paths_topic = kafka_broker.create_topic()
        loader = ParquetFileSink(tmp_path / "lake", publish_to=KafkaSink(
            paths_topic, bootstrap_servers=kafka_broker.bootstrap, transactional_id="loader-" + paths_topic))
        loader.open(SinkContext(app_name="loader"))
        events = valid_events()
        for batch_id, lo in enumerate(range(0, len(events), 500)):
            loader.write(batch_id, events[lo:lo + 500])
        loader.write(0, events[:500])  # a replayed loader batch publishes nothing new
        loader.close()

        out = MemorySink()
        app = App("lake-sessions", trigger="available_now", max_records_per_trigger=3,
                  source=FilePathTopicSource(paths_topic, bootstrap_servers=kafka_broker.bootstrap,
                                             watermark_probe=True))
        app.flat_map_groups_with_state(
            key="user", event_time="ts", watermark_delay=sessionization.WATERMARK_DELAY, output_mode="append",
            timeout=GroupStateTimeout.EVENT_TIME, sink=out)(sessionization.sessionize)
        progress = []
        app.add_listener(progress.append)
        app.run()
        assert as_tuples(out.rows) == EXPECTED
        assert sum(p.records_read for p in progress) == len(events)
        # max_records_per_trigger bounds path-topic offsets (files, plus transaction markers), not rows.
        batches = [p.records_read for p in progress if p.records_read]
        assert len(batches) > 3 and max(batches) <= 3 * 500
