"""``FileSource``: JSON-lines, CSV and Parquet files in a directory or glob.

Each file is a partition, named by its path; a position is a record index in
the file. For JSON lines a record is a line (every line counts, malformed or
not, so positions never shift); for CSV a record is a line after the header
(one record per line, as Spark's default ``multiLine=false``); for Parquet a
record is a row. Files are expected to be append-only: a file may grow while
it is being read, but never shrink or change what was already read.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
from collections.abc import Mapping
from typing import Any

from statefulstream.errors import ConfigError, DataLossError, SourceError
from statefulstream.records import DeadLetter, Offsets
from statefulstream.schema import Schema
from statefulstream.sources.base import ReadResult, Source, data_lost
from statefulstream.sources.file_index import FileIndex, hint, read_line_chunks, scan_lines
from statefulstream.sources.line_decode import csv_header, decode_csv, decode_jsonl, without_newline

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "parquet")
"""Formats ``FileSource`` reads; ``"json"`` and ``"ndjson"`` mean ``"jsonl"``."""

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
              ".parquet": "parquet", ".pq": "parquet"}
"""File extension -> format, used when ``format`` is not given."""

_ALIASES = {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "csv": "csv", "parquet": "parquet"}


class FileSource(Source):
    """Records from JSON-lines, CSV or Parquet files; new files are picked up on every trigger.

    ``path`` is a file, a directory (every file in it of the given format, or
    with a known extension when ``format`` is None; not recursive) or a glob
    (``"logs/*/events-*.jsonl"``, ``**`` recursive). Names starting with ``.``
    or ``_`` are skipped, so a writer can write ``.part`` files and rename
    them when done. Files are read in sorted path order.

    Offsets keep every file ever seen at its next position, so a file fully
    read is never read again and one that grows is read from where it
    stopped. The plan of each batch also keeps the byte offsets of its start
    and end lines, so a restart does not count the lines of what was read
    before.

    Data loss: a file that shrank below what was read (truncated or
    replaced) or that vanished after records of it were read stops the app
    with ``DataLossError`` naming the file, the position expected and what is
    there now, as Spark's ``failOnDataLoss``. With ``fail_on_data_loss=False``
    the source goes on with a WARNING, counted in the
    ``statefulstream_source_data_loss`` metric: a shrunk file is read again
    from its first record, a vanished one is forgotten (so deleting files
    once they are processed needs ``fail_on_data_loss=False``).

    A line that is not complete yet (no newline at the end of the file: a
    writer is still appending) is not available until it is complete. For
    JSON lines, an unterminated last line that already holds a whole JSON
    object is complete (files written without a final newline). A parquet
    file that cannot be opened yet (still being written) has no rows until it can.

    Decoding: a malformed or truncated JSON line, a JSON line that is not an
    object, a CSV line whose field count differs from the header, or a record
    violating ``schema`` becomes a :class:`DeadLetter` with
    ``position={"file": path, "line": n}`` (``"row"`` for Parquet, both
    1-based), the reason and the raw line; the other records go on. Blank lines
    are not records and are skipped. Without a schema CSV values are strings;
    with one, numbers and booleans are parsed from the text.

    Args:
        path: file, directory or glob.
        format: ``"jsonl"``, ``"csv"`` or ``"parquet"``; None infers it from
            each file's extension.
        schema: fields every record must have (see :class:`Schema`).
        fail_on_data_loss: stop when a file read before shrank or vanished
            (default True, as Spark); False goes on with a WARNING.

    Raises:
        ConfigError: unknown format, a single file of unknown extension, or
            Parquet without pyarrow installed.
        SourceError: (from ``available``/``read``) the path does not exist or
            a CSV header is unusable.
        DataLossError: (from ``available``/``read``) a file shrank or vanished
            after it was read or planned, with ``fail_on_data_loss=True``.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text('{"k": 1}\\nnot json\\n{"k": 2}\\n')
    >>> src = FileSource(d)
    >>> start, latest = src.available({})
    >>> result = src.read(start, latest)
    >>> result.records, [(dl.position["line"], dl.error) for dl in result.dead_letters]
    ([{'k': 1}, {'k': 2}], [(2, 'decode')])
    """

    name = "file"

    def __init__(self, path: str | os.PathLike[str], *, format: str | None = None,
                 schema: Schema | None = None, fail_on_data_loss: bool = True) -> None:
        self.path = os.fspath(path)
        if format is not None and format.lower() not in _ALIASES:
            msg = f"FileSource format must be one of {', '.join(FORMATS)} or None (infer); got {format!r}"
            raise ConfigError(msg)
        self.format = _ALIASES[format.lower()] if format is not None else None
        self.schema = schema
        self.fail_on_data_loss = fail_on_data_loss
        self._is_glob = glob.has_magic(self.path)
        if self.format is None and not self._is_glob and os.path.isfile(self.path):
            self._format_of(self.path, config=True)
        if self.format == "parquet":
            _pyarrow_parquet()
        self._index: dict[str, FileIndex] = {}
        self._lost: dict[str, int] = {}  # path -> the position already reported lost

    def __repr__(self) -> str:
        return f"FileSource({self.path!r}, format={self.format!r}, schema={self.schema!r})"

    def available(self, start: Offsets) -> tuple[dict[str, int], dict[str, int]]:
        """Return ``start`` with new files at 0, and the records available in every known file.

        Files already known keep their position; a file fully read costs one
        ``stat``. A file read before that shrank or vanished is data loss:
        ``DataLossError``, or with ``fail_on_data_loss=False`` a WARNING, a
        shrunk file read again from its start and a vanished one forgotten.

        Raises:
            SourceError: the path is missing.
            DataLossError: see above.
        """
        start_out = dict(start)
        latest = dict(start)
        present = set()
        for path in self._list_files():
            found = self._refresh(path)
            if found is None:
                continue  # deleted between listing and stat: vanished, below
            idx, shrunk_from = found
            present.add(path)
            count = self._records(path, idx)
            pos = start_out.setdefault(path, 0)
            # (A loss already gone past stays gone past while planning asks again from the same position.)
            if shrunk_from is not None or count < pos or (pos and self._lost.get(path) == pos):
                was = f", down from {shrunk_from} seen before" if shrunk_from is not None else ""
                self._lose(path, pos, f"has {count} records ({idx.size} bytes{was})",
                           f"{pos} records of it were already read", "read again from its first record")
                start_out[path] = 0
            latest[path] = count
        for path in sorted(start_out.keys() - present):
            if start_out[path]:
                self._lose(path, start_out[path], "is gone (deleted or renamed)",
                           f"{start_out[path]} records of it were already read", "forgotten")
            del start_out[path], latest[path]
            self._index.pop(path, None)
        return start_out, latest

    def read(self, start: Offsets, end: Offsets) -> ReadResult:
        """Read and decode the records of every file between ``start`` and ``end``.

        The same range returns the same records and dead letters every time,
        also from a new ``FileSource`` after a restart. Files are read in
        sorted path order, records in file order.

        Raises:
            DataLossError: a file no longer holds the planned range (deleted,
                truncated or replaced); with ``fail_on_data_loss=False`` what
                is left of the range is read, with a WARNING.
        """
        result = ReadResult([])
        for path in sorted(end):
            lo, hi = start.get(path, 0), end[path]
            if hi <= lo:
                continue
            found = self._refresh(path)
            if found is None:
                self._lose(path, hi, "is gone", f"the batch was planned up to record {hi}", "skipped")
                continue
            idx = found[0]
            have = self._records(path, idx)
            if have < hi:
                self._lose(path, hi, f"has {have} records", f"the batch was planned up to record {hi}",
                           "read as far as it goes")
                if have <= lo:
                    continue
                hi = have
            fmt = self._format_of(path)
            if fmt == "parquet":
                self._read_parquet(path, idx, lo, hi, result)
            else:
                self._read_text(path, fmt, idx, lo, hi, result)
        return result

    def _lose(self, path: str, position: int, now: str, expected: str, then: str) -> None:
        """Data read or planned from ``path`` up to ``position`` is gone: raise ``DataLossError``, or warn and count.

        A loss is counted once: planning may ask ``available`` again from the
        same stale position before the batch that goes past it commits.
        """
        if self._lost.get(path) == position:
            return
        what = (f"file {path!r} {now}, but {expected}: it was truncated, replaced or deleted. "
                f"FileSource needs append-only files that stay in place")
        if self.fail_on_data_loss:
            msg = (f"{what}. Restore the file to go on (a planned batch is then replayed exactly), or set "
                   f"FileSource(..., fail_on_data_loss=False) to go on without what was lost")
            raise DataLossError(msg)
        self._lost[path] = position
        data_lost(self, f"{what}; fail_on_data_loss=False, so it is {then}")

    def position_index(self, start: Offsets, end: Offsets) -> dict[str, Any]:
        """Return, per text file in ``end``, the byte offsets of its start and end lines (see ``file_index``)."""
        out: dict[str, Any] = {}
        for path, hi in end.items():
            idx = self._index.get(path)
            if idx is None or not idx.lines or self._format_of(path) == "parquet":
                continue
            skip = 1 if self._format_of(path) == "csv" else 0
            lo = min(start.get(path, 0), hi)
            if hi + skip > idx.lines:
                continue  # not counted that far (a file that shrank): nothing to remember
            out[path] = hint(path, idx, lo + skip, hi + skip)
        return out

    def restore_position_index(self, index: Mapping[str, Any]) -> None:
        """Resume the line index of each file from a plan's ``position_index``, without reading the files."""
        for path, file_hint in index.items():
            if path not in self._index:
                self._index[path] = FileIndex.from_hint(file_hint)

    # --- listing and indexing

    def _list_files(self) -> list[str]:
        """Return the matching files in sorted order."""
        if self._is_glob:
            found = [p for p in glob.glob(self.path, recursive=True) if os.path.isfile(p)]
        elif os.path.isdir(self.path):
            found = [os.path.join(self.path, e.name) for e in os.scandir(self.path) if e.is_file()]
        elif os.path.isfile(self.path):
            return [self.path]
        else:
            msg = f"FileSource path {self.path!r} does not exist; create the directory or fix the path"
            raise SourceError(msg)
        return sorted(p for p in found if not os.path.basename(p).startswith((".", "_"))
                      and (self.format is not None or os.path.splitext(p)[1].lower() in EXTENSIONS))

    def _format_of(self, path: str, *, config: bool = False) -> str:
        if self.format is not None:
            return self.format
        fmt = EXTENSIONS.get(os.path.splitext(path)[1].lower())
        if fmt is None:
            msg = (f"FileSource cannot tell the format of {path!r} from its extension; pass "
                   f"format= one of {', '.join(FORMATS)}")
            raise ConfigError(msg) if config else SourceError(msg)
        if fmt == "parquet":
            _pyarrow_parquet()
        return fmt

    def _records(self, path: str, idx: FileIndex) -> int:
        """Return the number of records (positions) the index holds for ``path``."""
        if self._format_of(path) == "csv":
            return max(0, idx.lines - 1)  # the first line is the header
        return idx.lines

    def _refresh(self, path: str) -> tuple[FileIndex, int | None] | None:
        """Bring the index of ``path`` up to date, reading only bytes not seen yet.

        Returns ``(index, None)``; ``(index, bytes seen before)`` when the file
        shrank (it is then counted again from the start); ``None`` if it is gone.
        """
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            return None
        idx = self._index.setdefault(path, FileIndex())
        if size == idx.size:
            return idx, None
        shrunk_from = None
        if size < idx.scanned:
            shrunk_from = idx.scanned
            idx = self._index[path] = FileIndex()
        fmt = self._format_of(path)
        if fmt == "parquet":
            _index_parquet(path, idx, size)
        else:
            scan_lines(path, idx, accept_tail=fmt == "jsonl")
            if fmt == "csv" and idx.header is None and idx.lines:
                idx.header = csv_header(path)
        return idx, shrunk_from

    # --- decoding

    def _read_text(self, path: str, fmt: str, idx: FileIndex, lo: int, hi: int, out: ReadResult) -> None:
        skip = 1 if fmt == "csv" else 0  # the header line
        # Decoded chunk by chunk: the batch's raw lines are never all in memory next to its records.
        for first, lines in read_line_chunks(path, idx, lo + skip, hi + skip):
            self._decode_text(path, fmt, idx, first, lines, out)

    def _decode_text(self, path: str, fmt: str, idx: FileIndex, first: int, lines: list[bytes],
                     out: ReadResult) -> None:
        """Decode ``lines`` (physical lines from ``first``, 0-based, with their newlines) into ``out``; bad ones
        become dead letters, holding the line without its newline."""
        if fmt == "jsonl":
            records, where, dead = decode_jsonl(lines)
        else:
            assert idx.header is not None  # a CSV with records has a header line
            records, where, dead = decode_csv(lines, idx.header)
        letters = [DeadLetter(reason, self.name, {"file": path, "line": first + i + 1},
                              without_newline(lines[i]), "decode")
                   for i, reason in dead]
        if self.schema is not None:
            records, bad = self.schema.conform(records, from_text=fmt == "csv")
            if bad:
                letters += [DeadLetter(reason, self.name, {"file": path, "line": first + where[j] + 1},
                                       without_newline(lines[where[j]]), "schema") for j, reason in bad]
                letters.sort(key=lambda dl: dl.position["line"])
                dropped = {j for j, _ in bad}
                where = [w for j, w in enumerate(where) if j not in dropped]
        line0 = first + 1
        out.add(records, lambda i: {"file": path, "line": line0 + where[i]})
        out.dead_letters += letters

    def _read_parquet(self, path: str, idx: FileIndex, lo: int, hi: int, out: ReadResult) -> None:
        starts = idx.group_starts
        g0 = bisect.bisect_right(starts, lo) - 1
        g1 = bisect.bisect_left(starts, hi)
        pq = _pyarrow_parquet()
        table = pq.ParquetFile(path).read_row_groups(list(range(g0, g1)))
        rows = table.slice(lo - starts[g0], hi - lo).to_pylist()
        row0 = lo + 1
        if self.schema is None:
            out.add(rows, lambda i: {"file": path, "row": row0 + i})
            return
        good, bad = self.schema.conform(rows)
        dropped = {i for i, _ in bad}
        where = [i for i in range(len(rows)) if i not in dropped] if bad else range(len(rows))
        out.add(good, lambda i: {"file": path, "row": row0 + where[i]})
        out.dead_letters += [DeadLetter(reason, self.name, {"file": path, "row": lo + i + 1}, rows[i], "schema")
                             for i, reason in bad]


def _index_parquet(path: str, idx: FileIndex, size: int) -> None:
    """Record the row groups of a parquet file; one that cannot be opened yet has no rows."""
    pq = _pyarrow_parquet()
    idx.size = size
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        logger.warning("parquet file %r cannot be opened yet (%s); it is read once it is complete", path, exc)
        idx.lines, idx.group_starts = 0, [0]
        return
    starts = [0]
    for g in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(g).num_rows)
    idx.group_starts = starts
    idx.lines = starts[-1]


def _pyarrow_parquet() -> Any:
    """Return ``pyarrow.parquet``, imported on first use (pyarrow is an optional extra)."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        msg = "reading Parquet files needs pyarrow: pip install 'statefulstream[parquet]'"
        raise ConfigError(msg) from exc
    return pq
