"""JSON encoding shared by the sinks that write JSON (console, file, webhook).

orjson encodes dicts, lists, dataclasses, datetimes, enums and UUIDs natively;
``_default`` adds the rest a handler commonly yields (sets, ``Decimal``,
``bytes``). Naive datetimes are written as UTC, as ``statefulstream.timeutil``
reads them.
"""

from __future__ import annotations

import base64
import decimal
from collections.abc import Sequence
from typing import Any

import orjson

from statefulstream.errors import SinkRejectedError
from statefulstream.records import DeadLetter
from statefulstream.sink import SinkContext

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)  # a stable order, so a replayed batch writes identical bytes
        except TypeError:
            return sorted(value, key=repr)
    if isinstance(value, decimal.Decimal):
        return str(value)  # keeps every digit; a float would not
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    msg = f"{type(value).__name__} is not JSON serializable"
    raise TypeError(msg)


def dumps(value: Any) -> bytes:
    """Return the compact JSON encoding of ``value`` (no trailing newline).

    >>> import datetime
    >>> dumps({"at": datetime.datetime(2024, 5, 1, 12), "tags": {"b", "a"}})
    b'{"at":"2024-05-01T12:00:00Z","tags":["a","b"]}'

    Raises:
        TypeError: ``value`` holds something JSON cannot represent.
    """
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def encode_rows(rows: Sequence[Any], *, batch_id: int, sink: str,
                context: SinkContext | None) -> list[bytes | None]:
    """Encode each row; a row that cannot be encoded is dead-lettered and becomes ``None``.

    Args:
        rows: the batch's rows.
        batch_id: the batch, for the dead letter's position.
        sink: the sink's name, for the dead letter and messages.
        context: the sink's context; ``None`` when the sink was never opened.

    Raises:
        SinkRejectedError: a row cannot be encoded and there is no context to
            dead-letter it through (the sink was used without ``open``).
    """
    out: list[bytes | None] = []
    for index, row in enumerate(rows):
        try:
            out.append(dumps(row))
        except TypeError as exc:
            reason = f"row cannot be encoded as JSON: {exc}"
            if context is None:
                msg = f"{sink} sink: batch {batch_id} row {index}: {reason}; open() the sink to dead-letter such rows"
                raise SinkRejectedError(msg) from exc
            context.dead_letter(DeadLetter(reason=reason, source=sink, raw=repr(row), error="sink",
                                           position={"sink": sink, "batch_id": batch_id, "row": index}))
            out.append(None)
    return out
