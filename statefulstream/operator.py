"""``StatefulOperator``: the validated definition of one ``*_groups_with_state`` step.

Everything a decorator is given is checked here, when the decorator is
applied, so a wrong argument fails before any data flows, with a message that
names the argument.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import operator as _op
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from statefulstream.durations import parse_duration_ms, positive_duration_ms
from statefulstream.errors import ConfigError
from statefulstream.options import GroupStateTimeout, OutputMode
from statefulstream.sink import Sink

Handler = Callable[..., Any]
"""``handler(key, values, state)``: returns an iterable of rows (flat) or one row (map)."""

OPERATOR_OPTIONS = ("key", "event_time", "watermark_delay", "max_event_time_ahead", "output_mode", "timeout",
                    "sink", "state_sink", "initial_state", "skip_emitting_initial_state_keys", "name")


@dataclasses.dataclass
class StatefulOperator:
    """A handler with its grouping, time and output configuration.

    Attributes:
        func: the user's handler.
        name: the operator's name (defaults to the handler's name).
        flat: ``True`` for ``flat_map_groups_with_state`` (any number of rows
            per call), ``False`` for ``map_groups_with_state`` (exactly one).
        key: extracts the group key from a record.
        key_spec: how the key was given, for the checkpoint signature.
        event_time: extracts the raw event time, or ``None``.
        watermark_delay_ms: the watermark delay, or ``None`` when no watermark.
        output_mode: ``APPEND`` or ``UPDATE``.
        timeout: the timeout kind.
        sinks: where output rows go.
        state_sinks: where changed state rows go after each batch.
        initial_state: state per key applied in batch 0 only.
        skip_emitting_initial_state_keys: Spark's ``skipEmittingInitialStateKeys``:
            initial-state keys without data in batch 0 are stored but the
            handler is not called for them (off by default, as in Spark).
        call_all_keys: call the handler every batch for every stored key, not
            only keys with data or an expired timeout (complete-mode
            aggregations; O(state) per batch).
        max_event_time_ahead_ms: dead-letter records whose event time is more
            than this ahead of the batch's processing time, or ``None`` (the
            default, as Spark: any representable event time is accepted).
        processor: the ``StatefulProcessor`` of a ``transform_with_state``
            operator (then ``func`` is unused and ``timeout`` mirrors
            ``time_mode``, so no-data batches run as for timeouts), or ``None``.
        time_mode: the processor's ``TimeMode``, or ``None``.
    """

    func: Handler
    name: str
    flat: bool
    key: Callable[[Any], Any]
    key_spec: str
    event_time: Callable[[Any], Any] | None
    watermark_delay_ms: int | None
    output_mode: OutputMode
    timeout: GroupStateTimeout
    sinks: list[Sink]
    state_sinks: list[Sink]
    initial_state: dict[Any, Any] | None
    skip_emitting_initial_state_keys: bool = False
    call_all_keys: bool = False
    max_event_time_ahead_ms: int | None = None
    processor: Any = None
    time_mode: Any = None

    @property
    def has_watermark(self) -> bool:
        """Whether the operator declares a watermark (``watermark_delay``)."""
        return self.watermark_delay_ms is not None

    @property
    def drops_late_rows(self) -> bool:
        """Whether rows at or below the late watermark are dropped: event-time timeouts, or a processor
        with a watermark (Spark's transformWithState filters whenever a watermark exists)."""
        return self.timeout is GroupStateTimeout.EVENT_TIME or (self.processor is not None and self.has_watermark)

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed by this operator."""
        if self.processor is not None:
            return {"operator": self.name, "kind": "transform_with_state", "key": self.key_spec,
                    "time_mode": self.time_mode.value, "output_mode": self.output_mode.value}
        return {"operator": self.name, "kind": "flat_map" if self.flat else "map", "key": self.key_spec,
                "timeout": self.timeout.value, "output_mode": self.output_mode.value}


def build_operator(func: Handler, *, flat: bool, options: Mapping[str, Any]) -> StatefulOperator:
    """Validate decorator options and return the operator.

    Raises:
        ConfigError: an option is unknown, missing or wrong; the message names it.
    """
    decorator = "flat_map_groups_with_state" if flat else "map_groups_with_state"
    unknown = [k for k in options if k not in OPERATOR_OPTIONS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, OPERATOR_OPTIONS, n=1) for k in unknown}
        said = "; ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ConfigError(f"{decorator}: unknown argument {said}; valid arguments: {', '.join(OPERATOR_OPTIONS)}")
    _check_handler(func, decorator)
    if "key" not in options or options["key"] is None:
        raise ConfigError(f"{decorator}: key= is required: a field name, a list of field names, or a callable")
    key_fn, key_spec = field_getter(options["key"], f"{decorator}: key")
    event_time = options.get("event_time")
    et_fn = field_getter(event_time, f"{decorator}: event_time")[0] if event_time is not None else None
    delay_ms = parse_watermark_delay(options.get("watermark_delay"), et_fn is not None, decorator)
    timeout = GroupStateTimeout.parse(options.get("timeout"), name=f"{decorator}: timeout")
    if timeout is GroupStateTimeout.EVENT_TIME and delay_ms is None:
        raise ConfigError(f"{decorator}: timeout=EVENT_TIME needs a watermark: give event_time= and "
                          f"watermark_delay= (Spark: 'Watermark must be specified ... for using event-time timeout')")
    mode = _output_mode(options.get("output_mode"), flat, decorator)
    ahead_ms = event_time_ahead_ms(options.get("max_event_time_ahead"), et_fn is not None, decorator)
    return StatefulOperator(
        func=func, name=str(options.get("name") or getattr(func, "__name__", "operator")), flat=flat,
        key=key_fn, key_spec=key_spec, event_time=et_fn, watermark_delay_ms=delay_ms, output_mode=mode,
        timeout=timeout, sinks=as_sinks(options.get("sink"), f"{decorator}: sink"),
        state_sinks=as_sinks(options.get("state_sink"), f"{decorator}: state_sink"),
        initial_state=parse_initial_state(options.get("initial_state"), decorator), max_event_time_ahead_ms=ahead_ms,
        skip_emitting_initial_state_keys=_flag(options, "skip_emitting_initial_state_keys", decorator))


def field_getter(spec: Any, what: str) -> tuple[Callable[[Any], Any], str]:
    """Return ``(getter, description)`` for a field name, a list of names, or a callable.

    A list of names gives a tuple key. Field access is ``record[name]``, so
    records are dicts (or anything indexable by name).
    """
    if isinstance(spec, str):
        if not spec:
            raise ConfigError(f"{what} must be a field name (not empty), a list of field names or a callable")
        return _op.itemgetter(spec), spec
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, str) and s for s in spec):
        if len(spec) == 1:
            return _op.itemgetter(spec[0]), spec[0]
        return _op.itemgetter(*spec), ",".join(spec)
    if callable(spec):
        return spec, f"<{getattr(spec, '__qualname__', type(spec).__name__)}>"
    raise ConfigError(f"{what} must be a field name, a list of field names or a callable; got {spec!r}")


def as_sinks(value: Sink | Sequence[Sink] | None, what: str) -> list[Sink]:
    """Return a list of sinks from one sink, several, or ``None``."""
    if value is None:
        return []
    items: list[Any] = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, Sink):
            hint = (" (wrap a function with statefulstream.sinks.ForeachSink or "
                    "statefulstream.sinks.foreach_batch)") if callable(item) else ""
            raise ConfigError(f"{what} must be a Sink or a list of Sinks; got {type(item).__name__}{hint}")
    return items


def _check_handler(func: Any, decorator: str) -> None:
    if not callable(func):
        raise ConfigError(f"{decorator} decorates a function (key, values, state); got {type(func).__name__}")
    try:
        inspect.signature(func).bind(None, [], None)
    except TypeError:
        name = getattr(func, "__name__", repr(func))
        raise ConfigError(f"{decorator}: handler {name!r} must accept three arguments (key, values, state); "
                          f"its signature is {inspect.signature(func)}") from None
    except ValueError:  # builtins without a signature: accept
        return


def parse_watermark_delay(value: Any, has_event_time: bool, decorator: str) -> int | None:
    """Return the watermark delay in ms (``None``: no watermark); ``decorator`` names the caller in errors."""
    if value is None:
        if has_event_time:
            raise ConfigError(f"{decorator}: event_time= needs watermark_delay= (e.g. '10 seconds'); "
                              f"event time is only used through the watermark")
        return None
    if not has_event_time:
        raise ConfigError(f"{decorator}: watermark_delay= needs event_time= (the field or callable giving event time)")
    delay = parse_duration_ms(value, name=f"{decorator}: watermark_delay")
    if delay < 0:
        raise ConfigError(f"{decorator}: watermark_delay should not be negative; got {value!r}")
    return delay


def event_time_ahead_ms(value: Any, has_event_time: bool, what: str) -> int | None:
    """Validate ``max_event_time_ahead`` (a positive duration, needs ``event_time``); return ms or ``None``."""
    if value is None:
        return None
    if not has_event_time:
        raise ConfigError(f"{what}: max_event_time_ahead= needs event_time= (it bounds each record's event time)")
    return positive_duration_ms(value, name=f"{what}: max_event_time_ahead")


def _output_mode(value: Any, flat: bool, decorator: str) -> OutputMode:
    default = OutputMode.APPEND if flat else OutputMode.UPDATE
    mode = OutputMode.parse(value if value is not None else default, name=f"{decorator}: output_mode")
    if not flat and mode is not OutputMode.UPDATE:
        raise ConfigError(f"{decorator}: output_mode must be 'update' (one row per group replaces the last); "
                          f"got {mode.value!r}; use flat_map_groups_with_state for append")
    if mode is OutputMode.COMPLETE:
        raise ConfigError(f"{decorator}: the output mode of the function should be 'append' or 'update'; "
                          f"'complete' is only for aggregations")
    return mode


def _flag(options: Mapping[str, Any], name: str, decorator: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{decorator}: {name} must be True or False; got {value!r}")
    return value


def parse_initial_state(value: Any, decorator: str) -> dict[Any, Any] | None:
    """Return the initial state as a dict key -> state (``None``: none), refusing repeated keys and ``None``."""
    if value is None:
        return None
    pairs: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    result: dict[Any, Any] = {}
    try:
        for key, state in pairs:
            if key in result:
                raise ConfigError(
                    f"{decorator}: the initial state contains several rows for key {key!r}; "
                    f"make sure to de-duplicate the initial state before passing it")
            if state is None:
                raise ConfigError(f"{decorator}: initial state of key {key!r} is None; omit the key instead")
            result[key] = state
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{decorator}: initial_state must be a mapping key -> state or an iterable of "
                          f"(key, state) pairs; got {type(value).__name__}") from exc
    return result
