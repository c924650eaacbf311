"""A loopback TCP proxy that delays what the server answers, to test timeouts against a slow broker.

``SlowProxy(target_port)`` listens on a free ``127.0.0.1`` port and forwards
every connection to ``127.0.0.1:target_port``. Bytes from the client go
through at once; each chunk the server sends back is held for ``delay``
first (set it at any time; it applies to chunks read after the change). A
Kafka broker behind it must advertise the proxy's address, or clients
reconnect to the broker directly after the first metadata answer:
``TansuBroker(advertised_port=proxy.port)``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time

from kafka_broker import free_port


class SlowProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, delaying the server's answers.

    Args:
        target_port: the server's port on 127.0.0.1.
        delay: how long each chunk from the server is held before it is sent on.

    Attributes:
        connections: connections accepted so far (a test can check that traffic went through).
    """

    def __init__(self, target_port: int, delay: dt.timedelta = dt.timedelta(0)) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = free_port()
        self.connections = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Listen and accept connections on a thread."""
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Close the listener and every forwarded connection. Idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> SlowProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, delayed: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if delayed and self.delay:
                    time.sleep(self.delay.total_seconds())  # the latency this proxy exists to add
                dest.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, dest):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
