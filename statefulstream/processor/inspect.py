"""Read a processor's committed variables and timers by name (test kit, ``statefulstream state``).

Reads go through a ``StagedKV`` with nothing staged (between batches), so
they see exactly the committed state. Values past their TTL at ``now_ms``
are left out, as a handler would not see them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from statefulstream.processor import layout
from statefulstream.processor.timers import Timers
from statefulstream.processor.variables import ProcessorStats
from statefulstream.state.codec import DEFAULT_CODEC, Codec
from statefulstream.state.kv import StagedKV


def declared(kv: StagedKV) -> dict[str, dict[str, Any]]:
    """Return the declared variables ``{name: {"kind": "value"|"list"|"map", "ttl_ms": int | None}}``."""
    start = len(layout.VARIABLES)
    return {key[start:].decode(): dict(msgpack.unpackb(raw)) for key, raw in kv.scan(layout.VARIABLES)}


def variable(kv: StagedKV, name: str, kind: str, key: Hashable, *, now_ms: int | None = None,
             codec: Codec = DEFAULT_CODEC) -> Any:
    """Return one variable of ``key``: a value (or ``None``), a list, or a dict."""
    prefix = layout.entry_prefix(name, codec.encode_key(key)) + layout.VALUE_SUFFIX
    entries = [(k, raw) for k, raw in kv.scan(prefix) if not layout.is_expired(raw, now_ms)]
    if kind == "value":
        return next((layout.decode_value(raw, codec) for k, raw in entries if k == prefix), None)
    if kind == "list":
        return [layout.decode_value(raw, codec) for _, raw in entries]
    return {codec.decode_key(k[len(prefix):]): layout.decode_value(raw, codec) for k, raw in entries}


def key_state(kv: StagedKV, key: Hashable, *, now_ms: int | None = None,
              codec: Codec = DEFAULT_CODEC) -> dict[str, Any]:
    """Return every declared variable of ``key`` by name (absent values as ``None``, ``[]``, ``{}``)."""
    return {name: variable(kv, name, meta["kind"], key, now_ms=now_ms, codec=codec)
            for name, meta in declared(kv).items()}


def timers_of(kv: StagedKV, key: Hashable, *, codec: Codec = DEFAULT_CODEC) -> list[int]:
    """Return ``key``'s timer timestamps, ascending."""
    return Timers(kv, ProcessorStats()).of_key(codec.encode_key(key))


def all_timers(kv: StagedKV, *, codec: Codec = DEFAULT_CODEC) -> list[tuple[int, Hashable]]:
    """Return every ``(timestamp, key)`` timer in firing order."""
    return [(ts, codec.decode_key(kb)) for ts, kb in Timers(kv, ProcessorStats()).due(layout.MAX_TS)]


def keys(kv: StagedKV, *, codec: Codec = DEFAULT_CODEC) -> list[Hashable]:
    """Return every key with a stored value or a timer, without repeats (reads all state: inspection only)."""
    seen: dict[bytes, None] = {}
    for k, _ in kv.scan(layout.STATE):
        seen.setdefault(layout.split_state_key(k)[1])
    for _, key_bytes in Timers(kv, ProcessorStats()).due(layout.MAX_TS):
        seen.setdefault(key_bytes)
    return [codec.decode_key(kb) for kb in seen]
