"""No secret option of any sink reaches an output channel, even when the receiver echoes the request.

For every secret-bearing option (webhook URL path and query tokens, HTTP basic
credentials, header values, PagerDuty's routing key, Cassandra's password,
Kafka's SASL password) a real job runs against a real server on loopback and
every channel is searched: logs at DEBUG (the runtime's, httpx's, httpcore's,
the drivers'), exception messages and their causes, the dead-letter files,
the metrics exposition, the progress reports, and the sinks' reprs.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cql_server import CqlServer

from statefulstream import App, GroupState, RetryPolicy, SinkError
from statefulstream.sink import Sink
from statefulstream.sinks.cassandra import CassandraSink
from statefulstream.sinks.cassandra_cql import TableSchema
from statefulstream.sinks.kafka import KafkaSink
from statefulstream.sinks.webhook import Alert, PagerDutySink, WebhookSink
from statefulstream.sources import MemorySource

FAST = RetryPolicy(max_attempts=2, initial_backoff="1 ms", max_backoff="2 ms")
HOLD = RetryPolicy(max_attempts=None, max_elapsed="50 ms", initial_backoff="1 ms", max_backoff="5 ms")

PATH_TOKEN = "T0KEN-IN-PATH-7f3a9c"
QUERY_TOKEN = "QUERY-SECRET-55b1e0"
PASSWORD = "PASSW0RD-c0ffee"
BEARER = "BEARER-SECRET-9d2e41"
API_KEY = "API-KEY-SECRET-1a2b3c"
ROUTING_KEY = "R0UT1NG0KEY0SECRET0000000000abcd"


class EchoReceiver:
    """A loopback HTTP server answering every POST with the next scripted status and the whole request as JSON."""

    def __init__(self) -> None:
        self.statuses: collections.deque[int] = collections.deque()
        self.requests: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append(f"{self.requestline}\r\n{self.headers}\r\n{body.decode()}")
                status = receiver.statuses.popleft() if receiver.statuses else 202
                # Shaped like httpbin's echo: headers sorted (Authorization comes early), the full URL, the body.
                echo = json.dumps({"headers": dict(sorted(self.headers.items())), "method": self.command,
                                   "url": f"http://{self.headers['Host']}{self.path}", "data": body.decode()}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(echo)))
                self.send_header("X-Echo-Path", self.path)  # echoed in a header too (httpcore logs them)
                self.end_headers()
                self.wfile.write(echo)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)


@pytest.fixture
def receiver() -> Iterator[EchoReceiver]:
    r = EchoReceiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# option -> (sink factory given the receiver's port, rows for it, the secret forms that must never show)
WEBHOOK_OPTIONS: dict[str, tuple[Callable[[int], Sink], Callable[[int], Any], list[str]]] = {
    "url path token": (lambda port: WebhookSink(f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}", retry=FAST),
                       lambda i: {"n": i}, [PATH_TOKEN]),
    "url query token": (lambda port: WebhookSink(f"http://127.0.0.1:{port}/hook?token={QUERY_TOKEN}", retry=FAST),
                        lambda i: {"n": i}, [QUERY_TOKEN]),
    "url basic credentials": (lambda port: WebhookSink(f"http://alice:{PASSWORD}@127.0.0.1:{port}/hook", retry=FAST),
                              lambda i: {"n": i}, [PASSWORD, basic("alice", PASSWORD)]),
    "header values": (lambda port: WebhookSink(f"http://127.0.0.1:{port}/hook", retry=FAST,
                                               headers={"Authorization": f"Bearer {BEARER}", "X-Api-Key": API_KEY}),
                      lambda i: {"n": i}, [BEARER, API_KEY]),
    "basic header": (lambda port: WebhookSink(f"http://127.0.0.1:{port}/hook", retry=FAST,
                                              headers={"Authorization": f"Basic {basic('bob', PASSWORD)}"}),
                     lambda i: {"n": i}, [PASSWORD, basic("bob", PASSWORD)]),
    "pagerduty routing key": (lambda port: PagerDutySink(ROUTING_KEY, url=f"http://127.0.0.1:{port}/v2/enqueue",
                                                         retry=FAST),
                              lambda i: Alert(key=f"h{i}", alert_id="cpu", summary="hot"), [ROUTING_KEY]),
    "pagerduty url query token": (lambda port: PagerDutySink(ROUTING_KEY, retry=FAST,
                                                             url=f"http://127.0.0.1:{port}/e?token={QUERY_TOKEN}"),
                                  lambda i: Alert(key=f"h{i}", alert_id="cpu", summary="hot"), [QUERY_TOKEN]),
}


def run_job(sink: Sink, rows: list[Any], checkpoint: Path) -> BaseException | None:
    """Run one batch of ``rows`` into ``sink``; return what it raised, if anything."""
    app = App("secrets", source=MemorySource([{"i": i} for i in range(len(rows))]), checkpoint_dir=checkpoint,
              trigger="once", sink_retry=HOLD)

    @app.flat_map_groups_with_state(key="i", sink=sink)
    def emit(key: int, values: list[Any], state: GroupState[int]) -> Iterator[Any]:
        yield rows[key]

    try:
        app.run()
    except SinkError as exc:
        return exc
    finally:
        run_job.texts.append(app.metrics.exposition()[0].decode())  # type: ignore[attr-defined]
    return None


run_job.texts = []  # type: ignore[attr-defined]


def exception_texts(exc: BaseException | None) -> list[str]:
    texts = []
    while exc is not None:
        texts += [str(exc), repr(exc)]
        exc = exc.__cause__ or exc.__context__
    return texts


def files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for sub in ("dead_letters", "progress")
                     for p in sorted((root / sub).rglob("*")) if p.is_file())


def assert_hidden(secrets: list[str], texts: list[str]) -> None:
    for secret in secrets:
        leaks = [text for text in texts if secret in text]
        assert not leaks, f"{secret!r} leaked into: {leaks[0][:2000]}"


@pytest.mark.parametrize("option", sorted(WEBHOOK_OPTIONS))
def test_http_sink_secrets_stay_out_of_every_channel(option: str, receiver: EchoReceiver, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    make, row, secrets = WEBHOOK_OPTIONS[option]
    run_job.texts.clear()  # type: ignore[attr-defined]
    # 1: the first row rejected for good (400, dead-lettered with the echoed request), the second retried (500).
    receiver.statuses.extend([400, 500])
    sink = make(receiver.port)
    assert run_job(sink, [row(0), row(1)], tmp_path / "rejected") is None
    # 2: credentials refused (401 with the echo): the app stops with SinkError.
    receiver.statuses.extend([401])
    refused = run_job(make(receiver.port), [row(0)], tmp_path / "refused")
    # 3: the receiver stays down (503 with the echo): retries, backpressure, then SinkError.
    receiver.statuses.extend([503] * 1000)
    down = run_job(make(receiver.port), [row(0)], tmp_path / "down")
    receiver.statuses.clear()

    # The secrets were really sent, and every channel really carries the failures.
    assert any(s in r for r in receiver.requests for s in secrets)
    dead = files_text(tmp_path / "rejected")
    assert "HTTP 400" in dead and "Content-Type" in dead  # the echoed request reached the dead letter, redacted
    assert isinstance(refused, SinkError) and "HTTP 401" in str(refused) and "Content-Type" in str(refused)
    assert isinstance(down, SinkError) and "stayed unavailable" in str(down)
    assert "HTTP Request" in caplog.text and "retrying" in caplog.text and "receive_response_headers" in caplog.text
    assert list((tmp_path / "rejected" / "progress").glob("*.json"))  # a progress report was kept and is searched
    assert all(f'sink="{sink.name}"' in text for text in run_job.texts)  # type: ignore[attr-defined]
    texts = [caplog.text, repr(sink), dead, files_text(tmp_path / "refused"), files_text(tmp_path / "down"),
             *exception_texts(refused), *exception_texts(down), *run_job.texts]  # type: ignore[attr-defined]
    assert_hidden(secrets, texts)


def test_cassandra_password_stays_out_of_every_channel(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run_job.texts.clear()  # type: ignore[attr-defined]
    server = CqlServer(username="app", password=PASSWORD)
    try:
        options: dict[str, Any] = {"hosts": "127.0.0.1", "port": server.port, "keyspace": "ks", "table": "t",
                                   "schema": TableSchema({"k": "int"}, partition_key=("k",)), "username": "app",
                                   "protocol_version": 4, "retry": FAST}
        good = CassandraSink(**options, password=PASSWORD)
        assert run_job(good, [{"k": 1}, {"k": None}], tmp_path / "good") is None  # a null key is dead-lettered
        bad = CassandraSink(**options, password="WR0NG-" + PASSWORD)
        refused = run_job(bad, [{"k": 1}], tmp_path / "bad")
    finally:
        server.close()
    assert "null" in files_text(tmp_path / "good").lower()
    assert isinstance(refused, SinkError) and "credentials were refused" in str(refused)
    texts = [caplog.text, repr(good), repr(bad), *exception_texts(refused), files_text(tmp_path / "good"),
             files_text(tmp_path / "bad"), *run_job.texts]  # type: ignore[attr-defined]
    assert_hidden([PASSWORD], texts)


def test_kafka_sasl_password_stays_out_of_every_channel(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        receiver: EchoReceiver) -> None:
    caplog.set_level(logging.DEBUG)
    run_job.texts.clear()  # type: ignore[attr-defined]
    # A port that speaks HTTP, not Kafka: the client cannot connect, so the sink fails as with a wrong password.
    sink = KafkaSink("out", bootstrap_servers=f"127.0.0.1:{receiver.port}", timeout="1 second",
                     config={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                             "sasl.username": "app", "sasl.password": PASSWORD})
    failed = run_job(sink, [{"k": 1}], tmp_path / "kafka")
    assert isinstance(failed, SinkError)
    texts = [caplog.text, repr(sink), *exception_texts(failed), files_text(tmp_path / "kafka"),
             *run_job.texts]  # type: ignore[attr-defined]
    assert_hidden([PASSWORD], texts)


def test_secret_forms_cover_the_encodings_receivers_echo() -> None:
    from statefulstream.sinks._http import secrets_of

    forms = secrets_of(f"http://u:{PASSWORD}@h/p/{PATH_TOKEN}?t={QUERY_TOKEN}", mask_path=True,
                       headers={"Authorization": f"Basic {basic('bob', 'S3CRET-pw')}"}, extra=[ROUTING_KEY])
    for form in [PASSWORD, basic("u", PASSWORD), f"/p/{PATH_TOKEN}", QUERY_TOKEN, f"t={QUERY_TOKEN}",
                 basic("bob", "S3CRET-pw"), "bob:S3CRET-pw", "S3CRET-pw", ROUTING_KEY, json.dumps(ROUTING_KEY)[1:-1]]:
        assert form in forms
    assert forms == sorted(forms, key=lambda f: (-len(f), f))  # longest first: a secret inside another is masked whole
