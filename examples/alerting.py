"""Device alerting: page when a device goes silent or its error rate is high; resolve when healthy.

Each device's events ``{"device": "dev-07", "ts": <epoch ms>, "status": "ok" | "error",
"latency_ms": 41}`` are grouped by device. Two rules, each one PagerDuty
incident per device while it holds:

* **silent**: no event for ``SILENCE_MS`` of processing time. Every call with
  data sets a processing-time timeout; when it fires, the device is silent.
  Its next event resolves the incident.
* **error-rate**: of the device's last ``WINDOW`` events, at least
  ``TRIGGER_RATE`` are errors (judged after each event, once ``MIN_EVENTS``
  are known). It resolves when the rate falls to ``RESOLVE_RATE`` or below;
  the gap between the two thresholds keeps a flapping device from paging
  again and again.

Rows are PagerDuty alerts (``statefulstream.sinks.webhook.Alert`` fields). The incident's
``dedup_key`` comes from the device and the rule (``alert_id``), so a
replayed batch, a retried request, or a repeated trigger never opens a second
incident while one is open.

Run it on the shipped recording (no servers needed)::

    python examples/alerting.py          # or: statefulstream run examples/alerting.py

The recording (``examples/data/device_events.jsonl``, made by
``generate_device_events.py``) is replayed one recorded second per batch:
batches of ``SAMPLE_RECORDS_PER_SECOND`` lines on a processing-time clock
that advances one second per batch, so silences in the recording fire as
they would have live.

Environment: ``PAGERDUTY_ROUTING_KEY`` (and ``PAGERDUTY_URL`` for another
endpoint, e.g. ``examples/webhook_receiver.py``) sends the alerts to
PagerDuty instead of the console; ``KAFKA_BOOTSTRAP`` + ``EVENTS_TOPIC``
read live events from Kafka on the wall clock; ``ALERT_SILENCE`` (e.g.
``"30 seconds"``) changes the silence; ``METRICS_ADDRESS``,
``CHECKPOINT_DIR``, ``TRIGGER`` as in ``env_config.py``.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

from env_config import ExampleEnv

from statefulstream import App, GroupState, GroupStateTimeout
from statefulstream.durations import parse_duration_ms
from statefulstream.logs import configure_logging
from statefulstream.sink import Sink
from statefulstream.sinks import ConsoleSink
from statefulstream.sources.base import Source
from statefulstream.sources.file import FileSource
from statefulstream.timeutil import Clock

SILENCE = "10 seconds"
SILENCE_MS = parse_duration_ms(SILENCE, name="SILENCE")
WINDOW = 20
MIN_EVENTS = 10
TRIGGER_RATE = 0.5
RESOLVE_RATE = 0.1
SILENT, ERROR_RATE = "silent", "error-rate"

DATA = pathlib.Path(__file__).parent / "data" / "device_events.jsonl"
SAMPLE_START_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z, the recording's first second
SAMPLE_RECORDS_PER_SECOND = 20


class ReplayClock:
    """Processing time of a recording replayed at one recorded interval per batch.

    The executor reads the clock once per batch plan (never on a replay after a
    crash: the plan is logged), so batch ``i`` runs at ``start_ms + (i + 1) * step_ms``:
    the end of the interval whose records it holds.

    >>> clock = ReplayClock(0, 1000); clock(), clock()
    (1000, 2000)
    """

    def __init__(self, start_ms: int, step_ms: int) -> None:
        self._now_ms = start_ms
        self._step_ms = step_ms

    def __call__(self) -> int:
        self._now_ms += self._step_ms
        return self._now_ms


def _trigger(device: str, rule: str, summary: str, timestamp: int, severity: str,
             details: Mapping[str, Any]) -> dict[str, Any]:
    return {"key": device, "alert_id": rule, "action": "trigger", "summary": summary, "severity": severity,
            "timestamp": timestamp, "source": device, "custom_details": dict(details)}


def _resolve(device: str, rule: str) -> dict[str, Any]:
    return {"key": device, "alert_id": rule, "action": "resolve"}


def monitor(device: str, events: list[dict[str, Any]], state: GroupState[dict[str, Any]], *,
            silence_ms: int = SILENCE_MS) -> Iterator[dict]:
    """Raise and resolve a device's ``silent`` and ``error-rate`` alerts.

    State: ``recent`` (1 per error among the last ``WINDOW`` events), ``open``
    (rules with an open incident), ``last_ts`` (event time of the last event).
    """
    health = state.get_option() or {"recent": [], "open": [], "last_ts": None}
    if state.has_timed_out:
        # The timeout is not set again: a silent device costs nothing until it speaks.
        if SILENT not in health["open"]:
            health["open"].append(SILENT)
            yield _trigger(device, SILENT, f"{device} silent: no event for {silence_ms / 1000:g} s",
                           state.get_current_processing_time_ms(), "critical", {"last_event_ts": health["last_ts"]})
        state.update(health)
        return
    recent, open_rules = health["recent"], health["open"]
    if SILENT in open_rules:
        open_rules.remove(SILENT)
        yield _resolve(device, SILENT)
    for event in events:
        recent.append(1 if event.get("status") == "error" else 0)
        if len(recent) > WINDOW:
            del recent[0]
        rate = sum(recent) / len(recent)
        if ERROR_RATE not in open_rules and len(recent) >= MIN_EVENTS and rate >= TRIGGER_RATE:
            open_rules.append(ERROR_RATE)
            yield _trigger(device, ERROR_RATE, f"{device} error rate {rate:.0%} over its last {len(recent)} events",
                           event["ts"], "error", {"error_rate": rate, "events": len(recent)})
        elif ERROR_RATE in open_rules and rate <= RESOLVE_RATE:
            open_rules.remove(ERROR_RATE)
            yield _resolve(device, ERROR_RATE)
    health["last_ts"] = events[-1].get("ts")
    state.update(health)
    state.set_timeout_duration(silence_ms)


def alert_sink_from_env(environ: Mapping[str, str]) -> Sink:
    """``PagerDutySink`` when ``PAGERDUTY_ROUTING_KEY`` is set (to ``PAGERDUTY_URL`` if given), else the console."""
    if not environ.get("PAGERDUTY_ROUTING_KEY"):
        return ConsoleSink()
    from statefulstream.sinks.webhook import (  # the webhook extra is needed only here
        PAGERDUTY_EVENTS_URL,
        PagerDutySink,
    )

    return PagerDutySink(environ["PAGERDUTY_ROUTING_KEY"], url=environ.get("PAGERDUTY_URL") or PAGERDUTY_EVENTS_URL)


def build_app(source: Source | None = None, sink: Sink | list[Sink] | None = None, *, clock: Clock | None = None,
              checkpoint_dir: str | None = None, trigger: str | None = "available_now",
              max_records_per_trigger: int | None = None, silence: str = SILENCE,
              metrics_address: str | None = None) -> App:
    """Build the alerting app.

    Defaults: the recording, replayed one second per batch on a ``ReplayClock``,
    and the console. With another ``source`` the clock is the wall clock
    unless ``clock`` is given.

    Args:
        sink: where alerts go (a sink or a list of sinks).
        silence: how long without an event makes a device silent (a duration).
    """
    silence_ms = parse_duration_ms(silence, name="silence")
    if source is None:
        source = FileSource(DATA)
        clock = clock or ReplayClock(SAMPLE_START_MS, 1000)
        max_records_per_trigger = max_records_per_trigger or SAMPLE_RECORDS_PER_SECOND
    app = App("alerts", source=source, checkpoint_dir=checkpoint_dir, trigger=trigger, clock=clock,
              max_records_per_trigger=max_records_per_trigger, metrics_address=metrics_address)
    app.flat_map_groups_with_state(key="device", output_mode="append", timeout=GroupStateTimeout.PROCESSING_TIME,
                                   sink=sink or ConsoleSink(), name="monitor")(
        functools.partial(monitor, silence_ms=silence_ms))
    return app


def app_from_env(environ: Mapping[str, str]) -> App:
    """The app as the environment configures it (see the module docstring)."""
    env = ExampleEnv.from_environ(environ)
    return build_app(env.kafka_source("alerts"), alert_sink_from_env(environ), checkpoint_dir=env.checkpoint_dir,
                     trigger=env.trigger or ("1 second" if env.kafka_bootstrap else "available_now"),
                     silence=environ.get("ALERT_SILENCE") or SILENCE, metrics_address=env.metrics_address)


app = app_from_env(os.environ)

if __name__ == "__main__":
    configure_logging(os.environ.get("LOG_LEVEL") or "INFO")  # one line per batch at INFO
    app.run()
