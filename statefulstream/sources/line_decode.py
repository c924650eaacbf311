"""Decoding the lines of JSON-lines and CSV files into records, one record per line.

Both decoders take lines as ``FileSource`` reads them, each ending in its
newline except perhaps the file's last (``decode_jsonl`` takes lines without
newlines too), and return ``(records, line index of each record, (line index,
reason) of each bad line)``: the fast path decodes a whole batch in one
pass; only a batch holding a bad or blank line is decoded line by line to
find which. Blank lines are not records and not errors.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from operator import countOf
from typing import Any

import orjson

from statefulstream.errors import SourceError


def decode_jsonl(lines: list[bytes]) -> tuple[list[Any], Sequence[int], list[tuple[int, str]]]:
    """Decode JSON lines into ``(records, line index of each record, (line index, reason) of bad lines)``."""
    loads = orjson.loads
    try:
        records = list(map(loads, lines))
    except orjson.JSONDecodeError:
        records = None
    if records is not None and countOf(map(type, records), dict) == len(records):  # C-level passes
        return records, range(len(lines)), []
    # Slow path, only for a batch holding a bad or blank line: find which.
    records, where, dead = [], [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = loads(without_newline(line))  # as the line reads: the newline would change orjson's reason
        except orjson.JSONDecodeError as exc:
            dead.append((i, f"line is truncated or not valid JSON: {exc}"))
            continue
        if type(rec) is not dict:
            dead.append((i, f"line is a JSON {type(rec).__name__}, not an object"))
            continue
        records.append(rec)
        where.append(i)
    return records, where, dead


def decode_csv(lines: list[bytes], header: list[str]) -> tuple[list[Any], Sequence[int], list[tuple[int, str]]]:
    """Decode CSV lines, one record per line, into the same triple as :func:`decode_jsonl`."""
    width = len(header)
    try:
        text = b"".join(lines).decode("utf-8")
        texts = text.split("\n")
        if text.endswith("\n"):
            texts.pop()  # after the last newline: not a line
        reader = csv.reader(texts, strict=True)
        rows: list[list[str]] | None = list(reader)
    except (UnicodeDecodeError, csv.Error):
        rows = None
    # Each row must come from exactly one line, or positions would depend on where a batch was cut.
    if rows is not None and len(rows) == len(lines) and all(len(r) == width for r in rows):
        return [dict(zip(header, r, strict=True)) for r in rows], range(len(lines)), []
    records, where, dead = [], [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = next(csv.reader([without_newline(line).decode("utf-8")], strict=True))
        except UnicodeDecodeError as exc:
            dead.append((i, f"line is not valid UTF-8: {exc}"))
            continue
        except csv.Error as exc:
            dead.append((i, f"line is not one CSV record (an unclosed quote?): {exc}"))
            continue
        if len(row) != width:
            dead.append((i, f"line has {len(row)} fields but the header has {width}"))
            continue
        records.append(dict(zip(header, row, strict=True)))
        where.append(i)
    return records, where, dead


def without_newline(line: bytes) -> bytes:
    """A line as the file holds it, without the newline that ends it."""
    return line[:-1] if line.endswith(b"\n") else line


def csv_header(path: str) -> list[str]:
    """Return the column names from the first line of a CSV file."""
    with open(path, "rb") as f:
        first = f.readline()
    try:
        header = next(csv.reader([first.decode("utf-8-sig")], strict=True))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        msg = f"CSV file {path!r} has no usable header line ({exc}); its first line must name the columns"
        raise SourceError(msg) from exc
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if not header or "" in header or dupes:
        msg = f"CSV file {path!r}: header {header!r} has empty or repeated column names {dupes}; name each column once"
        raise SourceError(msg)
    return header
