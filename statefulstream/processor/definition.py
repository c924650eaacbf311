"""``build_processor_operator``: validate ``transform_with_state`` options, when the app is defined."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from statefulstream.errors import ConfigError
from statefulstream.operator import (
    StatefulOperator,
    as_sinks,
    event_time_ahead_ms,
    field_getter,
    parse_initial_state,
    parse_watermark_delay,
)
from statefulstream.options import GroupStateTimeout, OutputMode
from statefulstream.processor.api import StatefulProcessor, TimeMode

PROCESSOR_OPTIONS = ("key", "event_time", "watermark_delay", "max_event_time_ahead", "output_mode", "time_mode",
                     "sink", "initial_state", "name")
_WHAT = "transform_with_state"
# The trigger loop runs no-data batches for timeouts; timers need the same batches.
_TIMEOUT_OF_MODE = {TimeMode.NONE: GroupStateTimeout.NO_TIMEOUT,
                    TimeMode.PROCESSING_TIME: GroupStateTimeout.PROCESSING_TIME,
                    TimeMode.EVENT_TIME: GroupStateTimeout.EVENT_TIME}


def build_processor_operator(processor: Any, options: Mapping[str, Any]) -> StatefulOperator:
    """Return the operator of a processor (an instance, or a class taking no arguments).

    Raises:
        ConfigError: an option is unknown, missing or wrong, or ``processor`` is not a ``StatefulProcessor``.
    """
    unknown = [k for k in options if k not in PROCESSOR_OPTIONS]
    if unknown:
        hints = {k: difflib.get_close_matches(k, PROCESSOR_OPTIONS, n=1) for k in unknown}
        said = "; ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ConfigError(f"{_WHAT}: unknown argument {said}; valid arguments: {', '.join(PROCESSOR_OPTIONS)}")
    if isinstance(processor, type) and issubclass(processor, StatefulProcessor):
        processor = processor()
    if not isinstance(processor, StatefulProcessor):
        raise ConfigError(f"{_WHAT} takes a StatefulProcessor (subclass statefulstream.StatefulProcessor and "
                          f"define init and handle_input_rows); got {type(processor).__name__}")
    if options.get("key") is None:
        raise ConfigError(f"{_WHAT}: key= is required: a field name, a list of field names, or a callable")
    key_fn, key_spec = field_getter(options["key"], f"{_WHAT}: key")
    event_time = options.get("event_time")
    et_fn = field_getter(event_time, f"{_WHAT}: event_time")[0] if event_time is not None else None
    delay_ms = parse_watermark_delay(options.get("watermark_delay"), et_fn is not None, _WHAT)
    ahead_ms = event_time_ahead_ms(options.get("max_event_time_ahead"), et_fn is not None, _WHAT)
    time_mode = TimeMode.parse(options.get("time_mode"))
    if time_mode is TimeMode.EVENT_TIME and delay_ms is None:
        raise ConfigError(f"{_WHAT}: time_mode='event_time' needs a watermark: give event_time= and watermark_delay=")
    mode = OutputMode.parse(options.get("output_mode") or OutputMode.APPEND, name=f"{_WHAT}: output_mode")
    if mode is OutputMode.COMPLETE:
        raise ConfigError(f"{_WHAT}: output_mode must be 'append' or 'update'; 'complete' is only for aggregations")
    initial = parse_initial_state(options.get("initial_state"), _WHAT)
    if initial and type(processor).handle_initial_state is StatefulProcessor.handle_initial_state:
        raise ConfigError(f"{_WHAT}: initial_state= is given but {type(processor).__name__} does not override "
                          f"handle_initial_state(key, initial_state, timer_values)")
    return StatefulOperator(
        func=processor.handle_input_rows, name=str(options.get("name") or type(processor).__name__), flat=True,
        key=key_fn, key_spec=key_spec, event_time=et_fn, watermark_delay_ms=delay_ms, output_mode=mode,
        timeout=_TIMEOUT_OF_MODE[time_mode], sinks=as_sinks(options.get("sink"), f"{_WHAT}: sink"), state_sinks=[],
        initial_state=initial, max_event_time_ahead_ms=ahead_ms, processor=processor, time_mode=time_mode)
