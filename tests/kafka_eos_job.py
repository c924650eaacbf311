"""A Kafka -> sessionization -> Kafka job that can SIGKILL itself at a chosen point (test_kafka_exactly_once.py).

Usage: ``python tests/kafka_eos_job.py BOOTSTRAP INPUT_TOPIC OUTPUT_TOPIC CHECKPOINT_DIR``, with
``FAULT_KILL=<phase>:<n>`` (see ``fault_job.py``) to be killed the n-th time
the job reaches ``phase``. Phases, besides ``plan``, ``sink_before``,
``sink_after``, ``commit_before`` and ``commit_after`` from ``fault_job``:

* ``read``: before ``KafkaSource`` reads the planned range;
* ``sink_flushed``: inside ``KafkaSink.write``, after the batch's records
  reached the broker and before the marker and the transaction commit;
* ``sink_marker``: after the marker is queued, before the commit.

Without ``FAULT_KILL`` it runs the input to its end (``available_now``) and
exits 0 (unless killed from outside: the random-moment test). It runs the
sessionization example's handler with a RocksDB checkpoint, ``BATCH_RECORDS``
records per batch (default 400).
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

from confluent_kafka import Producer
from fault_job import around, reached

import statefulstream.kafka_txn
from statefulstream import App, GroupStateTimeout
from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.sinks.kafka import KafkaSink
from statefulstream.sources.kafka import KafkaSource
from statefulstream.state.rocksdb import RocksDBStateStore

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "examples"))
import sessionization  # noqa: E402

MAX_RECORDS_PER_BATCH = int(os.environ.get("BATCH_RECORDS", "400"))


class _KillableProducer(Producer):
    """A producer whose flush and marker steps are kill points (confluent's Producer cannot be patched)."""

    def flush(self, *args: Any, **kwargs: Any) -> int:
        left = super().flush(*args, **kwargs)
        reached("sink_flushed")
        return left

    def commit_transaction(self, *args: Any, **kwargs: Any) -> None:
        reached("sink_marker")
        super().commit_transaction(*args, **kwargs)


def build(bootstrap: str, input_topic: str, output_topic: str, checkpoint_dir: str) -> App:
    """Build the job with kill points around the real source, sink, plan log and state store."""
    around(FilePlanLog, "write", None, "plan")
    around(KafkaSource, "read", "read", None)
    around(KafkaSink, "write", "sink_before", "sink_after")
    around(RocksDBStateStore, "commit", "commit_before", "commit_after")
    statefulstream.kafka_txn.Producer = _KillableProducer  # type: ignore[misc]
    source = KafkaSource(input_topic, bootstrap_servers=bootstrap, watermark_probe=True, read_timeout="20 seconds")
    app = App("eos-job", source=source, checkpoint_dir=checkpoint_dir, trigger="available_now",
              max_records_per_trigger=MAX_RECORDS_PER_BATCH)
    sink = KafkaSink(output_topic, bootstrap_servers=bootstrap, key="user", timeout="20 seconds")
    app.flat_map_groups_with_state(
        key="user", event_time="ts", watermark_delay=sessionization.WATERMARK_DELAY, output_mode="append",
        timeout=GroupStateTimeout.EVENT_TIME, sink=sink)(sessionization.sessionize)
    return app


if __name__ == "__main__":
    build(*sys.argv[1:5]).run()
