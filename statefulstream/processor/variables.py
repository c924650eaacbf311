"""``ValueState``, ``ListState``, ``MapState``: a processor's named state variables for the current key.

Each variable reads and writes the store's ``kv`` namespace through a
``Scope`` (the current key, the batch time, the counters); see ``layout`` for
the keys. A value with a TTL expires at the batch time of its last write
plus the TTL: from then on it is never returned, it is deleted when a read
meets it, and the end-of-batch cleanup (``ttl.remove_expired``) deletes the
rest; both count in ``ProcessorStats.values_removed_by_ttl``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from statefulstream.errors import ProcessorHandleError
from statefulstream.processor import layout
from statefulstream.state.codec import DEFAULT_CODEC, Codec
from statefulstream.state.kv import StagedKV


@dataclasses.dataclass
class ProcessorStats:
    """A batch's processor figures (Spark's ``TransformWithStateExec`` custom metrics)."""

    value_state_vars: int = 0
    list_state_vars: int = 0
    map_state_vars: int = 0
    deleted_state_vars: int = 0
    vars_with_ttl: int = 0
    timers_registered: int = 0
    timers_deleted: int = 0
    timers_expired: int = 0
    values_removed_by_ttl: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the figures by name."""
        return dataclasses.asdict(self)


class Scope:
    """What every variable of a processor shares during a batch: store, current key, time, counters."""

    def __init__(self, kv: StagedKV, batch_ts_ms: int, stats: ProcessorStats, codec: Codec = DEFAULT_CODEC) -> None:
        self.kv = kv
        self.now_ms = batch_ts_ms
        self.stats = stats
        self.codec = codec
        self.key: Hashable = None
        self.key_bytes: bytes | None = None

    def set_key(self, key: Hashable, key_bytes: bytes | None) -> None:
        """Make ``key`` current (``None`` bytes: no key, as in ``init``)."""
        self.key, self.key_bytes = key, key_bytes

    def current_key_bytes(self, what: str) -> bytes:
        """Return the current key's bytes.

        Raises:
            ProcessorHandleError: outside a handler (no current key).
        """
        if self.key_bytes is None:
            msg = f"{what} needs a current key: use state variables and timers in the handle_* methods, not in init"
            raise ProcessorHandleError(msg)
        return self.key_bytes

    def read(self, entry: bytes, raw: bytes | None) -> tuple[bool, Any]:
        """Return ``(live, value)`` of stored bytes; an expired value is deleted and counted."""
        if raw is None:
            return False, None
        if layout.is_expired(raw, self.now_ms):
            self.kv.delete(entry)
            self.stats.values_removed_by_ttl += 1
            return False, None
        return True, layout.decode_value(raw, self.codec)

    def write(self, entry: bytes, value: Any, ttl_ms: int | None) -> None:
        """Stage ``value`` at ``entry`` with an expiry ``ttl_ms`` after the batch time (indexed for cleanup)."""
        expiry = layout.NO_EXPIRY if ttl_ms is None else self.now_ms + ttl_ms
        self.kv.put(entry, layout.encode_value(value, expiry, self.codec))
        if ttl_ms is not None:
            self.kv.put(layout.ttl_key(expiry, entry), b"")


def _not_none(value: Any, name: str) -> None:
    if value is None:
        msg = f"state variable {name!r}: None is not a valid state value; call clear() to remove it"
        raise ProcessorHandleError(msg)


class StateVariable:
    """Base of the state variables: a name, an optional TTL, and the scope it reads and writes through.

    ``_prefix()`` is the variable's entries' prefix for the current key.
    """

    kind = ""

    def __init__(self, name: str, ttl_ms: int | None, scope: Scope) -> None:
        self.name = name
        self.ttl_ms = ttl_ms
        self._scope = scope

    def __repr__(self) -> str:
        ttl = "" if self.ttl_ms is None else f", ttl_ms={self.ttl_ms}"
        return f"{type(self).__name__}({self.name!r}{ttl})"

    def _prefix(self) -> bytes:
        return layout.entry_prefix(self.name, self._scope.current_key_bytes(f"state variable {self.name!r}"))

    def _live_entries(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        read = self._scope.read
        for entry, raw in self._scope.kv.scan(prefix):
            live, value = read(entry, raw)
            if live:
                yield entry, value

    def clear(self) -> None:
        """Remove the variable's value(s) for the current key."""
        self._scope.kv.delete_prefix(self._prefix())


class ValueState(StateVariable):
    """One value per key (Spark's ``ValueState``)."""

    kind = "value"

    def _entry(self) -> bytes:
        return self._prefix() + layout.VALUE_SUFFIX

    def exists(self) -> bool:
        """Whether the current key has a (live) value."""
        return self.get() is not None

    def get(self) -> Any:
        """Return the value, or ``None`` when absent or expired."""
        entry = self._entry()
        return self._scope.read(entry, self._scope.kv.get(entry))[1]

    def update(self, value: Any) -> None:
        """Set the value (and restart its TTL).

        Raises:
            ProcessorHandleError: ``value`` is ``None`` (use ``clear``).
        """
        _not_none(value, self.name)
        self._scope.write(self._entry(), value, self.ttl_ms)


class ListState(StateVariable):
    """A list per key; each element is its own store entry (Spark's ``ListState``)."""

    kind = "list"

    def exists(self) -> bool:
        """Whether the current key's list has a live element."""
        return next(self._live_entries(self._prefix() + layout.VALUE_SUFFIX), None) is not None

    def get(self) -> Iterator[Any]:
        """Return an iterator over the live elements in append order (empty when absent)."""
        return (value for _, value in self._live_entries(self._prefix() + layout.VALUE_SUFFIX))

    def put(self, values: Iterable[Any]) -> None:
        """Replace the list with ``values``."""
        items = list(values)
        for value in items:
            _not_none(value, self.name)
        self.clear()
        self.append_list(items)

    def append_value(self, value: Any) -> None:
        """Append one element (one store write; nothing else is rewritten)."""
        _not_none(value, self.name)
        prefix = self._prefix()
        counter = prefix + layout.COUNTER_SUFFIX
        kv = self._scope.kv
        number = layout.decode_counter(kv.get(counter))
        self._scope.write(prefix + layout.element_suffix(number), value, self.ttl_ms)
        kv.put(counter, layout.encode_counter(number + 1))

    def append_list(self, values: Iterable[Any]) -> None:
        """Append several elements."""
        for value in values:
            self.append_value(value)

    append = append_value


class MapState(StateVariable):
    """A map per key; each entry is its own store entry (Spark's ``MapState``)."""

    kind = "map"

    def _entry(self, map_key: Hashable) -> bytes:
        return self._prefix() + layout.VALUE_SUFFIX + self._scope.codec.encode_key(map_key)

    def exists(self) -> bool:
        """Whether the current key's map has a live entry."""
        return next(self._live_entries(self._prefix() + layout.VALUE_SUFFIX), None) is not None

    def get(self, map_key: Hashable) -> Any:
        """Return the value of ``map_key``, or ``None`` when absent or expired."""
        entry = self._entry(map_key)
        return self._scope.read(entry, self._scope.kv.get(entry))[1]

    def contains(self, map_key: Hashable) -> bool:
        """Whether ``map_key`` has a live value."""
        return self.get(map_key) is not None

    def put(self, map_key: Hashable, value: Any) -> None:
        """Set ``map_key``'s value (one store write; restarts that entry's TTL)."""
        _not_none(value, self.name)
        self._scope.write(self._entry(map_key), value, self.ttl_ms)

    def remove(self, map_key: Hashable) -> None:
        """Remove ``map_key`` (nothing happens when absent)."""
        self._scope.kv.delete(self._entry(map_key))

    def items(self) -> Iterator[tuple[Hashable, Any]]:
        """Return an iterator over live ``(map key, value)`` pairs in stored-key order."""
        start = len(self._prefix()) + len(layout.VALUE_SUFFIX)
        decode_key = self._scope.codec.decode_key
        return ((decode_key(entry[start:]), value)
                for entry, value in self._live_entries(self._prefix() + layout.VALUE_SUFFIX))

    def keys(self) -> Iterator[Hashable]:
        """Return an iterator over the live map keys."""
        return (k for k, _ in self.items())

    def values(self) -> Iterator[Any]:
        """Return an iterator over the live values."""
        return (v for _, v in self.items())

    # Spark's (PySpark's) spellings.
    get_value = get
    contains_key = contains
    update_value = put
    remove_key = remove
    iterator = items

