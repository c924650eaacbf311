"""Webhook and PagerDuty sinks against a real, scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from statefulstream import App, BatchProgress, GroupState, RetryPolicy
from statefulstream.errors import ConfigError, SinkError, SinkUnavailableError
from statefulstream.records import DeadLetter
from statefulstream.sink import SinkContext
from statefulstream.sinks import MemorySink, foreach_batch
from statefulstream.sinks.webhook import Alert, PagerDutySink, WebhookSink
from statefulstream.sources.memory import MemorySource

ROUTING_KEY = "R0UT1NG0KEY0SECRET0000000000abcd"
FAST = RetryPolicy(max_attempts=4, initial_backoff="5 ms", max_backoff="20 ms", max_retry_after="2 seconds")


@dataclasses.dataclass
class Reply:
    status: int = 202
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b'{"status":"success"}'
    delay: float = 0.0
    echo: bool = False  # answer with the request body (a server that quotes the event back)


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A loopback HTTP server answering each POST with the next scripted ``Reply`` (202 when none is left)."""

    def __init__(self) -> None:
        self.script: collections.deque[Reply] = collections.deque()
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                reply = receiver.script.popleft() if receiver.script else Reply()
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                  body, time.monotonic(), reply.status))
                time.sleep(reply.delay)
                content = body if reply.echo else reply.body
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v2/enqueue"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.sinks: list[Any] = []  # closed at teardown

    def incidents(self) -> int:
        """Count incidents the way PagerDuty does: a trigger opens one unless its dedup_key is open."""
        open_keys: set[str] = set()
        opened = 0
        for request in self.received:  # every request that reached the server counts, even if the client timed out
            if not 200 <= request.status < 300:
                continue
            event = request.json
            if event["event_action"] == "trigger" and event["dedup_key"] not in open_keys:
                open_keys.add(event["dedup_key"])
                opened += 1
            elif event["event_action"] == "resolve":
                open_keys.discard(event["dedup_key"])
        return opened


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    for sink in r.sinks:
        sink.close()
    r.server.shutdown()
    r.server.server_close()


class Recorder:
    """A SinkContext that keeps dead letters and counts retries."""

    def __init__(self, app_name: str = "alerts") -> None:
        self.dead: list[DeadLetter] = []
        self.retries = 0
        self.context = SinkContext(app_name=app_name, dead_letter=self.dead.append, on_retry=self._retry)

    def _retry(self) -> None:
        self.retries += 1


def pagerduty(receiver: Receiver, recorder: Recorder, **kwargs: Any) -> PagerDutySink:
    sink = PagerDutySink(ROUTING_KEY, url=receiver.url, **{"retry": FAST, **kwargs})
    sink.open(recorder.context)
    receiver.sinks.append(sink)
    return sink


def alerts(n: int) -> list[Alert]:
    return [Alert(key=f"host-{i}", alert_id="cpu-high", summary=f"CPU high on host-{i}") for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestPagerDutyDelivery:
    def test_success_sends_one_events_v2_body_per_alert(self, receiver: Receiver) -> None:
        recorder = Recorder()
        sink = pagerduty(receiver, recorder, source="monitor")
        at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
        sink.write(0, [Alert(key="h1", alert_id="disk", summary="disk full", severity="critical", timestamp=at,
                             component="disk", group="db", class_="storage", custom_details={"used": 0.99})])
        (request,) = receiver.received
        assert request.path == "/v2/enqueue" and request.headers["content-type"] == "application/json"
        assert request.json == {
            "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": sink.dedup_key("h1", "disk"),
            "payload": {"summary": "disk full", "source": "monitor", "severity": "critical",
                        "timestamp": "2024-05-01T12:00:00+00:00", "component": "disk", "group": "db",
                        "class": "storage", "custom_details": {"used": 0.99}}}
        assert recorder.dead == [] and recorder.retries == 0

    def test_dict_rows_are_accepted_with_pagerduty_spellings(self, receiver: Receiver) -> None:
        sink = pagerduty(receiver, Recorder())
        sink.write(0, [{"key": "h1", "alert_id": "a", "summary": "s", "class": "c", "event_action": "trigger"}])
        assert receiver.received[0].json["payload"]["class"] == "c"

    def test_resolve_carries_only_the_dedup_key_of_its_trigger(self, receiver: Receiver) -> None:
        sink = pagerduty(receiver, Recorder())
        sink.write(0, [Alert(key="h1", alert_id="cpu", summary="CPU high"),
                       Alert(key="h1", alert_id="cpu", action="resolve")])
        trigger, resolve = (r.json for r in receiver.received)
        assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": trigger["dedup_key"]}

    def test_source_defaults_to_the_app_name(self, receiver: Receiver) -> None:
        sink = pagerduty(receiver, Recorder(app_name="checkout-alerts"))
        sink.write(0, alerts(1))
        assert receiver.received[0].json["payload"]["source"] == "checkout-alerts"

    def test_server_error_then_success_is_retried_and_counted(self, receiver: Receiver) -> None:
        receiver.script.extend([Reply(500), Reply(502)])
        recorder = Recorder()
        pagerduty(receiver, recorder).write(0, alerts(1))
        assert [r.status for r in receiver.received] == [500, 502, 202]
        assert len({r.body for r in receiver.received}) == 1  # the retry is the same event
        assert recorder.retries == 2 and recorder.dead == []
        assert receiver.incidents() == 1

    @pytest.mark.parametrize("status", [429, 503])
    def test_retry_after_is_honoured(self, receiver: Receiver, status: int) -> None:
        receiver.script.append(Reply(status, headers={"Retry-After": "0.3"}))
        pagerduty(receiver, Recorder()).write(0, alerts(1))
        first, second = receiver.received
        # FAST backs off at most 20 ms, so a 0.3 s gap comes from Retry-After.
        assert second.at - first.at >= 0.3
        assert second.status == 202

    def test_retry_after_beyond_the_policy_hands_the_wait_to_the_runtime(self, receiver: Receiver) -> None:
        receiver.script.append(Reply(429, headers={"Retry-After": "120"}))
        with pytest.raises(SinkUnavailableError, match="HTTP 429") as info:
            pagerduty(receiver, Recorder()).write(0, alerts(1))
        assert info.value.retry_after == 120.0
        assert len(receiver.received) == 1

    def test_timeout_is_retried_and_the_duplicate_opens_no_second_incident(self, receiver: Receiver) -> None:
        receiver.script.append(Reply(delay=0.6))  # the server gets the event but answers too late
        recorder = Recorder()
        started = time.monotonic()
        pagerduty(receiver, recorder, timeout="150 ms").write(0, alerts(1))
        assert time.monotonic() - started < 0.6  # the client did not wait for the slow answer
        assert len(receiver.received) == 2 and recorder.retries == 1
        assert receiver.incidents() == 1

    def test_permanent_400_is_dead_lettered_once_and_the_batch_goes_on(self, receiver: Receiver) -> None:
        receiver.script.extend([Reply(), Reply(400, body=b'{"status":"invalid event","message":"bad summary"}')])
        recorder = Recorder()
        rows = alerts(3)
        pagerduty(receiver, recorder).write(7, rows)
        assert len(receiver.received) == 3  # the 400 was not retried
        (dead,) = recorder.dead
        assert dead.error == "sink" and dead.source == "pagerduty"
        assert dead.position == {"sink": "pagerduty", "batch_id": 7, "row": 1}
        assert "HTTP 400" in dead.reason and "bad summary" in dead.reason
        assert dead.raw == rows[1]
        assert recorder.retries == 0

    def test_misconfigured_endpoint_stops_with_sink_error_not_dead_letters(self, receiver: Receiver) -> None:
        receiver.script.append(Reply(403, body=b"forbidden"))
        recorder = Recorder()
        with pytest.raises(SinkError, match="HTTP 403.*check the URL and credentials") as info:
            pagerduty(receiver, recorder).write(0, alerts(2))
        assert not isinstance(info.value, SinkUnavailableError)
        assert recorder.dead == [] and len(receiver.received) == 1

    def test_exhausted_retries_raise_sink_unavailable_and_resume_at_the_failed_row(self, receiver: Receiver) -> None:
        receiver.script.extend([Reply(), *[Reply(503)] * FAST.max_attempts])
        recorder = Recorder()
        sink = pagerduty(receiver, recorder)
        rows = alerts(3)
        with pytest.raises(SinkUnavailableError, match=r"batch 4 row 1 .*HTTP 503, after 4 attempt\(s\)"):
            sink.write(4, rows)
        assert len(receiver.received) == 1 + FAST.max_attempts
        assert recorder.retries == FAST.max_attempts - 1
        sink.write(4, rows)  # the runtime retries the held batch
        delivered = [r.json["dedup_key"] for r in receiver.received if r.status == 202]
        assert delivered == [sink.dedup_key(a.key, a.alert_id) for a in rows]

    def test_connection_refused_is_retried_then_unavailable(self) -> None:
        recorder = Recorder()
        sink = PagerDutySink(ROUTING_KEY, url=f"http://127.0.0.1:{free_port()}/v2/enqueue", retry=FAST)
        sink.open(recorder.context)
        with pytest.raises(SinkUnavailableError, match="ConnectError"):
            sink.write(0, alerts(1))
        assert recorder.retries == FAST.max_attempts - 1

    def test_invalid_alert_rows_are_dead_lettered_with_the_reason(self, receiver: Receiver) -> None:
        recorder = Recorder()
        pagerduty(receiver, recorder).write(2, [{"key": "h", "alert_id": "a", "summary": "s", "severity": "fatal"},
                                                {"key": "h", "summary": "s"}, "not an alert", alerts(1)[0]])
        assert len(receiver.received) == 1
        reasons = [d.reason for d in recorder.dead]
        assert [d.position["row"] for d in recorder.dead] == [0, 1, 2]
        assert "severity must be one of critical, error, warning, info; got 'fatal'" in reasons[0]
        assert "Alert needs 'alert_id'" in reasons[1]

    def test_rate_limit_spaces_requests(self, receiver: Receiver) -> None:
        pagerduty(receiver, Recorder(), rate_limit_per_s=20).write(0, alerts(5))
        # 5 requests at 20/s span at least 4 intervals of 50 ms (arrival jitter allowed for; unlimited: ~5 ms).
        assert len(receiver.received) == 5
        assert receiver.received[-1].at - receiver.received[0].at >= 0.18


class TestPagerDutyReplay:
    def test_replayed_batch_after_restart_opens_no_second_incident(self, receiver: Receiver) -> None:
        rows = alerts(3)
        pagerduty(receiver, Recorder()).write(5, rows)
        pagerduty(receiver, Recorder()).write(5, rows)  # a new process replays the batch
        assert len(receiver.received) == 6
        assert receiver.incidents() == 3

    def test_rewrite_of_a_delivered_batch_by_the_same_sink_sends_nothing(self, receiver: Receiver) -> None:
        sink = pagerduty(receiver, Recorder())
        sink.write(5, alerts(2))
        sink.write(5, alerts(2))
        assert len(receiver.received) == 2

    def test_dedup_key_depends_on_app_key_and_alert_id_only(self, receiver: Receiver) -> None:
        a, b = pagerduty(receiver, Recorder("app")), pagerduty(receiver, Recorder("app"))
        other_app = pagerduty(receiver, Recorder("other"))
        assert a.dedup_key(("eu", 1), "cpu") == b.dedup_key(("eu", 1), "cpu")
        keys = {a.dedup_key(("eu", 1), "cpu"), a.dedup_key(("eu", 2), "cpu"), a.dedup_key(("eu", 1), "disk"),
                other_app.dedup_key(("eu", 1), "cpu")}
        assert len(keys) == 4 and all(len(k) <= 255 for k in keys)

    def test_explicit_dedup_key_is_used_as_given(self, receiver: Receiver) -> None:
        pagerduty(receiver, Recorder()).write(0, [Alert(key="h", alert_id="a", summary="s", dedup_key="INC-42")])
        assert receiver.received[0].json["dedup_key"] == "INC-42"


class TestSecrets:
    def test_routing_key_never_reaches_logs_errors_dead_letters_or_repr(
            self, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        receiver.script.extend([Reply(500), Reply(400, echo=True), *[Reply(503)] * FAST.max_attempts])
        recorder = Recorder()
        sink = pagerduty(receiver, recorder)
        with pytest.raises(SinkUnavailableError) as info:
            sink.write(0, alerts(3))
        sink.close()
        assert ROUTING_KEY in receiver.received[0].body.decode()  # it was sent where it belongs
        texts = [caplog.text, str(info.value), repr(sink), *(d.reason for d in recorder.dead),
                 json.dumps([d.to_row(0) for d in recorder.dead], default=repr)]
        assert "HTTP 400" in recorder.dead[0].reason and "***" in recorder.dead[0].reason
        assert all(ROUTING_KEY not in text for text in texts)
        assert "retrying" in caplog.text  # the retries were logged, without the key

    @pytest.mark.parametrize(("userinfo", "suffix", "headers", "sent_auth", "secrets"), [
        ("", "/T0KEN-IN-PATH?sig=QUERYSECRET", {"Authorization": "Bearer HDRSECRET"}, "Bearer HDRSECRET",
         ("T0KEN-IN-PATH", "QUERYSECRET", "HDRSECRET")),
        ("user:PASSWORD@", "", {}, "Basic dXNlcjpQQVNTV09SRA==", ("PASSWORD",)),
    ])
    def test_webhook_secrets_in_url_and_headers_stay_out_of_logs(
            self, receiver: Receiver, caplog: pytest.LogCaptureFixture, userinfo: str, suffix: str,
            headers: dict[str, str], sent_auth: str, secrets: tuple[str, ...]) -> None:
        caplog.set_level(logging.DEBUG)
        receiver.script.extend([Reply(500), Reply(400, echo=True)])
        recorder = Recorder()
        sink = WebhookSink(receiver.url.replace("http://", "http://" + userinfo) + suffix, headers=headers,
                           retry=FAST)
        sink.open(recorder.context)
        sink.write(0, [{"n": 1}, {"n": 2}])
        sink.close()
        assert receiver.received[0].headers["authorization"] == sent_auth  # sent where it belongs
        assert "HTTP Request" in caplog.text  # httpx's own request log was captured, redacted
        for secret in secrets:
            assert secret not in caplog.text and secret not in repr(sink) and secret not in recorder.dead[0].reason

    def test_write_before_open_sends_nothing(self, receiver: Receiver) -> None:
        with pytest.raises(SinkError, match=r"pagerduty sink used before open\(\)"):
            PagerDutySink(ROUTING_KEY, url=receiver.url).write(0, alerts(1))
        assert receiver.received == []

    def test_missing_routing_key_is_a_config_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PAGERDUTY_ROUTING_KEY", raising=False)
        with pytest.raises(ConfigError, match="set PAGERDUTY_ROUTING_KEY"):
            PagerDutySink()

    def test_routing_key_is_read_from_the_environment(self, receiver: Receiver,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", ROUTING_KEY)
        sink = PagerDutySink(url=receiver.url)
        sink.open(SinkContext())
        sink.write(0, alerts(1))
        assert receiver.received[0].json["routing_key"] == ROUTING_KEY


class TestWebhookSink:
    def test_posts_each_row_as_json_with_a_stable_idempotency_key(self, receiver: Receiver) -> None:
        rows = [{"n": 1, "at": dt.datetime(2024, 1, 1)}, {"n": 2, "at": dt.datetime(2024, 1, 2)}]
        for _ in range(2):  # the second process replays batch 3
            sink = WebhookSink(receiver.url, retry=FAST)
            sink.open(Recorder().context)
            sink.write(3, rows)
        bodies = [r.json for r in receiver.received]
        assert bodies == [{"n": 1, "at": "2024-01-01T00:00:00Z"}, {"n": 2, "at": "2024-01-02T00:00:00Z"}] * 2
        keys = [r.headers["idempotency-key"] for r in receiver.received]
        assert keys[:2] == keys[2:] and keys[0] != keys[1]

    def test_idempotency_key_from_a_row_field_or_callable(self, receiver: Receiver) -> None:
        by_field = WebhookSink(receiver.url, idempotency_key="id", idempotency_header="X-Dedup")
        by_fn = WebhookSink(receiver.url, idempotency_key=lambda row: f"k{row['id']}")
        for sink in (by_field, by_fn):
            sink.open(SinkContext())
            sink.write(0, [{"id": 9}])
        assert [r.headers.get("x-dedup") or r.headers["idempotency-key"] for r in receiver.received] == ["9", "k9"]

    def test_row_without_the_key_field_is_dead_lettered(self, receiver: Receiver) -> None:
        recorder = Recorder()
        sink = WebhookSink(receiver.url, idempotency_key="id")
        sink.open(recorder.context)
        sink.write(0, [{"other": 1}, {"id": 2}])
        assert [d.reason for d in recorder.dead] == ["row has no idempotency key field 'id'"]
        assert len(receiver.received) == 1

    def test_unencodable_row_is_dead_lettered(self, receiver: Receiver) -> None:
        recorder = Recorder()
        sink = WebhookSink(receiver.url)
        sink.open(recorder.context)
        sink.write(0, [{"x": object()}, {"x": 1}])
        assert "cannot be encoded as JSON" in recorder.dead[0].reason and len(receiver.received) == 1

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"url": "ftp://example.com/x"}, "must start with http:// or https://"),
        ({"timeout": "0 seconds"}, "timeout must be positive"),
        ({"rate_limit_per_s": 0}, "rate_limit_per_s must be positive"),
        ({"retry": {"max_attempts": 3}}, "retry must be a RetryPolicy"),
    ])
    def test_invalid_options_fail_at_construction(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            WebhookSink(**{"url": "https://example.com/hook", **kwargs})


class TestRetryPolicy:
    def test_durations_are_parsed_and_compared_by_value(self) -> None:
        assert RetryPolicy(initial_backoff="1 second") == RetryPolicy(initial_backoff=dt.timedelta(seconds=1))
        assert RetryPolicy(max_attempts=2) != RetryPolicy(max_attempts=3)

    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_attempts": None}, "needs max_attempts or max_elapsed"),
        ({"max_elapsed": "0 seconds"}, "max_elapsed must be positive"),
        ({"jitter": 1.5}, "jitter must be a fraction from 0 to 1"),
        ({"multiplier": 0.5}, "multiplier must be a number >= 1"),
        ({"initial_backoff": "-1 second"}, "initial_backoff must be positive"),
        ({"initial_backoff": "10 seconds", "max_backoff": "1 second"}, "must not be below initial_backoff"),
    ])
    def test_invalid_values_are_config_errors(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            RetryPolicy(**kwargs)


class TestAlert:
    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"action": "open"}, "action must be one of trigger, acknowledge, resolve"),
        ({"severity": "high"}, "severity must be one of"),
        ({"summary": ""}, "a trigger needs a summary"),
    ])
    def test_invalid_alert_fails_when_built(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            Alert(**{"key": "k", "alert_id": "a", "summary": "s", **kwargs})

    def test_from_mapping_rejects_unknown_fields(self) -> None:
        with pytest.raises(ConfigError, match="no field\\(s\\) 'details'; put extra data in 'custom_details'"):
            Alert.from_mapping({"key": "k", "alert_id": "a", "summary": "s", "details": {}})


class TestPagerDutyInApp:
    """The sink driven by the real executor: retries, dead letters and a crash-replay end to end."""

    EVENTS: ClassVar[list[dict[str, Any]]] = [
        {"host": "h1", "cpu": 95}, {"host": "h2", "cpu": 97}, {"host": "h3", "cpu": 20}, {"host": "h1", "cpu": 99}]

    def app(self, receiver: Receiver, checkpoint_dir: Any, extra_sink: Any = None,
            dead: MemorySink | None = None) -> App:
        app = App("alerts", source=MemorySource(self.EVENTS), checkpoint_dir=checkpoint_dir, trigger="once",
                  dead_letters=dead or MemorySink(),
                  sink_retry=RetryPolicy(max_attempts=None, max_elapsed="2 seconds", initial_backoff="10 ms"))
        sink = PagerDutySink(ROUTING_KEY, url=receiver.url, retry=FAST)

        @app.flat_map_groups_with_state(key="host", sink=[sink, extra_sink] if extra_sink else sink)
        def alert(host: str, events: list[dict[str, Any]], state: GroupState) -> Iterator[Alert]:
            peak = max(e["cpu"] for e in events)
            if peak > 90 and not state.exists:
                state.update("open")
                yield Alert(key=host, alert_id="cpu-high", summary=f"CPU {peak}% on {host}", severity="critical")

        return app

    def expected_incidents(self) -> int:
        return len({e["host"] for e in self.EVENTS if e["cpu"] > 90})

    def test_retries_and_dead_letters_are_reported_and_nothing_is_lost(self, receiver: Receiver) -> None:
        receiver.script.extend([Reply(500), Reply(), Reply(400, body=b'{"message":"bad"}')])
        dead = MemorySink()
        app = self.app(receiver, None, dead=dead)
        reports: list[BatchProgress] = []
        app.add_listener(reports.append)
        app.run()
        assert [r.status for r in receiver.received] == [500, 202, 400]
        (row,) = dead.rows
        assert row["error"] == "sink" and "HTTP 400" in row["reason"] and ROUTING_KEY not in str(row)
        assert reports[0].sink_retries >= 1 and reports[0].records_dead_lettered == {"sink": 1}

    def test_crash_after_delivery_replays_the_batch_without_a_second_incident(
            self, receiver: Receiver, tmp_path: Any) -> None:
        def crash_once(batch_id: int, rows: list[Any]) -> None:
            if not (tmp_path / "crashed").exists():
                (tmp_path / "crashed").touch()
                raise RuntimeError("killed after the alerts went out, before the commit")

        with pytest.raises(SinkError, match="killed after the alerts went out"):
            self.app(receiver, tmp_path / "ckpt", extra_sink=foreach_batch(crash_once)).run()
        delivered_before_crash = len(receiver.received)
        self.app(receiver, tmp_path / "ckpt", extra_sink=foreach_batch(crash_once)).run()  # restart: replay
        assert len(receiver.received) == 2 * delivered_before_crash == 2 * self.expected_incidents()
        assert receiver.incidents() == self.expected_incidents()
