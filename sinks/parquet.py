"""``ParquetFileSink``: one Parquet file per batch (and partition), atomic, optionally announced on Kafka.

The writing half of "streaming over the data lake": a loader or an app writes
batches as Parquet files and publishes each file's path to a topic, which
``FilePathTopicSource`` reads (docs/kafka.md, "Streaming over the data lake").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from statefulstream.errors import ConfigError, SinkError
from statefulstream.sink import Sink, SinkContext

logger = logging.getLogger(__name__)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - pyarrow is in the parquet extra
        msg = "ParquetFileSink needs pyarrow: pip install 'statefulstream[parquet]'"
        raise ConfigError(msg) from exc
    return pa, pq


class ParquetFileSink(Sink):
    """Writes each batch as ``<directory>/[<k>=<v>/...]part-<batch_id:08d>.parquet``.

    Every file is written to a hidden temporary file (``.part-...``, which
    ``FileSource`` skips) in its final directory, fsynced and renamed, so a
    reader sees no file or the whole file. A replayed batch id rewrites the
    same names with the same rows: the sink is idempotent per batch id. A
    batch without rows writes nothing.

    Args:
        directory: the table's root directory; created if missing.
        partition_by: row fields to partition by, Hive style
            (``country=FR/day=2024-05-01/``); each partition of a batch is its
            own file. The partition fields stay in the rows too, so a reader
            of one file needs no path parsing.
        publish_to: a sink (normally a :class:`statefulstream.sinks.kafka.KafkaSink` on the
            path topic) that receives, after the files of a batch are in
            place, one row per file: ``{"path", "batch_id", "rows",
            "partition"}`` with ``path`` absolute. With a ``KafkaSink`` the
            announcements are exactly once as well.
        compression: Parquet codec (``"snappy"``, ``"zstd"``, ``"none"``).

    Raises:
        SinkError: (from ``write``) the rows cannot form one Parquet table
            (a field with conflicting types), or a row lacks a ``partition_by`` field.

    >>> import tempfile
    >>> sink = ParquetFileSink(tempfile.mkdtemp(), partition_by=["country"])
    >>> sink.write(3, [{"country": "FR", "n": 1}, {"country": "DE", "n": 2}])
    >>> sorted(p.relative_to(sink.directory).as_posix() for p in sink.directory.rglob("*.parquet"))
    ['country=DE/part-00000003.parquet', 'country=FR/part-00000003.parquet']
    """

    name = "parquet"

    def __init__(self, directory: str | os.PathLike[str], *, partition_by: Sequence[str] | None = None,
                 publish_to: Sink | None = None, compression: str = "snappy") -> None:
        _pyarrow()
        self.directory = Path(directory).absolute()
        self.partition_by = list(partition_by or [])
        self.publish_to = publish_to
        self.compression = compression

    def __repr__(self) -> str:
        return f"ParquetFileSink({str(self.directory)!r}, partition_by={self.partition_by!r})"

    def open(self, context: SinkContext) -> None:
        """Create the directory and open the publishing sink."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.publish_to is not None:
            self.publish_to.open(context)

    def close(self) -> None:
        """Close the publishing sink. Idempotent."""
        if self.publish_to is not None:
            self.publish_to.close()

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Write the batch's files (one per partition), then announce them to ``publish_to``."""
        if not rows:
            return
        written = [self._write_file(batch_id, part, part_rows) for part, part_rows in self._split(rows).items()]
        if self.publish_to is not None:
            self.publish_to.write(batch_id, [{"path": str(path), "batch_id": batch_id, "rows": n,
                                              "partition": dict(part)} for path, part, n in written])

    def _split(self, rows: Sequence[Any]) -> dict[tuple[tuple[str, str], ...], list[Any]]:
        """Group rows by their partition values, keeping row order; one group without ``partition_by``."""
        if not self.partition_by:
            return {(): list(rows)}
        groups: dict[tuple[tuple[str, str], ...], list[Any]] = {}
        for row in rows:
            try:
                part = tuple((f, str(row[f])) for f in self.partition_by)
            except (KeyError, TypeError) as exc:
                msg = (f"ParquetFileSink {self.directory}: row {row!r} has no partition field {exc}; every row "
                       f"needs the fields {self.partition_by}")
                raise SinkError(msg) from exc
            groups.setdefault(part, []).append(row)
        return dict(sorted(groups.items()))

    def _write_file(self, batch_id: int, part: tuple[tuple[str, str], ...],
                    rows: list[Any]) -> tuple[Path, tuple[tuple[str, str], ...], int]:
        pa, pq = _pyarrow()
        folder = self.directory.joinpath(*(f"{k}={v}" for k, v in part))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{batch_id:08d}.parquet"
        tmp = folder / f".{final.name}.tmp"
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, AttributeError) as exc:
            msg = (f"ParquetFileSink {self.directory}: batch {batch_id} rows do not form one table ({exc}); "
                   f"rows must be dicts whose fields keep one type")
            raise SinkError(msg) from exc
        with open(tmp, "wb") as handle:
            pq.write_table(table, handle, compression=self.compression)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        logger.debug("ParquetFileSink wrote %s (%d rows)", final, len(rows))
        return final, part, len(rows)
