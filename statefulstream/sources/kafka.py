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

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ConfigError, DataLossError, SourceError
from statefulstream.kafka_client import (
    ColumnReader,
    RangeIncompleteError,
    ReaderFailedError,
    admin_config,
    list_offsets,
    mask_config,
    parse_partition_name,
    partition_name,
)
from statefulstream.kafka_runs import Fetched
from statefulstream.records import Offsets
from statefulstream.retry import RetryPolicy
from statefulstream.scaleout.options import ScaleOut
from statefulstream.schema import Schema
from statefulstream.sources.base import ReadResult, Source, data_lost
from statefulstream.sources.kafka_decode import FORMATS, Decoder, MessageDecoder

logger = logging.getLogger(__name__)

_PROBE_POLL = dt.timedelta(milliseconds=20)  # one consume() wait of a watermark probe

FETCH_SETTINGS = {
    # An empty fetch (the end of a partition) is answered fast, so a short batch is not held back.
    "fetch.wait.max.ms": 50,
    # librdkafka stops fetching a partition whose prefetch queue is full and looks again after this long
    # (1 s by default, which capped reading near queued.min.messages per second and partition).
    "fetch.queue.backoff.ms": 50,
}
"""librdkafka fetch settings of the source's consumer (``config`` overrides them)."""


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
        fail_on_data_loss: as Spark's ``failOnDataLoss``. When records the
            checkpoint has not read yet are gone from the broker (aged out,
            topic deleted or recreated shorter), ``True`` stops the app with a
            ``SourceError`` naming topic, partition and offsets; ``False``
            goes on from the earliest available offset with a WARNING, and
            counts it (``data_loss_events``, ``statefulstream_source_data_loss_total``).
        read_ahead: records fetched beyond the planned range while a batch is
            processed (the next batch starts where this one ends); 0 disables.
        scale_out: ``True`` or a :class:`~statefulstream.scaleout.ScaleOut`:
            run the app as several processes of the consumer group ``group_id``,
            each owning some partitions, with state kept per partition and moved
            through a changelog topic (docs/scaleout.md). ``False``: one process
            reads every partition.

    Attributes:
        decoder: the :class:`~statefulstream.sources.kafka_decode.MessageDecoder` of
            ``value_format``, ``key_field`` and ``schema`` (the Spark adapter decodes with it too).

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
        fail_on_data_loss: bool = True,
        read_ahead: int = 100_000,
        scale_out: bool | ScaleOut = False,
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
        self.decoder = MessageDecoder(value_format, key_field, schema)
        if isinstance(starting_offsets, str) and starting_offsets not in ("earliest", "latest"):
            msg = (f"KafkaSource starting_offsets must be 'earliest', 'latest' or a mapping "
                   f"{{'topic:partition': offset}}; got {starting_offsets!r}")
            raise ConfigError(msg)
        self.starting_offsets = starting_offsets
        self.read_timeout = dt.timedelta(milliseconds=positive_duration_ms(read_timeout, name="read_timeout"))
        self.watermark_probe = watermark_probe
        self.poll_records = poll_records
        self.fail_on_data_loss = fail_on_data_loss
        if read_ahead < 0:
            msg = f"KafkaSource read_ahead must be a number of records >= 0; got {read_ahead!r}"
            raise ConfigError(msg)
        self.read_ahead = read_ahead
        self.scale_out: ScaleOut | None = ScaleOut() if scale_out is True else (scale_out or None)
        if self.scale_out is not None and (group_id is None or pattern is not None or len(self.topics) != 1):
            msg = ("KafkaSource(scale_out=...) needs one topic (not a pattern) and a group_id: the processes of "
                   "the app share the topic's partitions through that consumer group")
            raise ConfigError(msg)
        self._reader: ColumnReader | None = None
        self._prober: Consumer | None = None
        self._admin: AdminClient | None = None
        self._probed: dict[str, tuple[int, int]] = {}  # partition -> (reported end, true end)
        self._reported: dict[str, int] = {}  # partition -> the lost offset last warned about

    def __repr__(self) -> str:
        what = f"topics={self.topics!r}" if self.pattern is None else f"pattern={self.pattern.pattern!r}"
        extra = f", config={mask_config(self.config)!r}" if self.config else ""
        return f"KafkaSource({what}, bootstrap_servers={self.bootstrap_servers!r}{extra})"

    # --- lifecycle

    def open(self) -> None:
        """Create the reader (consumer), the admin client and, with ``watermark_probe``, a probe consumer."""
        if self._reader is not None:
            return
        conf = {"bootstrap.servers": self.bootstrap_servers,
                "group.id": self.group_id or f"statefulstream-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                **FETCH_SETTINGS, **self.config,
                # A fetch outside what the broker has is reported (data loss), never silently reset.
                "auto.offset.reset": "error",
                "enable.auto.commit": False, "enable.auto.offset.store": False}
        try:
            self._admin = AdminClient(admin_config(conf))
            self._reader = ColumnReader(conf, timeout=self.read_timeout, poll_records=self.poll_records,
                                        read_ahead=self.read_ahead, keys=self.decoder.needs_keys,
                                        timestamps=self.decoder.value_format == "raw",
                                        headers=self.keeps_headers)
            if self.watermark_probe:
                # End-of-partition events end a watermark probe.
                self._prober = Consumer({**conf, "group.id": f"statefulstream-probe-{uuid.uuid4().hex}",
                                         "enable.partition.eof": True})
        except KafkaException as exc:
            msg = f"cannot create a Kafka consumer for {self!r}: {exc}; check the config"
            raise SourceError(msg) from exc

    def close(self) -> None:
        """Close the consumers without committing. Idempotent."""
        reader, prober, self._reader, self._prober, self._admin = self._reader, self._prober, None, None, None
        if reader is not None:
            reader.close()
        if prober is not None:
            prober.close()

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self.open()
        assert self._admin is not None
        return self._admin

    def _range_reader(self) -> ColumnReader:
        if self._reader is None:
            self.open()
        assert self._reader is not None
        return self._reader

    # --- planning

    def available(self, start: Offsets, *, only: Sequence[str] | None = None) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``start`` completed for new partitions and the end of each partition.

        A partition whose unread records are gone moves to its earliest offset
        when ``fail_on_data_loss`` is off. ``only`` limits the answer to those
        partitions (a scale-out task asks for its own).

        Raises:
            SourceError: a named topic does not exist, records not read yet
                are gone (``fail_on_data_loss``), or the broker did not answer
                within ``read_timeout``.
        """
        partitions = self._partitions()
        if only is not None:
            partitions = [tp for tp in partitions if partition_name(tp.topic, tp.partition) in only]
        latest = self._list_offsets(partitions, OffsetSpec.latest())
        if self.watermark_probe:
            latest = self._probe_ends(latest)
        full = dict(start)
        known = [tp for tp in partitions if partition_name(tp.topic, tp.partition) in start]
        if known:
            earliest = self._list_offsets(known, OffsetSpec.earliest())
            full.update(self._check_loss(start, earliest, latest))
        new = [tp for tp in partitions if partition_name(tp.topic, tp.partition) not in start]
        if new:
            full.update(self._initial_offsets(new, latest, first_run=not start))
        return full, {p: max(end, full.get(p, 0)) for p, end in latest.items()}

    def _partitions(self) -> list[TopicPartition]:
        admin = self._admin_client()
        meta = self._retry("list topics", lambda: admin.list_topics(timeout=self.read_timeout.total_seconds()))
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
        admin = self._admin_client()
        return self._retry("list offsets",  # type: ignore[no-any-return]
                           lambda: list_offsets(admin, partitions, spec, timeout=self.read_timeout))

    def _check_loss(self, start: Offsets, earliest: Mapping[str, int],
                    latest: Mapping[str, int]) -> dict[str, int]:
        """Return new starts of partitions whose unread records are gone, or raise (``fail_on_data_loss``)."""
        moved = {}
        for p, pos in start.items():
            if p not in latest:
                self._data_lost(p, pos, None, None, "the partition no longer exists")
                continue
            low, high = earliest[p], latest[p]
            if high < pos:
                self._data_lost(p, pos, low, high, "the partition ends before that offset "
                                "(the topic was deleted and recreated, or truncated)")
            elif low > pos:
                self._data_lost(p, pos, low, high, "records before the earliest offset were deleted "
                                "(retention, or deleted records)")
            else:
                continue
            moved[p] = low
        return moved

    def _data_lost(self, partition: str, expected: int, low: int | None, high: int | None, why: str) -> None:
        """Raise ``DataLossError``, or (``fail_on_data_loss=False``) warn and count the loss once."""
        topic, number = parse_partition_name(partition)
        has = "nothing" if low is None or high is None else f"offsets [{low}, {high})"
        what = (f"Kafka data loss: topic {topic!r} partition {number}: the next offset to read is {expected}, "
                f"but the broker {self.bootstrap_servers} has {has}: {why}. Records not read yet are gone")
        if self.fail_on_data_loss:
            msg = (f"{what}. If the loss is expected, restart with KafkaSource(fail_on_data_loss=False) to go "
                   f"on from the earliest available offset, or start from a new checkpoint_dir; otherwise "
                   f"restore the topic's data. Nothing was committed past offset {expected}.")
            raise DataLossError(msg)
        if self._reported.get(partition) == expected:
            return  # planning asks again before the batch runs: one loss, one warning
        self._reported[partition] = expected
        where = "stays as it is" if low is None else f"goes on from offset {low}"
        data_lost(self, f"{what}; fail_on_data_loss=False: the partition {where}.")

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

    def _probe_ends(self, latest: dict[str, int]) -> dict[str, int]:
        """Raise each reported end to where the partition really ends.

        Fetches from the reported last batch until the partition's
        end-of-partition event; the records fetched and the end that event
        reports say where the partition ends.
        """
        # Same reported end, same last batch, same true end (logs are append-only): no fetch needed. Not for
        # a reported 0: tansu answers 0 while a transaction is open, whatever the partition holds.
        ends = {p: self._probed[p][1] for p, end in latest.items()
                if end > 0 and self._probed.get(p, (-1, 0))[0] == end}
        probe = {p: max(end - 1, 0) for p, end in latest.items() if p not in ends}
        if probe:
            if self._prober is None:
                self.open()
            assert self._prober is not None
            ends.update(self._fetch_ends(self._prober, probe, latest))
            self._probed.update({p: (latest[p], ends[p]) for p in probe})
        return ends

    def _fetch_ends(self, consumer: Consumer, probe: Mapping[str, int],
                    latest: Mapping[str, int]) -> dict[str, int]:
        """Fetch from ``probe`` offsets to each partition's end; return the highest of the reported end, one
        past the last offset seen and the end-of-partition offset."""
        tps = [TopicPartition(*parse_partition_name(p), off) for p, off in probe.items()]
        consumer.assign(tps)
        consumer.resume(tps)
        ends, done = {p: latest[p] for p in probe}, set[str]()
        deadline = time.monotonic() + self.read_timeout.total_seconds()
        while len(done) < len(probe) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=self.poll_records, timeout=_PROBE_POLL.total_seconds()):
                name, off = _where(msg)
                err = msg.error()
                if err is None:
                    ends[name] = max(ends[name], off + 1)
                elif err.code() == KafkaError._PARTITION_EOF:
                    # The end the fetch reported: it also counts a commit marker after the last record.
                    ends[name] = max(ends[name], off)
                    done.add(name)
        consumer.unassign()
        return ends

    # --- reading

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Read exactly the records at offsets ``[start, end)`` of each partition and decode them.

        Records come partition by partition in name order, each in offset
        order, so a replay returns the same list. Undecodable records and
        schema violations become dead letters. The consumer stays assigned
        and reads on from ``end`` while the batch is processed.

        Raises:
            SourceError: the range could not be read completely within
                ``read_timeout`` (broker down), or its records are gone
                (``fail_on_data_loss``).
        """
        todo = {p: (start.get(p, 0), e) for p, e in end.items() if e > start.get(p, 0)}
        if not todo:
            return ReadResult([])
        try:
            messages = self._range_reader().read(todo)
        except RangeIncompleteError as exc:
            messages = self._read_after_loss(todo, exc)
        except ReaderFailedError as exc:
            msg = f"KafkaSource on {self.bootstrap_servers}: {exc}; the batch is replayed on restart"
            raise SourceError(msg) from exc
        result = ReadResult([])
        for name in sorted(messages):
            self.decoder.decode(self._accept(messages[name]), result)
        return result

    def _read_after_loss(self, todo: Mapping[str, tuple[int, int]],
                         exc: RangeIncompleteError) -> dict[str, Fetched]:
        """A range was not read in time: report data loss if its records are gone, else a broker error."""
        timeout = (f"KafkaSource could not read the planned range within {self.read_timeout.total_seconds():g}s: "
                   f"{exc}. Is the broker {self.bootstrap_servers} up? The batch is replayed on restart.")
        tps = [TopicPartition(*parse_partition_name(p)) for p in exc.missing]
        admin = self._admin_client()
        try:  # one attempt: a broker that is down cannot say whether the data is there
            earliest = list_offsets(admin, tps, OffsetSpec.earliest(), timeout=self.read_timeout)
            latest = list_offsets(admin, tps, OffsetSpec.latest(), timeout=self.read_timeout)
        except KafkaException:
            raise SourceError(timeout) from exc
        if self.watermark_probe:
            latest = self._probe_ends(latest)
        shrunk = dict(todo)
        for p, (nxt, lo, hi) in exc.missing.items():
            low, high = earliest.get(p), latest.get(p)
            if low is None or high is None or low > nxt or high < hi:
                why = f"the planned range [{lo}, {hi}) of this batch is no longer all there"
                self._data_lost(p, nxt, low, high, why)
                shrunk[p] = (max(lo, low or 0), min(hi, high or 0))
        if shrunk == todo:
            raise SourceError(timeout) from exc
        return self._range_reader().read(shrunk)

    # --- after commit

    keeps_headers = False
    """Whether the reader keeps each message's headers (for a subclass's :meth:`_accept`)."""

    def _accept(self, fetched: Fetched) -> Fetched:
        """The messages of one partition's range to decode (all of them; a subclass may leave some out)."""
        return fetched

    def release(self, partitions: Sequence[str]) -> None:
        """Stop reading ``partitions`` (``"topic:p"``) and drop what was read ahead of them (scale-out revokes)."""
        if self._reader is not None:
            self._reader.release(partitions)

    def committed(self, end: Offsets) -> None:
        """Commit ``end`` to the consumer group (for lag tools); failures are logged, not raised."""
        if self.group_id is None or not end:
            return
        try:
            self._range_reader().commit(end)
        except (KafkaException, ReaderFailedError) as exc:
            logger.warning("commit of offsets to consumer group %r failed (lag tools lag behind): %s",
                           self.group_id, exc)

    # --- helpers

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        """Call ``call`` until it succeeds or ``read_timeout`` passes (the broker may be restarting)."""
        policy = RetryPolicy(max_attempts=None, max_elapsed=self.read_timeout,
                             initial_backoff="500 ms", max_backoff="500 ms", jitter=0)
        try:
            return policy.call(call, retry_on=KafkaException, on_retry=lambda exc, _, __: logger.info(
                "KafkaSource: %s failed (%s); retrying", what, exc))
        except KafkaException as exc:
            msg = (f"KafkaSource: {what} on {self.bootstrap_servers} failed for "
                   f"{self.read_timeout.total_seconds():g}s: {exc}; is the broker up and reachable?")
            raise SourceError(msg) from exc


def _where(msg: Message) -> tuple[str, int]:
    """Return the partition name and offset of a fetched message (never ``None`` without an error)."""
    return partition_name(msg.topic() or "", msg.partition() or 0), msg.offset() or 0
