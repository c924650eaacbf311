"""How a stateful processor's variables and timers are laid out in the store's ``kv`` namespace.

Every key starts with a one-byte tag; integers are fixed-width big-endian
(timestamps shifted by 2**63 so negative ones sort first), names and group
keys are length-prefixed so no key's bytes are a prefix of another's::

    V <name>                                   -> msgpack {"kind", "ttl_ms"}   declared variables
    S <name> <key> 01                          -> expiry | value               a ValueState
    S <name> <key> 00                          -> next element number          a ListState's counter
    S <name> <key> 01 <element number>         -> expiry | value               a ListState element
    S <name> <key> 01 <map key>                -> expiry | value               a MapState entry
    T <timestamp> <key>                        -> ''                           timers by time
    K <key> <timestamp>                        -> ''                           timers by key
    X <expiry> <S-key>                         -> ''                           TTL index

``<key>`` is the group key as ``Codec.encode_key`` writes it, ``<map key>``
likewise; ``expiry`` is 8 bytes, -1 when the value has no TTL. So a list
append or a map put writes one entry, a variable of one key is one prefix
scan, due timers are one range scan from the start of ``T``, and values past
their TTL are one range scan from the start of ``X``.
"""

from __future__ import annotations

import struct
from typing import Any

from statefulstream.state.codec import DEFAULT_CODEC, Codec

VARIABLES = b"V"
STATE = b"S"
TIMERS_BY_TIME = b"T"
TIMERS_BY_KEY = b"K"
TTL_INDEX = b"X"
NO_EXPIRY = -1
"""The expiry of a value without TTL."""

VALUE_SUFFIX = b"\x01"
"""After a variable's key prefix: where values, list elements and map entries start."""
COUNTER_SUFFIX = b"\x00"
"""After a list's key prefix: its next element number."""

_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_LEN16 = struct.Struct(">H")
_LEN32 = struct.Struct(">I")
_SHIFT = 1 << 63
TS_BYTES = 8
MAX_TS = _SHIFT - 2
"""The largest timestamp a due-timer scan can bound (``ts_bytes(MAX_TS + 1)`` still fits)."""


def ts_bytes(ms: int) -> bytes:
    """Return the 8 bytes of a timestamp that sort as the numbers do.

    >>> ts_bytes(-1) < ts_bytes(0) < ts_bytes(1)
    True
    """
    return _U64.pack(ms + _SHIFT)


def ts_from(data: bytes, offset: int = 0) -> int:
    """Return the timestamp of ``ts_bytes`` output found at ``offset``."""
    value: int = _U64.unpack_from(data, offset)[0]
    return value - _SHIFT


def length_prefixed(data: bytes) -> bytes:
    """Return ``data`` after its 4-byte length (group keys)."""
    return _LEN32.pack(len(data)) + data


def variable_prefix(name: str) -> bytes:
    """Return the prefix of every entry of variable ``name`` (all keys)."""
    raw = name.encode()
    return STATE + _LEN16.pack(len(raw)) + raw


def entry_prefix(name: str, key_bytes: bytes) -> bytes:
    """Return the prefix of variable ``name``'s entries for one group key."""
    return variable_prefix(name) + length_prefixed(key_bytes)


def split_state_key(data: bytes) -> tuple[str, bytes, bytes]:
    """Return ``(variable name, group key bytes, suffix)`` of an ``S`` key."""
    (name_len,) = _LEN16.unpack_from(data, 1)
    name = data[3:3 + name_len].decode()
    at = 3 + name_len
    (key_len,) = _LEN32.unpack_from(data, at)
    at += 4
    return name, data[at:at + key_len], data[at + key_len:]


def encode_value(value: Any, expiry_ms: int, codec: Codec = DEFAULT_CODEC) -> bytes:
    """Return the stored bytes of a value and its expiry (``NO_EXPIRY`` without TTL)."""
    return _I64.pack(expiry_ms) + codec.encode(value)


def value_expiry(raw: bytes) -> int:
    """Return the expiry of stored value bytes."""
    expiry: int = _I64.unpack_from(raw)[0]
    return expiry


def is_expired(raw: bytes, now_ms: int | None) -> bool:
    """Whether stored value bytes are past their TTL at ``now_ms`` (``None``: never)."""
    expiry = value_expiry(raw)
    return now_ms is not None and expiry != NO_EXPIRY and expiry <= now_ms


def decode_value(raw: bytes, codec: Codec = DEFAULT_CODEC) -> Any:
    """Return the value of stored value bytes."""
    return codec.decode(raw[TS_BYTES:])


def element_suffix(number: int) -> bytes:
    """Return the suffix of a list element (numbers keep append order)."""
    return VALUE_SUFFIX + _U64.pack(number)


def encode_counter(number: int) -> bytes:
    """Return the stored bytes of a list's next element number."""
    return _U64.pack(number)


def decode_counter(raw: bytes | None) -> int:
    """Return a list's next element number (0 for a list never appended to)."""
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def timer_by_time(ts: int, key_bytes: bytes) -> bytes:
    """Return the ``T`` key of a timer."""
    return TIMERS_BY_TIME + ts_bytes(ts) + key_bytes


def timer_by_key(key_bytes: bytes, ts: int) -> bytes:
    """Return the ``K`` key of a timer."""
    return TIMERS_BY_KEY + length_prefixed(key_bytes) + ts_bytes(ts)


def ttl_key(expiry_ms: int, state_key: bytes) -> bytes:
    """Return the TTL-index key of an ``S`` entry that expires at ``expiry_ms``."""
    return TTL_INDEX + ts_bytes(expiry_ms) + state_key
