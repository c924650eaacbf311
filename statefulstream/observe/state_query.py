"""``GET /state/{key}`` and ``GET /state?prefix=&limit=``: committed state as JSON, read-only.

Reads go through ``StateStore.committed_view``: a snapshot of the last
committed batch taken without any lock of the batch loop, so a query never
waits for a batch and never sees its uncommitted changes.

Key URL forms (one path segment, percent-encoded):

* a string key is the text itself: ``/state/alice``, ``/state/a%2Fb`` for ``"a/b"``;
* any other key is ``~`` followed by its JSON: ``/state/~42``, ``/state/~null``,
  ``/state/~true``, ``/state/~1.5``; a composite (tuple) key is a JSON array,
  ``/state/~%5B%22eu%22%2C42%5D`` (``~["eu",42]``) for ``("eu", 42)``; a string
  that starts with ``~`` (or the empty string) is written as JSON too:
  ``/state/~%22~x%22``, ``/state/~%22%22``.

>>> parse_key("alice"), parse_key("~42"), parse_key("~%5B%22eu%22%2C42%5D"), parse_key("~%22~x%22")
('alice', 42, ('eu', 42), '~x')
>>> key_url(("eu", 42)), key_url("a/b"), key_url("~x")
('~%5B%22eu%22%2C42%5D', 'a%2Fb', '~%22~x%22')
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Hashable
from typing import Any

import orjson

from statefulstream.errors import StateError
from statefulstream.json_rows import dumps
from statefulstream.records import NO_TIMEOUT_MS
from statefulstream.state.store import CommittedView, StateRow
from statefulstream.timeutil import format_ms

DEFAULT_LIMIT = 100
"""Rows a listing returns unless ``limit`` says otherwise."""

MAX_LIMIT = 1000
"""Most rows one listing returns."""

TYPED_MARK = "~"
"""Starts the JSON form of a key in a URL."""

Response = tuple[int, bytes]
"""``(HTTP status, JSON body)``."""


class KeySyntaxError(ValueError):
    """A ``/state/...`` path or query that does not follow the documented forms (HTTP 400)."""


def _tuples(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        raise KeySyntaxError("a JSON object is not a group key; composite keys are JSON arrays")
    return value  # type: ignore[no-any-return]  # JSON scalars are hashable


def parse_key(segment: str) -> Hashable:
    """Return the group key of a percent-encoded path segment (see the module docstring).

    Raises:
        KeySyntaxError: empty, an unencoded ``/``, bad percent-encoding, bad JSON after ``~``, or a JSON object.
    """
    if not segment:
        raise KeySyntaxError("empty key: use /state/KEY, or /state?prefix=...&limit=... to list keys")
    if "/" in segment:
        raise KeySyntaxError("a key is one path segment: percent-encode '/' as %2F")
    try:
        text = urllib.parse.unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise KeySyntaxError(f"the key is not percent-encoded UTF-8: {exc}") from exc
    if not text.startswith(TYPED_MARK):
        return text
    try:
        return _tuples(json.loads(text[len(TYPED_MARK):]))
    except json.JSONDecodeError as exc:
        msg = (f"after '~' a key is JSON (42, null, true, \"text\", [\"eu\", 42] for a composite key); "
               f"{text[len(TYPED_MARK):]!r} is not: {exc.msg} at column {exc.colno}")
        raise KeySyntaxError(msg) from exc


def _json_form(key: Hashable) -> Any:
    return [_json_form(k) for k in key] if isinstance(key, tuple) else key


def key_url(key: Hashable) -> str | None:
    """Return the URL form of ``key`` (the segment after ``/state/``), or ``None`` if it has none."""
    if isinstance(key, str) and key and not key.startswith(TYPED_MARK):
        return urllib.parse.quote(key, safe="")
    try:
        text = json.dumps(_json_form(key), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return None  # e.g. a datetime key: list it with a prefix query instead
    return urllib.parse.quote(TYPED_MARK + text, safe="~")


def _json(body: dict[str, Any]) -> bytes:
    try:
        return dumps(body) + b"\n"
    except TypeError:  # a registered type in state: show its repr rather than fail the query
        return orjson.dumps(body, default=repr, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def _error(code: int, message: str, **extra: Any) -> Response:
    return code, _json({"error": message, **extra})


def _row(key: Hashable, row: StateRow) -> dict[str, Any]:
    timeout = None if row.timeout_ms == NO_TIMEOUT_MS else row.timeout_ms
    return {"key": _json_form(key), "url": key_url(key), "value": row.value, "timeout_ms": timeout,
            "timeout": format_ms(timeout)}


def _limit(values: list[str]) -> int:
    text = values[-1] if values else str(DEFAULT_LIMIT)
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise KeySyntaxError(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {text!r}")
    return int(text)


class StateQueries:
    """Answers ``/state`` requests from committed views.

    Args:
        view: returns a view of the committed state (``StateStore.committed_view``
            of the running store), or ``None`` while no store is open.
    """

    def __init__(self, view: Callable[[], CommittedView | None]) -> None:
        self._view = view

    def answer(self, path: str, query: str) -> Response:
        """Answer ``GET path?query`` where ``path`` is ``/state`` or ``/state/...`` (raw, still percent-encoded)."""
        try:
            if path in ("/state", "/state/"):
                return self._list(query)
            return self._get(path[len("/state/"):], query)
        except KeySyntaxError as exc:
            return _error(400, str(exc))

    def _open(self) -> CommittedView | Response:
        try:
            view = self._view()
        except StateError as exc:
            return _error(503, str(exc))
        if view is None:
            return _error(503, "the app's state store is not open (the app is starting or has stopped)")
        return view

    def _get(self, segment: str, query: str) -> Response:
        if query:
            raise KeySyntaxError("/state/KEY takes no query parameters")
        key = parse_key(segment)
        view = self._open()
        if not isinstance(view, CommittedView):
            return view
        row = view.get(key)
        if row is None:
            return _error(404, f"no committed state for key {key!r} (as of batch {view.batch_id})",
                          key=_json_form(key), batch_id=view.batch_id)
        return 200, _json({**_row(key, row), "batch_id": view.batch_id})

    def _list(self, query: str) -> Response:
        try:
            params = urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=bool(query),
                                           errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeySyntaxError(f"bad query string {query!r}: {exc}") from exc
        unknown = sorted(set(params) - {"prefix", "limit"})
        if unknown:
            raise KeySyntaxError(f"unknown query parameter(s) {unknown}: /state takes prefix and limit")
        prefix = params.get("prefix", [""])[-1] or None
        limit = _limit(params.get("limit", []))
        view = self._open()
        if not isinstance(view, CommittedView):
            return view
        rows = view.scan(prefix, limit + 1)  # one more tells whether the listing was cut
        return 200, _json({"batch_id": view.batch_id, "prefix": prefix, "limit": limit,
                           "truncated": len(rows) > limit, "rows": [_row(k, r) for k, r in rows[:limit]]})
