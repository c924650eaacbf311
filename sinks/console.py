"""``ConsoleSink``: prints each batch's rows, for demos and debugging."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TextIO

from statefulstream.errors import ConfigError
from statefulstream.json_rows import dumps, encode_rows
from statefulstream.sink import Sink, SinkContext

ConsoleFormat = Literal["json", "table"]


class ConsoleSink(Sink):
    """Prints rows to a text stream, each batch prefixed with its batch id.

    ``format="json"`` prints one JSON line per row (``[batch 3] {"user":"a"}``);
    ``format="table"`` prints a header line and a compact, column-aligned table
    whose columns are the union of the rows' keys (a row that is not a mapping
    is shown in a ``value`` column). A replayed batch is printed again: the
    console is a log, not a table, so it is idempotent only to a reader who
    keys by batch id.

    >>> import io
    >>> out = io.StringIO()
    >>> ConsoleSink(out).write(3, [{"user": "a", "n": 2}])
    >>> print(out.getvalue(), end="")
    [batch 3] {"user":"a","n":2}

    Args:
        stream: where to print; ``None`` means ``sys.stdout`` at write time
            (so redirection and test capture work).
        format: ``"json"`` or ``"table"``.
        max_rows: print at most this many rows per batch and say how many were
            left out; ``None`` prints all.

    Raises:
        ConfigError: ``format`` or ``max_rows`` is invalid.
    """

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, format: ConsoleFormat = "json",  # noqa: A002
                 max_rows: int | None = None) -> None:
        if format not in ("json", "table"):
            msg = f"ConsoleSink format must be 'json' or 'table'; got {format!r}"
            raise ConfigError(msg)
        if max_rows is not None and max_rows < 1:
            msg = f"ConsoleSink max_rows must be a positive number or None; got {max_rows!r}"
            raise ConfigError(msg)
        self._stream = stream
        self._format = format
        self._max_rows = max_rows
        self._context: SinkContext | None = None

    def open(self, context: SinkContext) -> None:
        """Remember the context (for rows that cannot be encoded)."""
        self._context = context

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        """Print the rows of ``batch_id``; rows that cannot be encoded are dead-lettered."""
        shown = rows if self._max_rows is None else rows[: self._max_rows]
        if self._format == "json":
            encoded = encode_rows(shown, batch_id=batch_id, sink=self.name, context=self._context)
            lines = [f"[batch {batch_id}] {line.decode()}" for line in encoded if line is not None]
        else:
            lines = [f"[batch {batch_id}] {len(rows)} row(s)", *_table(shown)]
        if len(shown) < len(rows):
            lines.append(f"[batch {batch_id}] ... {len(rows) - len(shown)} more row(s) not shown")
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return dumps(value).decode()
    except TypeError:
        return repr(value)


def _record(row: Any) -> dict[str, Any]:
    """Return the row as column -> value: mappings and dataclasses by field, anything else as ``value``."""
    if isinstance(row, Mapping):
        return {str(k): v for k, v in row.items()}
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    return {"value": row}


def _table(rows: Sequence[Any]) -> list[str]:
    """Format rows as aligned columns: the union of keys, in first-seen order."""
    records = [_record(row) for row in rows]
    columns = list(dict.fromkeys(col for record in records for col in record))
    if not columns:
        return []
    cells = [[_cell(record.get(col, "")) for col in columns] for record in records]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return [line(columns), "-+-".join("-" * w for w in widths), *map(line, cells)]
