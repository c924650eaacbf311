"""A stand-in for PagerDuty's Events API v2: logs events and counts incidents by dedup key.

The compose stack (and the tests) point ``PagerDutySink`` here instead of
``events.pagerduty.com``. It keeps PagerDuty's incident rules, so what it
shows is what an on-call would have seen:

* ``trigger`` opens an incident for its ``dedup_key``, unless one is already
  open: then it is *deduplicated* (a replayed or retried event pages no one);
* ``acknowledge`` marks the open incident acknowledged;
* ``resolve`` closes it; a later ``trigger`` opens a new incident.

Endpoints: ``POST /v2/enqueue`` (any POST path is accepted) answers 202 like
PagerDuty, or 400 for an event PagerDuty would reject; ``GET /incidents``
returns every dedup key's figures as JSON; ``GET /health`` answers 200.

Run it::

    python examples/webhook_receiver.py --port 8080        # loopback only
    python examples/webhook_receiver.py --host 0.0.0.0     # inside a container

The routing key is checked for presence and never logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger("webhook_receiver")

ACTIONS = ("trigger", "acknowledge", "resolve")


class IncidentBook:
    """Incidents by dedup key under PagerDuty's rules; thread-safe.

    >>> book = IncidentBook()
    >>> book.record({"event_action": "trigger", "dedup_key": "k", "payload": {"summary": "down"}})
    'opened'
    >>> book.record({"event_action": "trigger", "dedup_key": "k", "payload": {"summary": "down"}})
    'deduplicated'
    >>> book.record({"event_action": "resolve", "dedup_key": "k"})
    'resolved'
    >>> book.snapshot()["k"]["incidents"], book.snapshot()["k"]["open"]
    (1, False)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}

    def record(self, event: dict[str, Any]) -> str:
        """Apply one valid event; return what it did (``opened``, ``deduplicated``, ``resolved``, ...)."""
        action, key = event["event_action"], event["dedup_key"]
        with self._lock:
            entry = self._keys.setdefault(key, {"incidents": 0, "open": False, "acknowledged": False,
                                                "triggers": 0, "deduplicated": 0, "acknowledges": 0,
                                                "resolves": 0, "summary": None})
            if action == "trigger":
                entry["triggers"] += 1
                entry["summary"] = event["payload"]["summary"]
                if entry["open"]:
                    entry["deduplicated"] += 1
                    return "deduplicated"
                entry.update(incidents=entry["incidents"] + 1, open=True, acknowledged=False)
                return "opened"
            if action == "acknowledge":
                entry["acknowledges"] += 1
                entry["acknowledged"] = entry["open"]
                return "acknowledged" if entry["open"] else "ignored (no open incident)"
            entry["resolves"] += 1
            was_open = entry["open"]
            entry.update(open=False, acknowledged=False)
            return "resolved" if was_open else "ignored (no open incident)"

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every dedup key's figures (a copy)."""
        with self._lock:
            return {key: dict(entry) for key, entry in self._keys.items()}


def problem(event: Any) -> str | None:
    """Why PagerDuty would reject ``event`` (HTTP 400), or ``None`` when it is valid.

    >>> problem({"routing_key": "r", "event_action": "resolve"})
    'resolve needs a dedup_key'
    """
    if not isinstance(event, dict):
        return "the body must be a JSON object"
    if not event.get("routing_key"):
        return "routing_key is missing"
    action = event.get("event_action")
    if action not in ACTIONS:
        return f"event_action must be one of {', '.join(ACTIONS)}; got {action!r}"
    if not event.get("dedup_key"):
        return f"{action} needs a dedup_key"
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict) or not all(payload.get(f) for f in ("summary", "source", "severity")):
            return "a trigger needs payload.summary, payload.source and payload.severity"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    book: IncidentBook


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        length = int(self.headers.get("Content-Length") or 0)
        try:
            event = json.loads(self.rfile.read(length))
        except ValueError:
            event = None
        reason = problem(event)
        if reason is not None:
            logger.warning("rejected event: %s", reason)
            self._send(400, {"status": "invalid event", "message": "Event object is invalid", "errors": [reason]})
            return
        outcome = self.server.book.record(event)
        logger.info("%s %s: %s", event["event_action"], event["dedup_key"], outcome)
        self._send(202, {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]})

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        path = self.path.split("?", 1)[0]
        if path == "/incidents":
            self._send(200, self.server.book.snapshot())
        elif path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"status": "not found", "message": "try GET /incidents or POST /v2/enqueue"})

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        logger.debug("access: " + format, *args)


class WebhookReceiver:
    """The receiver's HTTP server, started in a daemon thread.

    Args:
        host: address to bind (loopback by default).
        port: port to bind; 0 picks a free one (read :attr:`port` after :meth:`start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.book = IncidentBook()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The Events API URL to give ``PagerDutySink(url=...)``."""
        return f"http://{self.host}:{self.port}/v2/enqueue"

    def start(self) -> None:
        """Bind and serve in a daemon thread."""
        server = _Server((self.host, self.port), _Handler)
        server.book = self.book
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        logger.info("receiving PagerDuty events on %s; incidents at GET /incidents", self.url)

    def stop(self) -> None:
        """Stop serving; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the command-line mode)."""
        server = _Server((self.host, self.port), _Handler)
        server.book = self.book
        logger.info("receiving PagerDuty events on %s:%d; incidents at GET /incidents", self.host, self.port)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def main(argv: list[str] | None = None) -> None:
    """Run the receiver until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    WebhookReceiver(args.host, args.port).serve_forever()


if __name__ == "__main__":
    main()
