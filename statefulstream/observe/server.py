"""``MetricsServer``: ``/metrics``, ``/health``, ``/ready``, the status page and state queries over HTTP.

A ``ThreadingHTTPServer`` in a daemon thread, bound to 127.0.0.1 unless the
address names another host. ``App(metrics_address=...)`` starts it in
``App.run`` and stops it when ``run`` returns.

* ``GET /metrics``: Prometheus text format (OpenMetrics if asked for).
* ``GET /health``: 200 while the loop runs and is not stuck, else 503.
* ``GET /ready``: 200 once recovery is done, else 503.
* ``GET /``: the status page (``static/status.html``; charts by the vendored
  uPlot), which polls ``GET /api/status`` (``status.StatusBoard.document``).
* ``GET /state/{key}``, ``GET /state?prefix=&limit=``: committed state as JSON
  (``state_query``), unless the app turned state queries off.

Health bodies are JSON (``{"status": ..., "reason": ...}``), so a probe's
failure says why.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from statefulstream.errors import ConfigError
from statefulstream.observe.address import parse_address
from statefulstream.observe.health import Health, Status
from statefulstream.observe.metrics import Metrics
from statefulstream.observe.state_query import StateQueries
from statefulstream.observe.status import StatusBoard

logger = logging.getLogger(__name__)

STATIC_FILES = {"status.html": "text/html; charset=utf-8", "status.js": "text/javascript; charset=utf-8",
                "status.css": "text/css; charset=utf-8", "uPlot.iife.min.js": "text/javascript; charset=utf-8",
                "uPlot.min.css": "text/css; charset=utf-8", "uPlot.LICENSE": "text/plain; charset=utf-8"}
"""The files of ``statefulstream/observe/static`` the server hands out, by name."""


def static_file(name: str) -> bytes:
    """Return a file of the package's ``static`` folder (installed as package data)."""
    return importlib.resources.files("statefulstream.observe").joinpath("static").joinpath(name).read_bytes()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Health, status: StatusBoard | None,
                 state: StateQueries | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        self.status = status
        self.state = state
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        path, _, query = self.path.partition("?")
        server = self.server
        if path == "/metrics":
            body, content_type = server.metrics.exposition(self.headers.get("Accept"))
            self._send(200, body, content_type)
        elif path == "/health":
            self._send_status(server.health.liveness())
        elif path == "/ready":
            self._send_status(server.health.readiness())
        elif path == "/state" or path.startswith("/state/"):
            if server.state is None:
                self._send(404, b'{"error": "state queries are off for this app (App(state_queries=False))"}\n',
                           "application/json")
            else:
                self._send(*server.state.answer(path, query), "application/json")
        elif server.status is not None and path in ("/", "/index.html"):
            self._send(200, static_file("status.html"), STATIC_FILES["status.html"])
        elif server.status is not None and path == "/api/status":
            body = orjson.dumps(server.status.document(), option=orjson.OPT_NON_STR_KEYS)
            self._send(200, body, "application/json")
        elif server.status is not None and path.startswith("/static/") and path[8:] in STATIC_FILES:
            self._send(200, static_file(path[8:]), STATIC_FILES[path[8:]])
        else:
            self._send(404, b"not found: try /, /metrics, /health, /ready or /state\n", "text/plain; charset=utf-8")

    def _send_status(self, status: Status) -> None:
        ok, body = status
        self._send(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")  # live figures; the static files are small
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        # Scrapes every few seconds would flood stderr; keep them at debug.
        logger.debug("metrics server: " + format, *args)


class MetricsServer:
    """Serves one app's metrics, health, status page and state on ``address``.

    Args:
        address: see :func:`parse_address`; port 0 picks a free port
            (read it from :attr:`port` after :meth:`start`).
        metrics: what ``/metrics`` serves.
        health: what ``/health`` and ``/ready`` report.
        status: what the status page shows, or ``None`` for no page.
        state: answers ``/state`` queries, or ``None`` when they are off.

    Raises:
        ConfigError: the address is malformed.
    """

    def __init__(self, address: str | int, metrics: Metrics, health: Health, *, status: StatusBoard | None = None,
                 state: StateQueries | None = None) -> None:
        self.host, self.port = parse_address(address)
        self._metrics = metrics
        self._health = health
        self._status = status
        self._state = state
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            ConfigError: the address cannot be bound (port taken, unknown host).
        """
        try:
            server = _Server((self.host, self.port), self._metrics, self._health, self._status, self._state)
        except OSError as exc:
            msg = (f"metrics server cannot listen on {self.host}:{self.port}: {exc}; choose a free port "
                   f"(metrics_address=...), or port 0 for any")
            raise ConfigError(msg) from exc
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name=f"metrics-{self.port}", daemon=True)
        self._thread.start()
        logger.info("serving /metrics, /health, /ready%s%s on %s", ", the status page /" if self._status else "",
                    ", state queries /state" if self._state else "", self.url)

    def stop(self) -> None:
        """Stop serving and release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
