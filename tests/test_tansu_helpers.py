"""The test suite's own Kafka helpers (``kafka_broker.TansuBroker``) must not depend on how fast the broker answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from kafka_broker import TansuBroker
from slow_proxy import SlowProxy

pytestmark = pytest.mark.kafka


def test_read_all_reads_every_partition_to_its_end_when_answers_take_longer_than_the_idle_time(
        tmp_path: Path) -> None:
    broker = TansuBroker(log_path=tmp_path / "tansu.log")
    proxy = SlowProxy(broker.port)
    broker.advertised_port = proxy.port  # fetches go through the proxy
    with proxy, broker:
        topic = broker.create_topic(partitions=3)
        want = [f"{p}-{i}".encode() for p in range(3) for i in range(5)]
        for p in range(3):
            broker.produce(topic, want[p * 5:(p + 1) * 5], partition=p)
        # Every answer is held longer than the reader's idle time: a reader that stops after idle_s without a
        # record (as it did) returns before the first fetch answers.
        proxy.delay = dt.timedelta(milliseconds=400)
        got = broker.read_all(topic, idle_s=0.3)
        assert proxy.connections > 0
        assert sorted(m.value() for m in got) == sorted(want)
