"""``FilePathTopicSource``: streaming over a data lake, reading the files a topic announces.

Loaders write Parquet or JSON-lines files and publish each file's path to a
Kafka topic (``ParquetFileSink(publish_to=KafkaSink(...))`` does both). This
source plans batches on that topic's offsets and, per batch, reads the
records of the files the messages name, with ``FileSource``'s readers. The
position is the path topic's offsets, so batches replay exactly and the
pipeline is exactly-once as long as published files are not changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson

from statefulstream.errors import ConfigError, SourceError
from statefulstream.records import DeadLetter, Offsets
from statefulstream.schema import Schema
from statefulstream.sources.base import ReadResult, Source
from statefulstream.sources.file import FileSource
from statefulstream.sources.kafka import KafkaSource

logger = logging.getLogger(__name__)


def message_path(value: bytes | None) -> str:
    """Return the file path a path-topic message names: a JSON object's ``"path"``, or the value as text.

    >>> message_path(b'{"path": "/lake/part-1.parquet", "rows": 3}'), message_path(b"/lake/a.jsonl")
    ('/lake/part-1.parquet', '/lake/a.jsonl')

    Raises:
        ValueError: the message names no path.
    """
    if not value:
        msg = "the message is empty; it must hold a file path or {\"path\": ...}"
        raise ValueError(msg)
    if value[:1] == b"{":
        path = orjson.loads(value).get("path")
        if not isinstance(path, str) or not path:
            msg = "the JSON message has no \"path\" text field"
            raise ValueError(msg)
        return path
    return value.decode("utf-8").strip()


class FilePathTopicSource(Source):
    """Records of the Parquet / JSON-lines / CSV files whose paths arrive on a Kafka topic.

    Each message is a path (UTF-8 text, or JSON with a ``"path"`` field, as
    ``ParquetFileSink`` publishes). Per batch the listed files are read whole,
    in message order. A message that names no path, a file that is missing
    or cannot be opened becomes a :class:`DeadLetter` with ``error="file"``
    and the reason, positioned at the message (topic, partition, offset) and
    file; malformed lines or rows inside a file are dead-lettered by the file
    reader as ``FileSource`` does.

    Args:
        topic: the path topic.
        bootstrap_servers: ``host:port``.
        format: file format (``"parquet"``, ``"jsonl"``, ``"csv"``); None
            infers it from each file's extension.
        schema: checked on the files' records.
        base_dir: relative paths are resolved against it (default: as given).
        **kafka: other :class:`KafkaSource` options (``group_id``,
            ``config``, ``starting_offsets``, ``read_timeout``,
            ``watermark_probe``).

    Raises:
        ConfigError: invalid arguments.
    """

    name = "file_path_topic"

    def __init__(self, topic: str, *, bootstrap_servers: str, format: str | None = None,
                 schema: Schema | None = None, base_dir: str | os.PathLike[str] | None = None,
                 **kafka: Any) -> None:
        for option in ("value_format", "key_field", "schema", "pattern"):
            if option in kafka:
                msg = f"FilePathTopicSource does not take {option}= (the topic holds paths, not records)"
                raise ConfigError(msg)
        self.paths = KafkaSource(topic, bootstrap_servers=bootstrap_servers, value_format="raw", **kafka)
        self.format = format
        self.schema = schema
        self.base_dir = os.fspath(base_dir) if base_dir is not None else None

    def __repr__(self) -> str:
        return f"FilePathTopicSource({self.paths!r}, format={self.format!r})"

    def open(self) -> None:
        """Connect to the path topic."""
        self.paths.open()

    def close(self) -> None:
        """Close the path topic consumer. Idempotent."""
        self.paths.close()

    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """Plan on the path topic: ``end - start`` counts files (messages), not records."""
        return self.paths.available(start)

    def committed(self, end: Offsets) -> None:
        """Commit the path topic's offsets to the consumer group."""
        self.paths.committed(end)

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Read the path messages in the range, then each listed file whole, in message order.

        Raises:
            SourceError: the path topic range cannot be read (see ``KafkaSource.read``).
        """
        messages = self.paths.read(start, end)
        result = ReadResult([], list(messages.dead_letters))
        for row in messages.records:
            where = {"topic": row["topic"], "partition": row["partition"], "offset": row["offset"]}
            try:
                path = message_path(row["value"])
            except (ValueError, orjson.JSONDecodeError) as exc:
                result.dead_letters.append(DeadLetter(f"path message is unusable: {exc}", self.name, where,
                                                      row["value"], "file"))
                continue
            if self.base_dir is not None:
                path = os.path.join(self.base_dir, path)
            self._read_file(path, where, result)
        return result

    def _read_file(self, path: str, where: Mapping[str, Any], result: ReadResult) -> None:
        """Append the records of one file to ``result``, or one dead letter saying why it cannot be read."""
        position = {**where, "file": path}
        try:
            if not os.path.isfile(path):
                msg = "the file does not exist (deleted, or not visible from this machine)"
                raise SourceError(msg)
            reader = FileSource(path, format=self.format, schema=self.schema)
            _check_parquet(path, reader)
            lo, hi = reader.available({})
            part = reader.read(lo, hi)
        except (SourceError, ConfigError, OSError, ValueError) as exc:
            result.dead_letters.append(DeadLetter(f"file {path!r} cannot be read: {exc}", self.name, position,
                                                  path, "file"))
            return
        result.add(part.records, lambda i: {**where, **(part.position(i) or {"file": path})})
        for letter in part.dead_letters:
            result.dead_letters.append(DeadLetter(letter.reason, letter.source, {**where, **letter.position},
                                                  letter.raw, letter.error))


def _check_parquet(path: str, reader: FileSource) -> None:
    """Raise ``ValueError`` if a Parquet file is corrupt (``FileSource`` treats it as not written yet)."""
    if (reader.format or os.path.splitext(path)[1].lower().lstrip(".")) not in ("parquet", "pq"):
        return
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad footer
        msg = f"not a readable Parquet file: {exc}"
        raise ValueError(msg) from exc
