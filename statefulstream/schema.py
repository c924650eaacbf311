"""``Schema``: the fields a record must have, checked where records are decoded.

A schema is source-agnostic: ``FileSource`` applies it to JSON lines, CSV rows
and Parquet rows, and a Kafka source can apply it to decoded messages. It is
checked per batch (:meth:`Schema.conform`), so a source pays one call per
batch and the per-record work is one type check per declared field.

Rules:

* A declared field must be present and not ``None``, unless listed in
  ``optional`` (then absent or ``None`` is accepted).
* A value must have the declared type. ``int`` is accepted where ``float`` is
  declared (and converted to ``float``); ``bool`` is never accepted as a number.
* Fields that are not declared are kept as they are.
* Text sources (CSV) pass ``from_text=True``: text values are then parsed into
  ``int``, ``float`` and ``bool`` fields, and an empty text in an optional
  non-``str`` field means absent (``None``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from statefulstream.errors import ConfigError

SUPPORTED_TYPES: tuple[type, ...] = (str, int, float, bool, dict, list, datetime.datetime, object)
"""Types a field may be declared with; ``object`` accepts any non-null value.

``datetime`` fits Parquet timestamp columns; it is not parsed from text.
"""

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_PREVIEW = 60


class Schema:
    """Declared fields and their types, enforced on decoded records.

    Args:
        fields: field name -> type, one of :data:`SUPPORTED_TYPES`.
        optional: names of declared fields that may be absent or ``None``.

    Raises:
        ConfigError: a type is not supported, or an optional name is not a
            declared field.

    >>> schema = Schema({"user": str, "ts": int, "amount": float}, optional=["amount"])
    >>> schema.conform([{"user": "u1", "ts": 5, "amount": 2}, {"user": "u2"}])
    ([{'user': 'u1', 'ts': 5, 'amount': 2.0}], [(1, "missing required field 'ts'")])
    >>> schema.conform([{"user": "u1", "ts": "5"}], from_text=True)
    ([{'user': 'u1', 'ts': 5}], [])
    """

    def __init__(self, fields: Mapping[str, type], *, optional: Iterable[str] = ()) -> None:
        for name, kind in fields.items():
            if kind not in SUPPORTED_TYPES:
                names = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
                msg = f"Schema field {name!r} has type {kind!r}; supported types are {names}"
                raise ConfigError(msg)
        optional = frozenset(optional)
        unknown = sorted(optional - fields.keys())
        if unknown:
            msg = f"Schema optional={unknown} names fields that are not declared; declare them in fields first"
            raise ConfigError(msg)
        self.fields: dict[str, type] = dict(fields)
        self.optional: frozenset[str] = optional
        # (name, type, required) once, so the per-record loop does no lookups.
        self._checks = tuple((n, t, n not in optional) for n, t in self.fields.items())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n!r}: {t.__name__}" for n, t in self.fields.items())
        opt = f", optional={sorted(self.optional)}" if self.optional else ""
        return f"Schema({{{fields}}}{opt})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schema):
            return NotImplemented
        return self.fields == other.fields and self.optional == other.optional

    def conform(
        self, records: Iterable[Any], *, from_text: bool = False
    ) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """Check a batch of decoded records against the schema.

        Args:
            records: decoded records, normally dicts freshly built by the
                source. A record whose value is converted (int to float, or
                text parsed) is modified in place, so pass records you own.
            from_text: the values come from text (CSV): parse numbers and
                booleans from strings.

        Returns:
            ``(good, violations)``: the conforming records in input order, and
            ``(index in records, reason)`` for each record that does not conform.
            Every input record is in exactly one of the two.
        """
        good: list[dict[str, Any]] = []
        bad: list[tuple[int, str]] = []
        checks = self._checks
        for i, rec in enumerate(records):
            if type(rec) is not dict:
                bad.append((i, f"record must be an object with fields, got {type(rec).__name__}"))
                continue
            for name, kind, required in checks:
                value = rec.get(name)
                if type(value) is kind or (kind is object and value is not None):
                    continue
                reason = self._fix(rec, name, value, kind, required, from_text)
                if reason is not None:
                    bad.append((i, reason))
                    break
            else:
                good.append(rec)
        return good, bad

    @staticmethod
    def _fix(rec: dict[str, Any], name: str, value: Any, kind: type, required: bool, from_text: bool) -> str | None:
        """Convert ``rec[name]`` in place if allowed; return the reason it cannot be, or None."""
        if from_text and value == "" and kind is not str and not required:
            rec[name] = None
            return None
        if value is None:
            if not required:
                return None
            return f"missing required field {name!r}" if name not in rec else f"field {name!r} is null"
        if kind is float and type(value) is int:
            rec[name] = float(value)
            return None
        if isinstance(value, kind) and not isinstance(value, bool):
            return None  # a subclass (e.g. a str subclass, an OrderedDict)
        if from_text and type(value) is str and kind in (int, float, bool):
            parsed = _parse_text(value, kind)
            if parsed is not None:
                rec[name] = parsed
                return None
        preview = repr(value)
        if len(preview) > _PREVIEW:
            preview = preview[:_PREVIEW] + "..."
        return f"field {name!r} must be {kind.__name__}, got {type(value).__name__} {preview}"


def _parse_text(text: str, kind: type) -> Any:
    """Return ``text`` parsed as ``kind`` (int, float or bool), or None if it is not one."""
    text = text.strip()
    if kind is bool:
        low = text.lower()
        return True if low in _TRUE else False if low in _FALSE else None
    try:
        return kind(text)
    except ValueError:
        return None
