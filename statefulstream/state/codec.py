"""msgpack encoding of state values, group keys and timer-index keys.

State is data, never code: values are msgpack (no pickle), so a checkpoint
can be read by any version of the app and cannot execute anything when
opened. Types msgpack lacks travel as msgpack *ext* records, handled in a
hook that runs only for those types, so plain dicts/lists/numbers/strings
cost nothing extra.

Supported out of the box: ``None``, ``bool``, ``int`` (64-bit), ``float``,
``str``, ``bytes``, ``list``, ``dict`` (any hashable supported key),
``tuple`` (decoded as ``tuple``), ``set``, ``frozenset``, ``datetime``
(naive or aware; ``ZoneInfo`` zones keep their name, other zones decode as a
fixed-offset ``timezone``), ``date``, ``time``, ``timedelta``, ``Decimal``,
``UUID``. Subclasses of ``dict``/``list``/``str``/``int``/``float`` are stored
as their base type.

Other classes, dataclasses included, are registered by the user::

    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Session:
    ...     user: str
    ...     count: int
    >>> codec = Codec()
    >>> codec.register_type(Session)          # dataclass: fields as a dict
    >>> codec.decode(codec.encode(Session("ann", 3)))
    Session(user='ann', count=3)

``register_type(cls, encode, decode)`` takes any pair of functions to and
from a msgpack-able value; the type is stored under a stable name (default
``module.QualName``), so renaming a class needs ``name=`` to keep old
checkpoints readable. The module-level :func:`register_type` registers on
:data:`DEFAULT_CODEC`, the codec stores use unless given another.

Group keys (``str``, ``int``, ``None``, ``tuple`` of those, ...) are encoded
with :meth:`Codec.encode_key` and decoded back with :meth:`Codec.decode_key`.
Keys equal in Python but of different types (``1`` and ``1.0``) are distinct
rows. The timer index's keys are built in :mod:`statefulstream.state.timers`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import uuid
import zoneinfo
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import msgpack  # type: ignore[import-untyped]

from statefulstream.errors import ConfigError, StateCorruptedError, StateError

# Ext type codes are part of the checkpoint format: never renumber them.
_EXT_TUPLE = 1
_EXT_SET = 2
_EXT_FROZENSET = 3
_EXT_DATETIME = 4
_EXT_DATE = 5
_EXT_TIME = 6
_EXT_TIMEDELTA = 7
_EXT_DECIMAL = 8
_EXT_UUID = 9
_EXT_REGISTERED = 10



class StateEncodeError(StateError, TypeError):
    """A state value or key holds a type the codec cannot store.

    Operator action: keep only supported types in state, or register the
    class with ``statefulstream.state.codec.register_type``.
    """


@dataclasses.dataclass(frozen=True)
class _Registered:
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _tz_state(tz: _dt.tzinfo, value: _dt.datetime) -> Any:
    """Return what identifies a zone: its IANA name if it has one, else its UTC offset in µs."""
    if isinstance(tz, zoneinfo.ZoneInfo):
        return tz.key
    offset = value.utcoffset()
    assert offset is not None  # aware datetimes always have an offset
    return offset // _dt.timedelta(microseconds=1)


def _tz_from_state(state: Any) -> _dt.tzinfo:
    if isinstance(state, str):
        return zoneinfo.ZoneInfo(state)
    if state == 0:
        return _dt.timezone.utc
    return _dt.timezone(_dt.timedelta(microseconds=state))


class Codec:
    """Encodes state values and group keys to bytes and back.

    Not thread-safe (it reuses msgpack packers); give each thread its own
    store. Decoding never imports or runs code named by the data: a
    registered name that is not registered in this process is an error.
    """

    def __init__(self) -> None:
        self._by_class: dict[type, _Registered] = {}
        self._by_name: dict[str, _Registered] = {}
        # strict_types sends tuples (and subclasses) to the hook, so tuples round-trip.
        self._value_packer = msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)
        self._key_packer = msgpack.Packer(default=self._default, use_bin_type=True)
        # The packers' own methods, for hot paths: msgpack's errors unwrapped (encode/encode_key say what was wrong).
        self.pack_value: Callable[[Any], bytes] = self._value_packer.pack
        self.pack_key: Callable[[Hashable], bytes] = self._key_packer.pack

    def register_type(self, cls: type, encode: Callable[[Any], Any] | None = None,
                      decode: Callable[[Any], Any] | None = None, *, name: str | None = None) -> None:
        """Teach the codec a class.

        Args:
            cls: the class (exact type; subclasses need their own registration).
            encode: returns a msgpack-able value for an instance. Defaults, for a
                dataclass, to its fields as a dict.
            decode: builds an instance back from that value. Defaults, for a
                dataclass, to ``cls(**fields)``.
            name: the stable name stored with each value (default ``module.QualName``).

        Raises:
            ConfigError: ``encode``/``decode`` missing for a non-dataclass, or the
                name is already taken by another class.
        """
        if encode is None or decode is None:
            if not dataclasses.is_dataclass(cls):
                msg = (f"register_type({cls.__qualname__}): give encode= and decode= functions "
                       "(only dataclasses have a default encoding)")
                raise ConfigError(msg)
            field_names = [f.name for f in dataclasses.fields(cls)]
            encode = encode or (lambda obj: {n: getattr(obj, n) for n in field_names})
            decode = decode or (lambda data: cls(**data))
        name = name or f"{cls.__module__}.{cls.__qualname__}"
        taken = self._by_name.get(name)
        if taken is not None and self._by_class.get(cls) is not taken:
            msg = f"register_type({cls.__qualname__}): the name {name!r} is already registered for another class"
            raise ConfigError(msg)
        entry = _Registered(name, encode, decode)
        self._by_class[cls] = entry
        self._by_name[name] = entry

    # --- values

    def encode(self, value: Any) -> bytes:
        """Return the bytes of a state value.

        Raises:
            StateEncodeError: the value holds an unsupported type (the message names it).
        """
        try:
            return self._value_packer.pack(value)
        except StateEncodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            msg = f"cannot encode state value of type {type(value).__name__}: {exc}"
            raise StateEncodeError(msg) from exc

    def decode(self, data: bytes) -> Any:
        """Return the value of ``encode`` output.

        Raises:
            StateCorruptedError: the bytes are not a value this codec wrote.
        """
        try:
            return self._unpack_nested(data)
        except StateCorruptedError:
            raise
        except Exception as exc:
            msg = f"cannot decode a stored state value ({len(data)} bytes): {exc}"
            raise StateCorruptedError(msg) from exc

    def decode_many(self, datas: Sequence[bytes]) -> list[Any]:
        """:meth:`decode` of each item, in one pass (a batch's state reads decode their rows together).

        Raises:
            StateCorruptedError: an item is not a value this codec wrote.
        """
        # msgpack called directly: through decode() every row would pay a Python call and its try (~0.4 µs).
        unpack, hook = msgpack.unpackb, self._ext_hook
        try:
            return [unpack(data, ext_hook=hook, raw=False, strict_map_key=False) for data in datas]
        except Exception:  # noqa: BLE001 - decode() says which item and why
            return list(map(self.decode, datas))

    # --- keys

    def encode_key(self, key: Hashable) -> bytes:
        """Return the bytes of a group key (tuples as msgpack arrays, decoded back as tuples)."""
        try:
            return self._key_packer.pack(key)
        except StateEncodeError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            msg = f"cannot encode group key {key!r} of type {type(key).__name__}: {exc}"
            raise StateEncodeError(msg) from exc

    def decode_key(self, data: bytes) -> Hashable:
        """Return the key of ``encode_key`` output."""
        try:
            key: Hashable = msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, use_list=False,
                                            strict_map_key=False)
        except Exception as exc:
            msg = f"cannot decode a stored group key {data!r}: {exc}"
            raise StateCorruptedError(msg) from exc
        return key

    # --- msgpack hooks

    def _pack_nested(self, obj: Any) -> bytes:
        # A fresh packer: the hook runs inside self._value_packer.pack, which is not reentrant.
        return msgpack.packb(obj, default=self._default, strict_types=True, use_bin_type=True)

    def _default(self, obj: Any) -> Any:  # noqa: C901 - one branch per supported type
        kind = type(obj)
        registered = self._by_class.get(kind)
        if registered is not None:
            return msgpack.ExtType(_EXT_REGISTERED, self._pack_nested([registered.name, registered.encode(obj)]))
        if kind is tuple:
            return msgpack.ExtType(_EXT_TUPLE, self._pack_nested(list(obj)))
        if kind is set or kind is frozenset:
            code = _EXT_SET if kind is set else _EXT_FROZENSET
            return msgpack.ExtType(code, self._pack_nested(list(obj)))
        if kind is _dt.datetime:
            tz = None if obj.tzinfo is None else _tz_state(obj.tzinfo, obj)
            fields = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond, tz, obj.fold]
            return msgpack.ExtType(_EXT_DATETIME, self._pack_nested(fields))
        if kind is _dt.date:
            return msgpack.ExtType(_EXT_DATE, self._pack_nested(obj.toordinal()))
        if kind is _dt.time:
            if obj.tzinfo is not None:
                msg = f"cannot encode time {obj!r}: times with a time zone are not supported; store a datetime"
                raise StateEncodeError(msg)
            return msgpack.ExtType(_EXT_TIME, self._pack_nested([obj.hour, obj.minute, obj.second, obj.microsecond]))
        if kind is _dt.timedelta:
            return msgpack.ExtType(_EXT_TIMEDELTA, self._pack_nested([obj.days, obj.seconds, obj.microseconds]))
        if kind is decimal.Decimal:
            return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode())
        if kind is uuid.UUID:
            return msgpack.ExtType(_EXT_UUID, obj.bytes)
        for base in (dict, list, str, int, float):
            # Enum members are int/str subclasses too, but turning them into plain values would lose them.
            if isinstance(obj, base) and not isinstance(obj, enum.Enum):
                return cast(Any, base)(obj)
        hint = (" (a dataclass: register it with statefulstream.state.codec.register_type(cls))"
                if dataclasses.is_dataclass(obj) else
                " (register it with statefulstream.state.codec.register_type(cls, encode, decode))")
        msg = f"cannot encode {kind.__module__}.{kind.__qualname__} in state{hint}"
        raise StateEncodeError(msg)

    def _unpack_nested(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE:
            return tuple(self._unpack_nested(data))
        if code == _EXT_SET:
            return set(self._unpack_nested(data))
        if code == _EXT_FROZENSET:
            return frozenset(self._unpack_nested(data))
        if code == _EXT_DATETIME:
            year, month, day, hour, minute, second, micros, tz, fold = self._unpack_nested(data)
            return _dt.datetime(year, month, day, hour, minute, second, micros,
                                None if tz is None else _tz_from_state(tz), fold=fold)
        if code == _EXT_DATE:
            return _dt.date.fromordinal(self._unpack_nested(data))
        if code == _EXT_TIME:
            return _dt.time(*self._unpack_nested(data))
        if code == _EXT_TIMEDELTA:
            days, seconds, micros = self._unpack_nested(data)
            return _dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if code == _EXT_DECIMAL:
            return decimal.Decimal(data.decode())
        if code == _EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == _EXT_REGISTERED:
            name, payload = self._unpack_nested(data)
            entry = self._by_name.get(name)
            if entry is None:
                msg = (f"state holds a value of registered type {name!r}, which is not registered in this "
                       "process; call statefulstream.state.codec.register_type for it before the app starts")
                raise StateCorruptedError(msg)
            return entry.decode(payload)
        msg = f"unknown msgpack ext type {code} in stored state (written by a newer statefulstream?)"
        raise StateCorruptedError(msg)


DEFAULT_CODEC = Codec()
"""The codec stores use unless given another; :func:`register_type` adds to it."""


def register_type(cls: type, encode: Callable[[Any], Any] | None = None,
                  decode: Callable[[Any], Any] | None = None, *, name: str | None = None) -> None:
    """Register a class on :data:`DEFAULT_CODEC` (see :meth:`Codec.register_type`)."""
    DEFAULT_CODEC.register_type(cls, encode, decode, name=name)

