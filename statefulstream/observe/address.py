"""Where the metrics server listens: ``App(metrics_address=...)`` parsed into ``(host, port)``.

Kept apart from ``statefulstream.observe.server`` so an app checks its
address when it is defined without importing the HTTP server it may never start.
"""

from __future__ import annotations

from statefulstream.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
"""Host the server binds when the address gives only a port."""


def parse_address(address: str | int) -> tuple[str, int]:
    """Split ``"host:port"``, ``"[::1]:port"``, ``":port"``, ``"port"`` or a port number.

    >>> parse_address("127.0.0.1:9108"), parse_address(9108), parse_address("[::1]:0")
    (('127.0.0.1', 9108), ('127.0.0.1', 9108), ('::1', 0))

    Raises:
        ConfigError: the address has no valid port (0 means any free port).
    """
    text = str(address).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = (f"metrics_address must be 'host:port', ':port' or a port number (0 = any free port); "
               f"got {address!r}")
        raise ConfigError(msg)
    return host, port
