"""``StatefulProcessorHandle``: what a processor declares its variables and sets its timers with.

The handle enforces where each operation may be called (as Spark's
``StatefulProcessorHandleImpl``): variables are declared and deleted in
``init``; timers and variable reads/writes need a current key, so they work
only inside ``handle_input_rows``, ``handle_expired_timer`` and
``handle_initial_state``.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import TypeVar

import msgpack  # type: ignore[import-untyped]

from statefulstream.durations import Duration, positive_duration_ms
from statefulstream.errors import ProcessorHandleError
from statefulstream.processor import layout
from statefulstream.processor.api import TimeMode
from statefulstream.processor.timers import Timers
from statefulstream.processor.variables import ListState, MapState, Scope, StateVariable, ValueState

V = TypeVar("V", bound=StateVariable)


class Phase(enum.Enum):
    """Where the batch is; the handle allows different operations in each."""

    INIT = "init"
    INITIAL_STATE = "handle_initial_state"
    DATA = "handle_input_rows"
    TIMER = "handle_expired_timer"
    CLOSED = "close"


class StatefulProcessorHandle:
    """Declares state variables and manages the current key's timers.

    Args:
        scope: the batch's store access, current key and counters.
        timers: the timer index.
        time_mode: the operator's time mode (``NONE`` refuses timers).
        batch_id: the batch, for ``batch_id``.
    """

    def __init__(self, scope: Scope, timers: Timers, time_mode: TimeMode, batch_id: int) -> None:
        self._scope = scope
        self._timers = timers
        self.time_mode = time_mode
        self.batch_id = batch_id
        self.phase = Phase.INIT
        self.variables: dict[str, StateVariable] = {}

    # --- variables (in init)

    def get_value_state(self, name: str, ttl: Duration | None = None, *,
                        ttl_duration_ms: int | None = None) -> ValueState:
        """Declare (or re-open) the value variable ``name``.

        Args:
            name: the variable's name (part of the stored layout).
            ttl: how long a value lives after its last write, e.g. ``"10 minutes"`` (a duration,
                as every configuration duration), or ``None`` for no TTL.
            ttl_duration_ms: the same in milliseconds (PySpark's argument); give one of the two.
        """
        return self._declare(ValueState, name, ttl, ttl_duration_ms)

    def get_list_state(self, name: str, ttl: Duration | None = None, *,
                       ttl_duration_ms: int | None = None) -> ListState:
        """Declare the list variable ``name``; the TTL (as ``get_value_state``) applies per element."""
        return self._declare(ListState, name, ttl, ttl_duration_ms)

    def get_map_state(self, name: str, ttl: Duration | None = None, *,
                      ttl_duration_ms: int | None = None) -> MapState:
        """Declare the map variable ``name``; the TTL (as ``get_value_state``) applies per entry."""
        return self._declare(MapState, name, ttl, ttl_duration_ms)

    def _declare(self, cls: type[V], name: str, ttl: Duration | None, ttl_duration_ms: int | None) -> V:
        self._require(Phase.INIT, f"declaring state variable {name!r}")
        if not isinstance(name, str) or not name:
            raise ProcessorHandleError(f"a state variable name must be a non-empty string; got {name!r}")
        if name in self.variables:
            msg = f"state variable {name!r} is declared twice in init (as {self.variables[name].kind} and {cls.kind})"
            raise ProcessorHandleError(msg)
        ttl_ms = _ttl_ms(name, ttl, ttl_duration_ms)
        stored = self._scope.kv.get(layout.VARIABLES + name.encode())
        if stored is not None:
            kind = msgpack.unpackb(stored)["kind"]
            if kind != cls.kind:
                msg = (f"state variable {name!r} is stored as a {kind} variable but now declared as a {cls.kind} "
                       f"one; delete it first with handle.delete_if_exists({name!r}) in init, or use another name")
                raise ProcessorHandleError(msg)
        meta = msgpack.packb({"kind": cls.kind, "ttl_ms": ttl_ms})
        if stored != meta:
            self._scope.kv.put(layout.VARIABLES + name.encode(), meta)
        variable = cls(name, ttl_ms, self._scope)
        self.variables[name] = variable
        stats = self._scope.stats
        if cls is ValueState:
            stats.value_state_vars += 1
        elif cls is ListState:
            stats.list_state_vars += 1
        else:
            stats.map_state_vars += 1
        stats.vars_with_ttl += ttl_ms is not None
        return variable

    def delete_if_exists(self, name: str) -> None:
        """Remove variable ``name`` and all its values, for every key (in init; Spark's ``deleteIfExists``)."""
        self._require(Phase.INIT, f"deleting state variable {name!r}")
        kv = self._scope.kv
        if kv.get(layout.VARIABLES + name.encode()) is None:
            return
        kv.delete(layout.VARIABLES + name.encode())
        kv.delete_prefix(layout.variable_prefix(name))
        self._scope.stats.deleted_state_vars += 1

    # --- timers (in handlers)

    def register_timer(self, expiry_ms: int) -> None:
        """Set a timer for the current key at ``expiry_ms`` (batch time or watermark, per time mode)."""
        self._timers.register(self._timer_key("register_timer"), int(expiry_ms))

    def delete_timer(self, expiry_ms: int) -> None:
        """Remove the current key's timer at ``expiry_ms`` (a missing one is ignored)."""
        if self._timers.delete(self._timer_key("delete_timer"), int(expiry_ms)):
            self._scope.stats.timers_deleted += 1

    def list_timers(self) -> list[int]:
        """Return the current key's timer timestamps, ascending."""
        return self._timers.of_key(self._timer_key("list_timers"))

    def _timer_key(self, what: str) -> bytes:
        if self.time_mode is TimeMode.NONE:
            raise ProcessorHandleError(f"{what}: the operator's time_mode is 'none'; give time_mode="
                                       f"'processing_time' or 'event_time' to transform_with_state to use timers")
        if self.phase is Phase.INIT:
            raise ProcessorHandleError(f"{what} is not allowed in init: timers belong to a key; "
                                       f"set them in handle_input_rows or handle_expired_timer")
        self._require_open(what)
        return self._scope.current_key_bytes(what)

    @property
    def current_key(self) -> Hashable:
        """The key being handled (``None`` in init)."""
        return self._scope.key

    def _require(self, phase: Phase, what: str) -> None:
        if self.phase is not phase:
            raise ProcessorHandleError(f"{what} is only allowed in {phase.value}, not in {self.phase.value}")

    def _require_open(self, what: str) -> None:
        if self.phase is Phase.CLOSED:
            raise ProcessorHandleError(f"{what}: the batch is over (the handle is closed)")

    # PySpark's spellings, so a transformWithStateInPandas processor ports with few changes.
    getValueState = get_value_state  # noqa: N815
    getListState = get_list_state  # noqa: N815
    getMapState = get_map_state  # noqa: N815
    registerTimer = register_timer  # noqa: N815
    deleteTimer = delete_timer  # noqa: N815
    listTimers = list_timers  # noqa: N815
    deleteIfExists = delete_if_exists  # noqa: N815


def _ttl_ms(name: str, ttl: Duration | None, ttl_duration_ms: int | None) -> int | None:
    """Return a variable's TTL in ms from ``ttl`` (a duration) or ``ttl_duration_ms``, or ``None``."""
    if ttl is not None and ttl_duration_ms is not None:
        raise ProcessorHandleError(f"state variable {name!r}: give ttl= or ttl_duration_ms=, not both")
    if ttl is not None:
        return positive_duration_ms(ttl, name=f"state variable {name!r}: ttl")
    if ttl_duration_ms is None:
        return None
    if isinstance(ttl_duration_ms, bool) or not isinstance(ttl_duration_ms, int) or ttl_duration_ms <= 0:
        raise ProcessorHandleError(f"state variable {name!r}: ttl_duration_ms must be a positive int of "
                                   f"milliseconds; got {ttl_duration_ms!r}")
    return ttl_duration_ms
