"""Sources on Spark: ``FileSource`` -> Spark's file stream source, ``KafkaSource`` -> Spark's ``kafka`` source.

:func:`read_stream` opens the streaming DataFrame; the :class:`Decoder` it
returns turns that DataFrame's Arrow batches into the same records (and dead
letters) the embedded source would produce. Each decoded record carries where
it came from, ``(src, base)`` plus its index, so the operator can restore
arrival order after Spark's shuffle:

* files: ``src`` = the file, ``base`` = the start of the file split;
* Kafka: ``src`` = ``topic:partition``, ``base`` = the first offset of a run
  of consecutive messages.

JSON lines are read as text and decoded in Python with the embedded engine's
own decoder, so records are identical (Spark's JSON reader would coerce types
and add missing fields as nulls). CSV and Parquet use Spark's readers.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from statefulstream.errors import ConfigError
from statefulstream.records import DeadLetter
from statefulstream.schema import Schema
from statefulstream.sources.base import Source
from statefulstream.sources.file import EXTENSIONS, FileSource
from statefulstream.sources.line_decode import decode_jsonl

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from statefulstream.sources.kafka import KafkaSource

CORRUPT = "_corrupt_record"


@dataclasses.dataclass
class Run:
    """Consecutive records of one origin, in arrival order, with the origin's dead letters.

    ``position(i)`` tells where ``records[i]`` was read (called only when the
    record fails later, for its dead letter).
    """

    src: str
    base: int
    records: list[Any]
    dead: list[DeadLetter]
    position: Callable[[int], Mapping[str, Any]]


class Decoder(ABC):
    """Turns the source DataFrame's Arrow batches into runs of records (runs on Spark executors).

    ``lines`` counts rows per ``(src, base)`` within one task, for dead-letter
    positions; the caller owns it (one per task).
    """

    @abstractmethod
    def runs(self, batch: pa.RecordBatch, lines: dict[tuple[str, int], int]) -> Iterator[Run]:
        """Yield the runs of ``batch`` in order."""


def _spans(src: list[str], blk: list[int]) -> Iterator[tuple[int, int]]:
    """Yield ``(lo, hi)`` index ranges of consecutive rows with the same ``(src, blk)``."""
    lo = 0
    for i in range(1, len(src) + 1):
        if i == len(src) or src[i] != src[lo] or blk[i] != blk[lo]:
            yield lo, i
            lo = i


def local_path(uri: str) -> str:
    """The OS path of a ``file:`` URI as Spark reports it (other URIs as they are), for dead letters."""
    parsed = urllib.parse.urlparse(uri)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else uri


@dataclasses.dataclass
class FileDecoder(Decoder):
    """Rows of Spark's file source (``text`` for JSON lines, ``csv``, ``parquet``) -> records."""

    format: str
    schema: Schema | None
    columns: list[str]

    def runs(self, batch: pa.RecordBatch, lines: dict[tuple[str, int], int]) -> Iterator[Run]:
        srcs, blks = batch.column("src").to_pylist(), batch.column("blk").to_pylist()
        for lo, hi in _spans(srcs, blks):
            src, base = srcs[lo], blks[lo]
            first = lines.get((src, base), 0)
            lines[(src, base)] = first + hi - lo
            part = batch.slice(lo, hi - lo)
            if self.format == "jsonl":
                raw = [v.encode() for v in part.column("value").to_pylist()]
                records, where, bad = decode_jsonl(raw)
            else:
                raw, records, where, bad = self._rows(part)
            path = local_path(src)
            dead = [self._dead(path, base, first + i, raw[i], reason, "decode") for i, reason in bad]
            kept = list(where)
            if self.schema is not None:
                records, violations = self.schema.conform(records, from_text=self.format == "csv")
                dead += [self._dead(path, base, first + where[j], raw[where[j]], reason, "schema")
                         for j, reason in violations]
                rejected = {j for j, _ in violations}
                kept = [w for j, w in enumerate(where) if j not in rejected]
            yield Run(src, base, records, dead, partial(self._position, path, base, first, kept))

    def _rows(self, part: pa.RecordBatch) -> tuple[list[Any], list[Any], list[int], list[tuple[int, str]]]:
        rows = part.select(self.columns).to_pylist()
        if self.format != "csv":
            return rows, rows, list(range(len(rows))), []
        corrupt = part.column(CORRUPT).to_pylist()
        records, where, bad = [], [], []
        for i, (row, line) in enumerate(zip(rows, corrupt, strict=True)):
            if line is not None:
                bad.append((i, f"line is not one CSV record with the header's {len(self.columns)} fields"))
                continue
            records.append({k: "" if v is None else v for k, v in row.items()})  # Spark reads "" as null
            where.append(i)
        return [line if line is not None else row for row, line in zip(rows, corrupt, strict=True)], \
            records, where, bad

    def _dead(self, path: str, base: int, index: int, raw: Any, reason: str, error: str) -> DeadLetter:
        return DeadLetter(reason, "file", self._where(path, base, index), raw, error)

    def _position(self, path: str, base: int, first: int, kept: list[int], i: int) -> dict[str, Any]:
        return self._where(path, base, first + kept[i])

    def _where(self, path: str, base: int, index: int) -> dict[str, Any]:
        """The position of the ``index``-th row (0-based) of the split starting at byte ``base``."""
        unit = "line" if self.format != "parquet" else "row"
        # Line numbers are exact only in a file's first split; later splits say where the split starts.
        return ({"file": path, unit: index + 1 + (self.format == "csv")} if base == 0
                else {"file": path, "split_start_byte": base, f"{unit}_in_split": index + 1})


def file_format(source: FileSource) -> str:
    """The one format Spark reads for ``source``: its ``format``, or the extension of its path or files.

    Raises:
        ConfigError: the format cannot be told, or the files mix formats.
    """
    if source.format is not None:
        return source.format
    fmt = EXTENSIONS.get(os.path.splitext(source.path)[1].lower())
    if fmt is not None:
        return fmt
    if os.path.isdir(source.path):
        found = {EXTENSIONS[ext] for e in os.scandir(source.path)
                 if e.is_file() and not e.name.startswith((".", "_"))
                 and (ext := os.path.splitext(e.name)[1].lower()) in EXTENSIONS}
        if len(found) == 1:
            return found.pop()
    msg = (f"FileSource({source.path!r}) on Spark needs one format: Spark reads one format per source and cannot "
           f"tell it here; pass format= one of jsonl, csv, parquet")
    raise ConfigError(msg)


def _file_stream(spark: SparkSession, source: FileSource, options: Mapping[str, str]) -> tuple[DataFrame, Decoder]:
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention
    from pyspark.sql.types import StringType, StructField, StructType

    fmt = file_format(source)
    reader = spark.readStream
    path = source.path
    if os.path.isfile(path):  # Spark streams folders and globs: read the folder, keep the one file
        path, name = os.path.split(path)
        reader = reader.option("pathGlobFilter", glob.escape(name))
    elif source.format is None and os.path.isdir(path):
        # The embedded source reads only files with a known extension when no format is given.
        reader = reader.option("pathGlobFilter", "*{" + ",".join(e for e, f in EXTENSIONS.items() if f == fmt) + "}")
    meta = [F.col("_metadata.file_path").alias("src"), F.col("_metadata.file_block_start").alias("blk")]
    if fmt == "jsonl":
        df = reader.options(**options).format("text").load(path)
        return df.select("value", *meta), FileDecoder("jsonl", source.schema, ["value"])
    # Spark needs the columns up front: take them from the files present now.
    try:
        found = spark.read.format(fmt).option("header", "true").load(source.path).schema
    except Exception as exc:  # noqa: BLE001 - Spark's AnalysisException when there is no file yet
        msg = (f"FileSource({source.path!r}): Spark needs the {fmt} columns before the stream starts and found no "
               f"file to read them from ({type(exc).__name__}); put one file there first")
        raise ConfigError(msg) from exc
    if fmt == "csv":
        columns = found.fieldNames()
        schema = StructType([StructField(c, StringType()) for c in columns] + [StructField(CORRUPT, StringType())])
        df = (reader.options(header="true", enforceSchema="false", mode="PERMISSIVE",
                             columnNameOfCorruptRecord=CORRUPT, **options)
              .schema(schema).format("csv").load(path))
        return df.select(*columns, CORRUPT, *meta), FileDecoder("csv", source.schema, columns)
    df = reader.options(**options).schema(found).format("parquet").load(path)
    columns = found.fieldNames()
    return df.select(*columns, *meta), FileDecoder("parquet", source.schema, columns)


@dataclasses.dataclass
class KafkaDecoder(Decoder):
    """Rows of Spark's kafka source -> records, decoded as ``KafkaSource`` decodes them."""

    source: KafkaSource

    def runs(self, batch: pa.RecordBatch, lines: dict[tuple[str, int], int]) -> Iterator[Run]:
        from statefulstream.sources.kafka import partition_name

        src = [partition_name(t, p) for t, p in zip(batch.column("topic").to_pylist(),
                                                    batch.column("partition").to_pylist(), strict=True)]
        offsets = batch.column("offset").to_pylist()
        keys, values = batch.column("key").to_pylist(), batch.column("value").to_pylist()
        times = batch.column("timestamp_ms").to_pylist()
        decoder = self.source.decoder
        lo = 0
        for i in range(1, len(src) + 1):  # runs of consecutive offsets of one partition
            if i < len(src) and src[i] == src[lo] and offsets[i] == offsets[i - 1] + 1:
                continue
            topic, _, partition = src[lo].rpartition(":")
            where = [{"topic": topic, "partition": int(partition), "offset": off} for off in offsets[lo:i]]
            if decoder.value_format == "raw":
                records: list[Any] = [{"key": keys[j], "value": values[j], "topic": topic, "partition": int(partition),
                                       "offset": offsets[j], "timestamp": times[j]} for j in range(lo, i)]
                bad: list[tuple[int, str]] = []
            else:
                records, bad = decoder.decode_values(values[lo:i])
            dead = [DeadLetter(reason, "kafka", where[j], values[lo + j], "decode") for j, reason in bad]
            kept = sorted(set(range(i - lo)) - {j for j, _ in bad})
            if decoder.key_field is not None:
                for j in kept:
                    if isinstance(records[j], dict):
                        key = keys[lo + j]
                        records[j][decoder.key_field] = key.decode("utf-8", "backslashreplace") if key else None
            good = [records[j] for j in kept]
            if decoder.schema is not None:
                good, violations = decoder.schema.conform(good)
                dead += [DeadLetter(reason, "kafka", where[kept[j]], values[lo + kept[j]], "schema")
                         for j, reason in violations]
                rejected = {j for j, _ in violations}
                kept = [k for j, k in enumerate(kept) if j not in rejected]
            yield Run(src[lo], offsets[lo], good, dead, partial(_kafka_position, where, kept))
            lo = i


def _kafka_position(where: list[dict[str, Any]], kept: list[int], i: int) -> dict[str, Any]:
    return where[kept[i]]


def is_kafka_source(source: Source) -> bool:
    """Whether ``source`` is a ``KafkaSource`` (without importing the kafka extra when it cannot be one)."""
    module = sys.modules.get("statefulstream.sources.kafka")
    return module is not None and isinstance(source, module.KafkaSource)


def kafka_package() -> str:
    """The Maven coordinate of Spark's Kafka connector for the installed PySpark."""
    import pyspark

    version = pyspark.__version__.split(".dev")[0]
    scala = "2.13" if int(version.split(".")[0]) >= 4 else "2.12"
    return f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{version}"


def kafka_options(source: KafkaSource, max_records: int | None) -> dict[str, str]:
    """Spark kafka source options for ``source`` (client settings pass through as ``kafka.<name>``)."""
    opts = {"kafka.bootstrap.servers": source.bootstrap_servers}
    if source.pattern is not None:
        opts["subscribePattern"] = source.pattern.pattern
    else:
        opts["subscribe"] = ",".join(source.topics)
    start = source.starting_offsets
    if isinstance(start, str):
        opts["startingOffsets"] = start
    else:  # {"topic:p": offset} -> Spark's {"topic": {"p": offset}}; -2 earliest, -1 latest in both
        by_topic: dict[str, dict[str, int]] = {}
        for name, offset in start.items():
            topic, _, partition = name.rpartition(":")
            by_topic.setdefault(topic, {})[partition] = offset
        opts["startingOffsets"] = json.dumps(by_topic)
    if max_records is not None:
        opts["maxOffsetsPerTrigger"] = str(max_records)
    opts.update({f"kafka.{k}": str(v) for k, v in source.config.items()})
    return opts


def _kafka_stream(spark: SparkSession, source: KafkaSource, max_records: int | None,
                  options: Mapping[str, str]) -> tuple[DataFrame, Decoder]:
    from pyspark.sql import functions as F  # noqa: N812 - Spark's convention

    try:
        df = spark.readStream.format("kafka").options(**kafka_options(source, max_records), **options).load()
    except Exception as exc:
        if "kafka" not in str(exc).lower() or "data source" not in str(exc).lower():
            raise
        msg = (f"Spark cannot find its kafka source: the spark-sql-kafka-0-10 package is not on the cluster. Add "
               f"it: spark-submit --packages {kafka_package()} (or the session config spark.jars.packages, or "
               f"the jar in $SPARK_HOME/jars)")
        raise ConfigError(msg) from exc
    ts_ms = F.unix_millis(F.col("timestamp")).alias("timestamp_ms")
    return (df.select("key", "value", "topic", "partition", "offset", ts_ms,
                      F.concat_ws(":", "topic", "partition").alias("src"), F.col("offset").alias("blk")),
            KafkaDecoder(source))


def read_stream(spark: SparkSession, source: Source, *, max_records: int | None,
                options: Mapping[str, str]) -> tuple[DataFrame, Decoder]:
    """Open ``source`` as a streaming DataFrame and return it with its decoder.

    Raises:
        ConfigError: the source cannot be opened on this Spark (no kafka package, no format, no columns).
    """
    if is_kafka_source(source):
        return _kafka_stream(spark, source, max_records, options)  # type: ignore[arg-type]
    assert isinstance(source, FileSource)  # plan_for_spark admits only these two
    return _file_stream(spark, source, options)
