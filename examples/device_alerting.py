"""Device alerting with a stateful processor: several state variables and two timers per device.

The ``GroupState`` version (``alerting.py``) keeps one dict and one timeout per
device. This one uses ``app.transform_with_state`` (Spark 4's
``transformWithState``) and keeps, per device:

* ``readings``: a ``ListState`` of the last ``WINDOW`` readings (``status``,
  ``latency_ms``, ``ts``); each new reading is one appended entry;
* ``incidents``: a ``MapState`` rule -> ``{"opened_ms", "escalate_ms",
  "escalated"}`` of the device's open PagerDuty incidents;
* ``seen``: a ``MapState`` of reading timestamps already handled, with a TTL of
  ``DEDUP_TTL``: a reading delivered twice within that time counts once, and
  old keys disappear on their own;
* ``silence_ms``: a ``ValueState`` with the deadline of the silence timer.

and two kinds of processing-time timers: the **silence** timer
(``SILENCE_MS`` after the last batch with a reading, moved on every batch
with data) opens a ``silent`` incident; the **escalation** timer
(``ESCALATE_MS`` after an incident opens) raises a second, critical
``<rule>-escalated`` incident if the first is still open. Rules:

* ``error-rate``: at least ``TRIGGER_ERRORS`` errors among the last
  ``WINDOW`` readings (once ``WINDOW`` are known) opens it; at most
  ``RESOLVE_ERRORS`` resolves it;
* ``silent``: the silence timer fired; the device's next reading resolves it.

Resolving an incident resolves its escalation too and deletes the pending
escalation timer. Rows are PagerDuty alerts (``statefulstream.sinks.webhook.Alert``
fields; ``dedup_key`` from device and ``alert_id``). Run it on the shipped recording::

    python examples/device_alerting.py

Environment as ``alerting.py`` (``PAGERDUTY_ROUTING_KEY``, ``PAGERDUTY_URL``,
``KAFKA_BOOTSTRAP`` + ``EVENTS_TOPIC``, ``CHECKPOINT_DIR``, ``METRICS_ADDRESS``, ``TRIGGER``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

from alerting import DATA, SAMPLE_RECORDS_PER_SECOND, SAMPLE_START_MS, ReplayClock, alert_sink_from_env
from env_config import ExampleEnv

from statefulstream import App, ExpiredTimerInfo, StatefulProcessor, StatefulProcessorHandle, TimerValues
from statefulstream.sink import Sink
from statefulstream.sinks import ConsoleSink
from statefulstream.sources.base import Source
from statefulstream.sources.file import FileSource
from statefulstream.timeutil import Clock

WINDOW = 10
TRIGGER_ERRORS = 5
RESOLVE_ERRORS = 1
SILENCE_MS = 10_000
ESCALATE_MS = 5_000
DEDUP_TTL = "30 seconds"
SILENT, ERROR_RATE = "silent", "error-rate"


def escalated(rule: str) -> str:
    """The ``alert_id`` of a rule's escalation incident."""
    return f"{rule}-escalated"


def alert(device: str, alert_id: str, action: str, now_ms: int, **details: Any) -> dict[str, Any]:
    """A PagerDuty alert row: a ``trigger`` (critical when escalated, else error) or a ``resolve``."""
    row: dict[str, Any] = {"key": device, "alert_id": alert_id, "action": action}
    if action == "trigger":
        row.update(summary=f"{device}: {alert_id}", timestamp=now_ms, source=device, custom_details=details,
                   severity="critical" if alert_id.endswith("-escalated") else "error")
    return row


class DeviceMonitor(StatefulProcessor):
    """Opens, escalates and resolves a device's incidents (see the module docstring)."""

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.readings = handle.get_list_state("readings")
        self.incidents = handle.get_map_state("incidents")
        self.seen = handle.get_map_state("seen", ttl=DEDUP_TTL)
        self.silence = handle.get_value_state("silence_ms")

    def handle_input_rows(self, key: Hashable, rows: list[Any], timer_values: TimerValues) -> Iterator[Any]:
        device, now = str(key), timer_values.get_current_processing_time_in_ms()
        fresh = []
        for row in rows:
            if not self.seen.contains(row["ts"]):
                self.seen.put(row["ts"], True)
                fresh.append(row)
        if not fresh:  # only repeats: as if nothing arrived (the silence timer keeps running)
            return
        if self.incidents.contains(SILENT):
            yield from self._resolve(device, SILENT, now)
        for row in fresh:
            self.readings.append_value({"status": row.get("status"), "latency_ms": row.get("latency_ms"),
                                        "ts": row["ts"]})
            recent = list(self.readings.get())
            if len(recent) > WINDOW:
                recent = recent[-WINDOW:]
                self.readings.put(recent)
            errors = sum(r["status"] == "error" for r in recent)
            if not self.incidents.contains(ERROR_RATE) and len(recent) == WINDOW and errors >= TRIGGER_ERRORS:
                yield from self._open(device, ERROR_RATE, now, errors=errors, window=WINDOW)
            elif self.incidents.contains(ERROR_RATE) and errors <= RESOLVE_ERRORS:
                yield from self._resolve(device, ERROR_RATE, now)
        old = self.silence.get()
        self.silence.update(now + SILENCE_MS)
        self.handle.register_timer(now + SILENCE_MS)
        if old is not None:
            self._release(old)

    def handle_expired_timer(self, key: Hashable, timer_values: TimerValues,
                             expired_timer_info: ExpiredTimerInfo) -> Iterator[Any]:
        device, now = str(key), timer_values.get_current_processing_time_in_ms()
        ts = expired_timer_info.get_expiry_time_in_ms()
        for rule, incident in list(self.incidents.items()):
            if incident["escalate_ms"] == ts and not incident["escalated"]:
                self.incidents.put(rule, {**incident, "escalated": True})
                yield alert(device, escalated(rule), "trigger", now, opened_ms=incident["opened_ms"])
        if self.silence.get() == ts:
            self.silence.clear()
            if not self.incidents.contains(SILENT):
                last = list(self.readings.get())
                yield from self._open(device, SILENT, now, last_reading_ts=last[-1]["ts"] if last else None)

    def _open(self, device: str, rule: str, now: int, **details: Any) -> Iterator[Any]:
        self.incidents.put(rule, {"opened_ms": now, "escalate_ms": now + ESCALATE_MS, "escalated": False})
        self.handle.register_timer(now + ESCALATE_MS)
        yield alert(device, rule, "trigger", now, **details)

    def _resolve(self, device: str, rule: str, now: int) -> Iterator[Any]:
        incident = self.incidents.get(rule)
        self.incidents.remove(rule)
        if incident["escalated"]:
            yield alert(device, escalated(rule), "resolve", now)
        else:
            self._release(incident["escalate_ms"])
        yield alert(device, rule, "resolve", now)

    def _release(self, ts: int) -> None:
        """Delete the timer at ``ts`` unless the silence deadline or another pending escalation shares it
        (a key has one timer per timestamp)."""
        if self.silence.get() != ts and all(i["escalated"] or i["escalate_ms"] != ts for i in self.incidents.values()):
            self.handle.delete_timer(ts)


def build_app(source: Source | None = None, sink: Sink | list[Sink] | None = None, *, clock: Clock | None = None,
              checkpoint_dir: str | None = None, trigger: str | None = "available_now",
              max_records_per_trigger: int | None = None, metrics_address: str | None = None) -> App:
    """Build the app; defaults: the recording replayed one second per batch, alerts to the console."""
    if source is None:
        source = FileSource(DATA)
        clock = clock or ReplayClock(SAMPLE_START_MS, 1000)
        max_records_per_trigger = max_records_per_trigger or SAMPLE_RECORDS_PER_SECOND
    app = App("device-alerts", source=source, checkpoint_dir=checkpoint_dir, trigger=trigger, clock=clock,
              max_records_per_trigger=max_records_per_trigger, metrics_address=metrics_address)
    app.transform_with_state(DeviceMonitor(), key="device", time_mode="processing_time",
                             sink=sink or ConsoleSink(), name="device_monitor")
    return app


def app_from_env(environ: Mapping[str, str]) -> App:
    """The app as the environment configures it (see ``alerting.py`` and ``env_config.py``)."""
    env = ExampleEnv.from_environ(environ)
    return build_app(env.kafka_source("device-alerts"), alert_sink_from_env(environ),
                     checkpoint_dir=env.checkpoint_dir,
                     trigger=env.trigger or ("1 second" if env.kafka_bootstrap else "available_now"),
                     metrics_address=env.metrics_address)


app = app_from_env(os.environ)

if __name__ == "__main__":
    app.run()
