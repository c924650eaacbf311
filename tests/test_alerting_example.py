"""The alerting example pages and resolves what an offline reading of its input says it should.

On the shipped recording the expected alerts are computed from the data
alone (gaps between the seconds a device speaks in; a sliding window over its
statuses); end to end, events go through the load generator, the test Kafka
broker, the app and ``PagerDutySink`` to the webhook receiver on loopback.
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from running_app import wait_for

from statefulstream.sink import Sink
from statefulstream.sinks import MemorySink

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import alerting  # noqa: E402
import generate_device_events  # noqa: E402
import produce_events  # noqa: E402
from env_config import ExampleEnv  # noqa: E402
from webhook_receiver import WebhookReceiver  # noqa: E402

Alert = tuple[int, str, str, str]
"""(batch id, device, rule, action)"""


def error_rate_alerts(statuses: Sequence[tuple[int, str]], device: str) -> list[Alert]:
    """Error-rate triggers and resolves of one device from its (batch id, status) sequence."""
    window: deque[int] = deque(maxlen=alerting.WINDOW)
    is_open, alerts = False, []
    for batch, status in statuses:
        window.append(status == "error")
        rate = sum(window) / len(window)
        if not is_open and len(window) >= alerting.MIN_EVENTS and rate >= alerting.TRIGGER_RATE:
            is_open = True
            alerts.append((batch, device, "error-rate", "trigger"))
        elif is_open and rate <= alerting.RESOLVE_RATE:
            is_open = False
            alerts.append((batch, device, "error-rate", "resolve"))
    return alerts


def silence_alerts(batches: Sequence[int], device: str, last_batch: int, silence_batches: int) -> list[Alert]:
    """Silence alerts of a device that spoke in ``batches`` (one batch per ``1 s``; the run ended at ``last_batch``).

    A timeout ``silence`` after the batch fires in the first batch *strictly*
    after it without data: ``silence_batches + 1`` batches later.
    """
    alerts = []
    for spoke, spoke_next in zip(batches, [*batches[1:], None], strict=True):
        fires = spoke + silence_batches + 1
        if (spoke_next is None and fires <= last_batch) or (spoke_next is not None and fires < spoke_next):
            alerts.append((fires, device, "silent", "trigger"))
            if spoke_next is not None:
                alerts.append((spoke_next, device, "silent", "resolve"))
    return alerts


def recording_alerts(lines: list[str]) -> list[Alert]:
    """Every alert the replayed recording must produce: one batch per recorded second, plus a last empty batch."""
    per_batch = alerting.SAMPLE_RECORDS_PER_SECOND
    spoke: dict[str, list[int]] = {}
    statuses: dict[str, list[tuple[int, str]]] = {}
    for index, line in enumerate(lines):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "device" not in event:
            continue
        batch = index // per_batch
        device_batches = spoke.setdefault(event["device"], [])
        if not device_batches or device_batches[-1] != batch:
            device_batches.append(batch)
        statuses.setdefault(event["device"], []).append((batch, event["status"]))
    last_batch = -(-len(lines) // per_batch)  # the no-data batch after the recording
    alerts = []
    for device in spoke:
        alerts += silence_alerts(spoke[device], device, last_batch, alerting.SILENCE_MS // 1000)
        alerts += error_rate_alerts(statuses[device], device)
    return sorted(alerts)


def as_alerts(sink: MemorySink) -> list[Alert]:
    return sorted((batch, row["key"], row["alert_id"], row["action"])
                  for batch, rows in sink.batches.items() for row in rows)


class TestAlertingRecording:
    def test_generator_reproduces_the_committed_recording(self) -> None:
        lines = generate_device_events.generate()
        assert alerting.DATA.read_text() == "\n".join(lines) + "\n"
        assert len(lines) == generate_device_events.SECONDS * alerting.SAMPLE_RECORDS_PER_SECOND

    def test_alerts_match_an_offline_reading_of_the_recording(self) -> None:
        sink = MemorySink()
        app = alerting.build_app(sink=sink)
        app.run()
        expected = recording_alerts(alerting.DATA.read_text().splitlines())
        assert as_alerts(sink) == expected
        # The scripted incidents are all there: long silences page, the short one does not; dev-07 twice.
        triggers = sorted((device, rule) for _, device, rule, action in expected if action == "trigger")
        assert triggers == [("dev-02", "silent"), ("dev-04", "error-rate"), ("dev-07", "error-rate"),
                            ("dev-07", "error-rate"), ("dev-09", "silent"), ("dev-11", "silent")]
        assert len(app.dead_letter_sink.rows) == len(generate_device_events.MALFORMED)

    def test_every_row_is_a_valid_pagerduty_alert(self) -> None:
        from statefulstream.sinks.webhook import Alert as PagerDutyAlert

        sink = MemorySink()
        alerting.build_app(sink=sink).run()
        alerts = [PagerDutyAlert.from_mapping(row) for row in sink.rows]
        assert {a.action for a in alerts} == {"trigger", "resolve"}
        assert all(a.summary and a.timestamp for a in alerts if a.action == "trigger")

    def test_a_restart_from_the_checkpoint_continues_without_repeating_alerts(self, tmp_path: pathlib.Path) -> None:
        once, twice = MemorySink(), MemorySink()
        alerting.build_app(sink=once, checkpoint_dir=str(tmp_path / "cp")).run()
        # Same recording, same checkpoint: nothing new to read, and the state remembers open incidents.
        alerting.build_app(sink=twice, checkpoint_dir=str(tmp_path / "cp")).run()
        assert twice.rows == []
        assert once.rows and as_alerts(once) == recording_alerts(alerting.DATA.read_text().splitlines())


class CrashAfterSilentTriggers(Sink):
    """Fails the first batch of only silent triggers once the sinks before it have delivered them.

    The batch is not committed, so the next start replays it and the triggers are sent again.
    """

    name = "crash"

    def __init__(self) -> None:
        self.crashed = False

    def write(self, batch_id: int, rows: Sequence[Any]) -> None:
        if not self.crashed and rows and all(r["alert_id"] == "silent" and r["action"] == "trigger" for r in rows):
            self.crashed = True
            msg = f"simulated crash after batch {batch_id} was delivered"
            raise RuntimeError(msg)


def run_in_thread(run: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def episodes(events: Iterable[dict[str, Any]]) -> dict[str, list[Alert]]:
    """Error-rate alerts per device, from the produced events in order."""
    statuses: dict[str, list[tuple[int, str]]] = {}
    for event in events:
        statuses.setdefault(event["device"], []).append((0, event["status"]))
    return {device: error_rate_alerts(seq, device) for device, seq in statuses.items()}


@pytest.mark.kafka
class TestAlertingEndToEnd:
    def test_receiver_gets_one_incident_per_episode_and_a_replay_pages_no_one(self, kafka_broker: Any,
                                                                              tmp_path: pathlib.Path) -> None:
        receiver = WebhookReceiver()
        receiver.start()
        try:
            topic = kafka_broker.create_topic(partitions=2)
            argv = ["devices", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--keys", "4", "--rate", "100",
                    "--count", "800", "--start-ms", "1714557600000", "--no-pace", "--burst-every", "4 seconds",
                    "--burst-length", "1500 ms", "--seed", "7"]
            assert produce_events.main(argv) == 800
            produced = list(produce_events.events_for(produce_events.parse_args(argv)))
            env = ExampleEnv.from_environ({"KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "EVENTS_TOPIC": topic,
                                           "KAFKA_WATERMARK_PROBE": "1"})
            pagerduty = {"PAGERDUTY_ROUTING_KEY": "e2e-routing-key", "PAGERDUTY_URL": receiver.url}

            def build(sinks: list[Sink]) -> Any:
                return alerting.build_app(env.kafka_source("alerts"), sinks, checkpoint_dir=str(tmp_path / "cp"),
                                          trigger="200 ms", silence="1 second")

            # Run 1: reads everything, pages, then crashes right after delivering the silent triggers.
            first = build([alerting.alert_sink_from_env(pagerduty), CrashAfterSilentTriggers()])
            thread, errors = run_in_thread(first.run)
            thread.join(60)
            assert not thread.is_alive() and len(errors) == 1 and "simulated crash" in str(errors[0])

            # Run 2: replays the crashed batch (the same triggers again), then keeps running.
            sink = alerting.alert_sink_from_env(pagerduty)
            second = build([sink])
            replayed = threading.Event()
            second.add_listener(lambda p: replayed.set() if p.replayed else None)
            thread, errors = run_in_thread(second.run)
            try:
                wait_for(replayed.is_set, "the replayed batch")
            finally:
                second.stop()
                thread.join(30)
            assert errors == []

            incidents = receiver.book.snapshot()
            expected = episodes(produced)
            keys = {sink.dedup_key(d, "silent"): d for d in expected}
            keys.update({sink.dedup_key(d, "error-rate"): d for d, alerts in expected.items() if alerts})
            assert set(incidents) == set(keys)
            assert sum(len(alerts) for alerts in expected.values()) >= 4  # bursts did page
            for device, alerts in expected.items():
                silent = incidents[sink.dedup_key(device, "silent")]
                # Sent twice (the replay), opened once: the replay paged no one.
                assert (silent["incidents"], silent["triggers"], silent["deduplicated"], silent["open"]) == \
                    (1, 2, 1, True)
                if alerts:
                    errors_incident = incidents[sink.dedup_key(device, "error-rate")]
                    triggers = sum(1 for a in alerts if a[3] == "trigger")
                    assert errors_incident["incidents"] == errors_incident["triggers"] == triggers
                    assert errors_incident["resolves"] == len(alerts) - triggers
                    assert errors_incident["open"] == (alerts[-1][3] == "trigger")
        finally:
            receiver.stop()
