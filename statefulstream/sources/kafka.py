"""``KafkaSource``: Kafka topics read in planned offset ranges (confluent-kafka).

Partitions are named ``"topic:partition"`` and positions are Kafka offsets.
The checkpoint is the source of truth for positions: the consumer never
auto-commits, reads with ``assign`` + ``seek`` (never ``subscribe``), and
commits to its consumer group after a batch is committed only so that lag
tools see progress.

Kafka offsets may have gaps (transaction markers, aborted records, compacted
records), so ``end - start`` is an upper bound on the records in a range and
a read goes on until the consumer's position reaches ``end``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson
from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError, SourceError
from statefulstream.records import DeadLetter, Offsets
from statefulstream.retry import RetryPolicy
from statefulstream.schema import Schema
from statefulstream.sources.base import ReadResult, Source

logger = logging.getLogger(__name__)

Decoder = Callable[[Any], Any]
"""Turns a message value (bytes, or None for a tombstone) into a record; raising dead-letters it."""

FORMATS = ("json", "msgpack", "raw")
"""Built-in value formats. ``raw`` yields Spark-style rows (key, value, topic, partition, offset, timestamp)."""

_SECRET_HINTS = ("password", "secret", "token", "key")
# Consumer settings the admin client would warn about; everything else (security) is shared.
_CONSUMER_ONLY = ("group.", "enable.auto", "enable.partition.eof", "auto.", "isolation.", "fetch.", "max.poll",
                  "session.", "heartbeat.", "partition.assignment", "queued.", "check.crcs")


def partition_name(topic: str, partition: int) -> str:
    """Return the position key of a Kafka partition: ``"topic:partition"``.

    >>> partition_name("events", 3)
    'events:3'
    """
    return f"{topic}:{partition}"


def parse_partition_name(name: str) -> tuple[str, int]:
    """Split ``"topic:partition"`` (Kafka topic names never contain ``:``).

    >>> parse_partition_name("events:3")
    ('events', 3)
    """
    topic, _, partition = name.rpartition(":")
    return topic, int(partition)


def mask_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a client config with secret-looking values masked, for logs and reprs.

    >>> mask_config({"bootstrap.servers": "b:9092", "sasl.password": "hunter2"})
    {'bootstrap.servers': 'b:9092', 'sasl.password': '***'}
    """
    return {k: "***" if any(h in k.lower() for h in _SECRET_HINTS) and "servers" not in k else v
            for k, v in config.items()}


class KafkaSource(Source):
    """Records from Kafka topics, read per planned offset range, exactly once with the checkpoint.

    Args:
        topics: a topic name or a list of names. Give either ``topics`` or ``pattern``.
        bootstrap_servers: ``host:port[,host:port]``.
        pattern: a regular expression; every matching topic is read, including
            topics created later.
        group_id: the consumer group offsets are committed to after each batch
            (for lag tools only). ``None``: no group commits.
        config: extra librdkafka client settings (security, SASL/SSL, fetch
            sizes), passed through as they are and never logged unmasked.
            ``enable.auto.commit`` cannot be switched on.
        value_format: ``"json"``, ``"msgpack"``, ``"raw"`` or a callable
            ``bytes -> record``.
        key_field: put the message key (UTF-8 text, or ``None``) into this field
            of each decoded dict record, so an operator can group by it.
        schema: a :class:`~statefulstream.schema.Schema` checked on each batch;
            violating records are dead-lettered with ``error="schema"``.
        starting_offsets: where partitions start when the app starts without a
            checkpoint: ``"earliest"``, ``"latest"``, or ``{"topic:partition":
            offset}`` (``-2`` earliest, ``-1`` latest; unlisted partitions
            start at earliest). Partitions found later always start at earliest.
        read_timeout: how long a read or an offsets request may keep retrying
            (broker down or restarting) before raising ``SourceError``.
        watermark_probe: find the true end of each partition by fetching its
            last record batch, for brokers that under-report the high watermark
            (tansu 0.6 reports the last batch's base offset + 1). Costs one
            fetch per partition with new data per trigger; off for Apache Kafka.
        poll_records: records asked for per ``consume`` call.

    Raises:
        ConfigError: conflicting or invalid arguments.

    >>> KafkaSource("events", bootstrap_servers="127.0.0.1:9092", config={"sasl.password": "pw"})
    KafkaSource(topics=['events'], bootstrap_servers='127.0.0.1:9092', config={'sasl.password': '***'})
    """

    name = "kafka"

    def __init__(
        self,
        topics: str | Sequence[str] | None = None,
        *,
        bootstrap_servers: str,
        pattern: str | None = None,
        group_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        value_format: str | Decoder = "json",
        key_field: str | None = None,
        schema: Schema | None = None,
        starting_offsets: str | Mapping[str, int] = "earliest",
        read_timeout: Duration = "60 seconds",
        watermark_probe: bool = False,
        poll_records: int = 10_000,
    ) -> None:
        if (topics is None) == (pattern is None):
            msg = "KafkaSource needs exactly one of topics= (a name or a list) or pattern= (a regex)"
            raise ConfigError(msg)
        self.topics: list[str] = [topics] if isinstance(topics, str) else list(topics or [])
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.config = dict(config or {})
        if str(self.config.get("enable.auto.commit", "false")).lower() == "true":
            msg = ("KafkaSource config enable.auto.commit=true is not allowed: offsets are stored in the "
                   "checkpoint; remove the setting (group commits happen after each committed batch)")
            raise ConfigError(msg)
        if not callable(value_format) and value_format not in FORMATS:
            msg = f"KafkaSource value_format must be one of {FORMATS} or a callable; got {value_format!r}"
            raise ConfigError(msg)
        self.value_format = value_format
        self.key_field = key_field
        self.schema = schema
        if isinstance(starting_offsets, str) and starting_offsets not in ("earliest", "latest"):
            msg = (f"KafkaSource starting_offsets must be 'earliest', 'latest' or a mapping "
                   f"{{'topic:partition': offset}}; got {starting_offsets!r}")
            raise ConfigError(msg)
        self.starting_offsets = starting_offsets
        self.read_timeout_s = positive_duration_ms(read_timeout, name="read_timeout") / 1000
        self.watermark_probe = watermark_probe
        self.poll_records = poll_records
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._probed: dict[str, tuple[int, int]] = {}  # partition -> (reported end, true end)

    def __repr__(self) -> str:
        what = f"topics={self.topics!r}" if self.pattern is None else f"pattern={self.pattern.pattern!r}"
        extra = f", config={mask_config(self.config)!r}" if self.config else ""
        return f"KafkaSource({what}, bootstrap_servers={self.bootstrap_servers!r}{extra})"

    # --- lifecycle

    def open(self) -> None:
        """Create the consumer and the admin client (idempotent)."""
        if self._consumer is not None:
            return
        conf = {"bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id or f"statefulstream-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                # The consumer is assigned only while reading: answer empty fetches fast.
                "fetch.wait.max.ms": 50, **self.config,
                # End-of-partition events end a watermark probe; reads ignore them.
                "enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True}
        admin_conf = {k: v for k, v in conf.items() if not k.startswith(_CONSUMER_ONLY)}
        try:
            self._consumer = Consumer(conf)
            self._admin = AdminClient(admin_conf)
        except KafkaException as exc:
            msg = f"cannot create a Kafka consumer for {self!r}: {exc}; check the config"
            raise SourceError(msg) from exc

    def close(self) -> None:
        """Close the consumer without committing. Idempotent."""
        consumer, self._consumer, self._admin = self._consumer, None, None
        if consumer is not None:
            consumer.close()

    def _clients(self) -> tuple[Consumer, AdminClient]:
        if self._consumer is None or self._admin is None:
            self.open()
        assert self._consumer is not None and self._admin is not None
        return self._consumer, self._admin

    # --- planning

    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``start`` completed for new partitions and the end of each partition.

        Raises:
            SourceError: a named topic does not exist, or the broker did not
                answer within ``read_timeout``.
        """
        partitions = self._partitions()
        latest = self._list_offsets(partitions, OffsetSpec.latest())
        if self.watermark_probe:
            latest = self._probe_ends(latest, start)
        full = dict(start)
        new = [tp for tp in partitions if partition_name(tp.topic, tp.partition) not in start]
        if new:
            full.update(self._initial_offsets(new, latest, first_run=not start))
        return full, {p: max(end, full.get(p, 0)) for p, end in latest.items()}

    def _partitions(self) -> list[TopicPartition]:
        _, admin = self._clients()
        meta = self._retry("list topics", lambda: admin.list_topics(timeout=5))
        if self.pattern is not None:
            names = sorted(t for t in meta.topics if self.pattern.search(t) and not t.startswith("__"))
        else:
            missing = [t for t in self.topics if t not in meta.topics or meta.topics[t].error is not None]
            if missing:
                msg = (f"Kafka topic(s) {missing} do not exist on {self.bootstrap_servers}; create them "
                       f"(or fix the name in KafkaSource) and restart")
                raise SourceError(msg)
            names = self.topics
        return [TopicPartition(t, p) for t in names for p in sorted(meta.topics[t].partitions)]

    def _list_offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[str, int]:
        if not partitions:
            return {}
        _, admin = self._clients()

        def request() -> dict[str, int]:
            futures = admin.list_offsets({tp: spec for tp in partitions},
                                         isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=5)
            return {partition_name(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

        return self._retry("list offsets", request)

    def _initial_offsets(self, new: list[TopicPartition], latest: Mapping[str, int], *,
                         first_run: bool) -> dict[str, int]:
        earliest = self._list_offsets(new, OffsetSpec.earliest())
        explicit = self.starting_offsets if isinstance(self.starting_offsets, Mapping) else {}
        out = {}
        for name, low in earliest.items():
            wanted = explicit.get(name, -2) if first_run else -2
            if first_run and self.starting_offsets == "latest":
                wanted = -1
            out[name] = latest[name] if wanted == -1 else low if wanted == -2 else max(low, wanted)
        return out

    def _probe_ends(self, latest: dict[str, int], start: Offsets) -> dict[str, int]:
        """Raise each reported end to one past the last record actually in the partition.

        Fetches from the reported last batch (or from ``start`` when that is
        further) until the partition's end-of-partition event; the records
        fetched say where the partition really ends.
        """
        consumer, _ = self._clients()
        # Same reported end, same last batch, same true end (logs are append-only): no fetch needed.
        ends = {p: self._probed[p][1] for p, end in latest.items() if self._probed.get(p, (-1, 0))[0] == end}
        probe = {p: max(start.get(p, 0), end - 1, 0) for p, end in latest.items() if p not in ends}
        if probe:
            ends.update(self._fetch_ends(consumer, probe, latest))
            self._probed.update({p: (latest[p], ends[p]) for p in probe})
        return ends

    def _fetch_ends(self, consumer: Consumer, probe: Mapping[str, int],
                    latest: Mapping[str, int]) -> dict[str, int]:
        """Fetch from ``probe`` offsets to each partition's end; return one past the last offset seen."""
        tps = [TopicPartition(*parse_partition_name(p), off) for p, off in probe.items()]
        consumer.assign(tps)
        consumer.resume(tps)
        ends, done = {p: latest[p] for p in probe}, set[str]()
        deadline = time.monotonic() + self.read_timeout_s
        while len(done) < len(probe) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=self.poll_records, timeout=0.02):
                name, off = _where(msg)
                err = msg.error()
                if err is None:
                    ends[name] = max(ends[name], off + 1)
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(name)
        consumer.unassign()
        return ends

    # --- reading

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Read exactly the records at offsets ``[start, end)`` of each partition and decode them.

        Records come partition by partition in name order, each in offset
        order, so a replay returns the same list. Undecodable records and
        schema violations become dead letters.

        Raises:
            SourceError: the range could not be read completely within
                ``read_timeout`` (broker down, topic deleted, data lost).
        """
        todo = {p: (start.get(p, 0), e) for p, e in end.items() if e > start.get(p, 0)}
        if not todo:
            return ReadResult([])
        messages = self._fetch(todo)
        result = ReadResult([])
        for name in sorted(messages):
            self._decode(messages[name], result)
        return result

    def _fetch(self, todo: Mapping[str, tuple[int, int]]) -> dict[str, list[Message]]:
        consumer, _ = self._clients()
        tps = {p: TopicPartition(*parse_partition_name(p), lo) for p, (lo, _) in todo.items()}
        consumer.assign(list(tps.values()))
        consumer.resume(list(tps.values()))  # a pause from an earlier read outlives assign()
        nxt = {p: lo for p, (lo, _) in todo.items()}
        out: dict[str, list[Message]] = {p: [] for p in todo}
        pending = set(todo)
        deadline = time.monotonic() + self.read_timeout_s
        last_error: KafkaError | None = None
        while pending:
            # Never ask for more than the range can hold, so consume() returns as soon as it is read.
            want = max(1, min(self.poll_records, sum(todo[p][1] - nxt[p] for p in pending)))
            for msg in consumer.consume(num_messages=want, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        last_error = err  # librdkafka reconnects and refetches by itself
                    continue
                name, off = _where(msg)
                if name in pending and nxt[name] <= off < todo[name][1]:
                    out[name].append(msg)
                    nxt[name] = off + 1
            # Past gaps (control records, compaction) the position moves without a message.
            for tp in consumer.position([tps[p] for p in pending]):
                name = partition_name(tp.topic, tp.partition)
                if max(tp.offset, nxt[name]) >= todo[name][1]:
                    pending.discard(name)
                    consumer.pause([tps[name]])
            if pending and time.monotonic() > deadline:
                where = ", ".join(f"{p} at {nxt[p]} of [{todo[p][0]}, {todo[p][1]})" for p in sorted(pending))
                text = (f"KafkaSource could not read the planned range within {self.read_timeout_s:g}s: {where}; "
                        f"last error: {last_error}. Is the broker {self.bootstrap_servers} up and the data "
                        f"still retained? The batch is replayed on restart.")
                consumer.unassign()
                raise SourceError(text)
        consumer.unassign()
        return out

    def _decode(self, messages: list[Message], result: ReadResult) -> None:
        """Decode one partition's messages in bulk, appending records and dead letters to ``result``."""
        if not messages:
            return
        if self.value_format == "raw":
            records: list[Any] = [_raw_row(m) for m in messages]
            bad: list[tuple[int, str]] = []
        else:
            records, bad = self._decode_values([m.value() for m in messages])
        kept = list(range(len(messages)))
        if bad:
            dropped = {i for i, _ in bad}
            kept = [i for i in kept if i not in dropped]
            result.dead_letters.extend(self._dead(messages[i], reason, "decode") for i, reason in bad)
        if self.key_field is not None:
            field = self.key_field
            for i in kept:
                rec, key = records[i], messages[i].key()
                if isinstance(rec, dict):
                    rec[field] = key.decode("utf-8", "backslashreplace") if key is not None else None
        if self.schema is None:
            result.add([records[i] for i in kept], _positions(messages, kept))
            return
        good, violations = self.schema.conform([records[i] for i in kept])
        if violations:
            failed = {j for j, _ in violations}
            result.dead_letters.extend(self._dead(messages[kept[j]], reason, "schema") for j, reason in violations)
            kept = [i for j, i in enumerate(kept) if j not in failed]
        result.add(good, _positions(messages, kept))

    def _decode_values(self, values: list[bytes | None]) -> tuple[list[Any], list[tuple[int, str]]]:
        """Return the decoded values (``None`` where bad) and ``(index, reason)`` of the bad ones."""
        fmt = self.value_format
        decoder: Decoder = fmt if callable(fmt) else orjson.loads if fmt == "json" else _unpack_msgpack
        try:
            return list(map(decoder, values)), []  # the fast path: one C-level loop
        except Exception:  # noqa: BLE001 - fall back to one record at a time to find the bad ones
            pass
        what = fmt if isinstance(fmt, str) else "for the value_format callable"
        records: list[Any] = []
        bad: list[tuple[int, str]] = []
        for i, value in enumerate(values):
            try:
                records.append(decoder(value))
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a dead letter
                records.append(None)
                bad.append((i, f"value is not valid {what}: {exc}"))
        return records, bad

    @staticmethod
    def _dead(msg: Message, reason: str, error: str) -> DeadLetter:
        position = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
        return DeadLetter(reason=reason, source="kafka", position=position, raw=msg.value(), error=error)

    # --- after commit

    def committed(self, end: Offsets) -> None:
        """Commit ``end`` to the consumer group (for lag tools); failures are logged, not raised."""
        if self.group_id is None or not end:
            return
        consumer, _ = self._clients()
        offsets = [TopicPartition(*parse_partition_name(p), off) for p, off in end.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            logger.warning("commit of offsets to consumer group %r failed (lag tools lag behind): %s",
                           self.group_id, exc)

    # --- helpers

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        """Call ``call`` until it succeeds or ``read_timeout`` passes (the broker may be restarting)."""
        policy = RetryPolicy(max_attempts=None, max_elapsed=dt.timedelta(seconds=self.read_timeout_s),
                             initial_backoff="500 ms", max_backoff="500 ms", jitter=0)
        try:
            return policy.call(call, retry_on=KafkaException, on_retry=lambda exc, _, __: logger.info(
                "KafkaSource: %s failed (%s); retrying", what, exc))
        except KafkaException as exc:
            msg = (f"KafkaSource: {what} on {self.bootstrap_servers} failed for {self.read_timeout_s:g}s: "
                   f"{exc}; is the broker up and reachable?")
            raise SourceError(msg) from exc


def _where(msg: Message) -> tuple[str, int]:
    """Return the partition name and offset of a fetched message (never ``None`` without an error)."""
    return partition_name(msg.topic() or "", msg.partition() or 0), msg.offset() or 0


def _positions(messages: list[Message], kept: list[int]) -> Callable[[int], dict[str, Any]]:
    """Return the position function of the records decoded from one partition's ``messages[kept[i]]``.

    Keeps offsets, not the messages (their values would stay in memory for
    the whole batch); a gap-free range needs only its first offset.
    """
    topic, partition, first = messages[0].topic(), messages[0].partition(), messages[0].offset() or 0
    if (messages[-1].offset() or 0) - first == len(messages) - 1:
        return lambda i: {"topic": topic, "partition": partition, "offset": first + kept[i]}
    offsets = [messages[i].offset() for i in kept]  # gaps: transaction markers, compaction
    return lambda i: {"topic": topic, "partition": partition, "offset": offsets[i]}


def _unpack_msgpack(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False)


def _raw_row(msg: Message) -> dict[str, Any]:
    """Return a Spark-style row of a message: key and value as bytes, plus where and when."""
    return {"key": msg.key(), "value": msg.value(), "topic": msg.topic(), "partition": msg.partition(),
            "offset": msg.offset(), "timestamp": msg.timestamp()[1]}
