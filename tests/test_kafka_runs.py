"""Runs of fetched Kafka messages (offsets with gaps, cut and joined by offset) and the two range readers."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import uuid

import pytest
from confluent_kafka import Producer
from running_app import wait_for

from statefulstream.kafka_client import ColumnReader, RangeReader, partition_name
from statefulstream.kafka_runs import Fetched, PartitionBuffer, Run


def offsets_with_gaps(rng: random.Random, n: int) -> list[int]:
    """Increasing offsets from 0 with a gap (a marker, compaction) now and then."""
    out, at = [], 0
    for _ in range(n):
        at += 1 + (rng.randrange(3) if rng.random() < 0.2 else 0)
        out.append(at)
    return out


def runs_of(offsets: list[int], rng: random.Random) -> list[Run]:
    """Cut ``offsets`` into runs as fetches would, each holding the offset's square as a column."""
    runs, i = [], 0
    while i < len(offsets):
        j = min(len(offsets), i + rng.randint(1, 12))
        part = offsets[i:j]
        kept = range(part[0], part[-1] + 1) if part[-1] - part[0] + 1 == len(part) else part
        runs.append(Run(kept, ([o * o for o in part],)))
        i = j
    return runs


class TestRun:
    def test_split_cuts_at_an_offset_inside_a_gap_or_a_run(self):
        run = Run([3, 4, 7, 8], (["a", "b", "c", "d"],))
        for at, before in ((3, 0), (4, 1), (5, 2), (7, 2), (8, 3), (9, 4)):
            head, tail = run.split(at)
            assert (list(head.offsets), list(tail.offsets)) == ([3, 4, 7, 8][:before], [3, 4, 7, 8][before:])
            assert head.columns[0] + tail.columns[0] == ["a", "b", "c", "d"]

    def test_join_keeps_a_range_only_when_the_runs_are_gap_free_and_adjacent(self):
        joined = Run.join([Run(range(0, 3), ([0, 1, 2],)), Run(range(3, 5), ([3, 4],))])
        assert joined.offsets == range(0, 5) and joined.columns == ([0, 1, 2, 3, 4],)
        gap = Run.join([Run(range(0, 3), ([0, 1, 2],)), Run(range(4, 5), ([4],))])
        assert gap.offsets == [0, 1, 2, 4] and gap.columns == ([0, 1, 2, 4],)


class TestPartitionBuffer:
    @pytest.mark.parametrize("seed", range(20))
    def test_reads_of_consecutive_ranges_return_exactly_their_messages(self, seed):
        rng = random.Random(seed)
        offsets = offsets_with_gaps(rng, 200)
        buf = PartitionBuffer(offsets[0], offsets[0])
        for run in runs_of(offsets, rng):
            buf.add(run)
        assert buf.complete == offsets[-1] + 1 and buf.held == len(offsets)
        at = offsets[0]
        if rng.random() < 0.5:  # a replay starts later than what is held
            at += rng.randrange(10)
            buf.drop_before(at)
        while at <= offsets[-1]:
            end = at + rng.randint(1, 30)
            taken = buf.take(end)
            expected = [o for o in offsets if at <= o < end]
            joined = Run.join(taken) if taken else Run([], ([],))
            assert list(joined.offsets) == expected
            assert joined.columns[0] == [o * o for o in expected]
            assert buf.held == sum(1 for o in offsets if o >= end)
            at = end


@pytest.mark.kafka
def test_column_and_message_readers_return_the_same_records_across_transaction_gaps(kafka_broker):
    """Three committed transactions (a marker after each) read in ranges with read-ahead, by both readers."""
    topic = kafka_broker.create_topic()
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "transactional.id": uuid.uuid4().hex})
    producer.init_transactions(10)
    sent = []
    for t in range(3):
        producer.begin_transaction()
        for i in range(5):
            key, value = (f"k{i}".encode() if i % 2 else None), f"v{t}-{i}".encode()
            producer.produce(topic, value, key=key, partition=0)
            sent.append((key, value))
        producer.commit_transaction(10)
    name = partition_name(topic, 0)
    offsets = [m.offset() for m in kafka_broker.read_all(topic)]  # what a plain consumer sees
    assert len(offsets) == len(sent) and offsets[-1] - offsets[0] >= len(sent)  # markers left gaps
    conf = {"bootstrap.servers": kafka_broker.bootstrap, "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed", "auto.offset.reset": "error"}
    columns = ColumnReader(conf, timeout=dt.timedelta(seconds=10), read_ahead=100, keys=True, timestamps=True)
    messages = RangeReader(conf, timeout=dt.timedelta(seconds=10), read_ahead=100)
    cuts = [0, offsets[3], offsets[4] + 1, offsets[10], offsets[-1] + 1]  # inside a transaction, at a marker
    got_columns, got_messages = [], []
    try:
        for lo, hi in itertools.pairwise(cuts):
            fetched = columns.read({name: (lo, hi)})[name]
            assert (fetched.topic, fetched.partition) == (topic, 0)
            assert fetched.keys is not None and fetched.timestamps is not None
            got_columns += zip(fetched.offsets, fetched.keys, fetched.values, fetched.timestamps, strict=True)
            got_messages += [(m.offset(), m.key(), m.value(), m.timestamp()[1])
                             for m in messages.read({name: (lo, hi)})[name]]
    finally:
        columns.close()
        messages.close()
    assert [(o, k, v) for o, k, v, _ in got_columns] == [(o, k, v) for o, (k, v) in zip(offsets, sent, strict=True)]
    assert got_columns == got_messages


@pytest.mark.kafka
def test_a_full_read_ahead_stops_consuming_without_pausing_and_the_next_range_is_exact(kafka_broker):
    """A pause would drop librdkafka's prefetch queue and stall the next fetch: the reader just stops consuming."""
    topic = kafka_broker.create_topic(partitions=2)
    for p in range(2):
        kafka_broker.produce(topic, [f"{p}-{i}".encode() for i in range(300)], partition=p, batched=True)
    names = [partition_name(topic, p) for p in range(2)]
    conf = {"bootstrap.servers": kafka_broker.bootstrap, "group.id": uuid.uuid4().hex,
            "isolation.level": "read_committed", "auto.offset.reset": "error"}
    reader = ColumnReader(conf, timeout=dt.timedelta(seconds=10), poll_records=50, read_ahead=100)
    try:
        first = reader.read({n: (0, 10) for n in names})
        assert {n: f.values for n, f in first.items()} == {
            n: [f"{p}-{i}".encode() for i in range(10)] for p, n in enumerate(names)}
        held = wait_for(lambda: (h := sum(b.held for b in reader._buffers.values())) >= 100 and h,  # noqa: SLF001
                        "the read-ahead to fill")
        assert held < 100 + 50  # one consume() past the read-ahead at most
        assert not reader._paused  # noqa: SLF001
        second = reader.read({names[0]: (10, 250), names[1]: (10, 12)})
        assert second[names[0]].values == [f"0-{i}".encode() for i in range(10, 250)]
        assert second[names[0]].offsets == range(10, 250)
        assert second[names[1]].values == [b"1-10", b"1-11"]
    finally:
        reader.close()


def test_select_keeps_every_column_of_the_chosen_messages() -> None:
    fetched = Fetched("t", 3, range(10, 14), [b"a", b"b", b"c", b"d"], keys=[b"k0", None, b"k2", b"k3"],
                      headers=[[("h", b"0")], None, [("h", b"2")], []])
    picked = fetched.select([0, 2])
    assert (picked.topic, picked.partition, list(picked.offsets)) == ("t", 3, [10, 12])
    assert picked.values == [b"a", b"c"] and picked.keys == [b"k0", b"k2"]
    assert picked.headers == [[("h", b"0")], [("h", b"2")]] and picked.timestamps is None
