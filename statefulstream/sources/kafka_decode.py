"""Kafka message values to records: the value formats, message keys into records, schema checks, dead letters.

``MessageDecoder`` decodes one partition's messages at a time, in bulk (one
C-level ``map`` over the values a ``ColumnReader`` fetched; record by record
only when that fails, to find the bad ones), and adds the records to a
``ReadResult`` with their positions (topic, partition, offset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson

from statefulstream.kafka_runs import Fetched
from statefulstream.records import DeadLetter
from statefulstream.schema import Schema
from statefulstream.sources.base import ReadResult

Decoder = Callable[[Any], Any]
"""Turns a message value (bytes, or None for a tombstone) into a record; raising dead-letters it."""

FORMATS = ("json", "msgpack", "raw")
"""Built-in value formats. ``raw`` yields Spark-style rows (key, value, topic, partition, offset, timestamp)."""


class MessageDecoder:
    """Decodes Kafka messages into records as a ``KafkaSource`` is configured.

    Args:
        value_format: one of ``FORMATS`` or a callable ``bytes -> record``.
        key_field: put the message key (UTF-8 text, or ``None``) into this field of each dict record.
        schema: checked on the decoded records; violations are dead-lettered (``error="schema"``).
    """

    def __init__(self, value_format: str | Decoder, key_field: str | None, schema: Schema | None) -> None:
        self.value_format = value_format
        self.key_field = key_field
        self.schema = schema
        self.needs_keys = key_field is not None or value_format == "raw"
        """Whether decoding reads the message keys (a reader need not keep them otherwise)."""

    def decode(self, fetched: Fetched, result: ReadResult) -> None:
        """Decode one partition's messages in bulk, appending records and dead letters to ``result``."""
        if not fetched.values:
            return
        if self.value_format == "raw":
            records: list[Any] = _raw_rows(fetched)
            bad: list[tuple[int, str]] = []
        else:
            records, bad = self.decode_values(fetched.values)
        kept: Sequence[int] = range(len(records))
        if bad:
            dropped = {i for i, _ in bad}
            kept = [i for i in kept if i not in dropped]
            result.dead_letters.extend(_dead(fetched, i, reason, "decode") for i, reason in bad)
        if self.key_field is not None:
            field, keys = self.key_field, fetched.keys
            assert keys is not None, "the reader keeps keys for key_field"
            for i in kept:
                rec, key = records[i], keys[i]
                if isinstance(rec, dict):
                    rec[field] = key.decode("utf-8", "backslashreplace") if key is not None else None
        if self.schema is None:
            result.add(records if not bad else [records[i] for i in kept], _positions(fetched, kept))
            return
        good, violations = self.schema.conform([records[i] for i in kept])
        if violations:
            failed = {j for j, _ in violations}
            result.dead_letters.extend(_dead(fetched, kept[j], reason, "schema") for j, reason in violations)
            kept = [i for j, i in enumerate(kept) if j not in failed]
        result.add(good, _positions(fetched, kept))

    def decode_values(self, values: list[bytes | None]) -> tuple[list[Any], list[tuple[int, str]]]:
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


def _dead(fetched: Fetched, i: int, reason: str, error: str) -> DeadLetter:
    """Return the dead letter of message ``i`` of ``fetched``."""
    position = {"topic": fetched.topic, "partition": fetched.partition, "offset": fetched.offsets[i]}
    return DeadLetter(reason=reason, source="kafka", position=position, raw=fetched.values[i], error=error)


def _positions(fetched: Fetched, kept: Sequence[int]) -> Callable[[int], dict[str, Any]]:
    """Return the position function of the records decoded from ``fetched``'s messages ``kept[i]``.

    Keeps offsets, not the values (they would stay in memory for the whole
    batch); a gap-free range with every message kept needs no list at all.
    """
    topic, partition, offsets = fetched.topic, fetched.partition, fetched.offsets
    if isinstance(kept, range) and isinstance(offsets, range):
        first = offsets[0]
        return lambda i: {"topic": topic, "partition": partition, "offset": first + i}
    where = [offsets[i] for i in kept]
    return lambda i: {"topic": topic, "partition": partition, "offset": where[i]}


def _unpack_msgpack(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False)


def _raw_rows(fetched: Fetched) -> list[dict[str, Any]]:
    """Return Spark-style rows of ``fetched``: key and value as bytes, plus where and when."""
    topic, partition, keys, times = fetched.topic, fetched.partition, fetched.keys, fetched.timestamps
    assert keys is not None and times is not None, "the reader of the raw format keeps keys and timestamps"
    return [{"key": key, "value": value, "topic": topic, "partition": partition, "offset": offset,
             "timestamp": ts} for key, value, offset, ts in zip(keys, fetched.values, fetched.offsets, times,
                                                                 strict=True)]
