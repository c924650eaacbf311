"""Running an app in a thread for HTTP and browser tests, and waiting on conditions (never sleep-and-hope)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from statefulstream import App

WAIT_S = 40.0
"""Longest wait for a condition: generous for a busy 2-core CI, as every wait ends when its condition holds."""


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S, *, interval_s: float = 0.05,
             details: Callable[[], str] | None = None) -> Any:
    """Return ``condition()``'s first truthy value, checking every ``interval_s``; fail the test after ``timeout_s``.

    ``details()``, if given, adds to the failure what is still wrong (rows missing, the processes' logs).
    """
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()  # never set: its wait is the interval between two checks
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}{details() if details else ''}")
        pause.wait(interval_s)
    return value


@contextlib.contextmanager
def running(app: App, *, ready: bool = True) -> Iterator[str]:
    """Run ``app`` (with ``metrics_address`` set) in a thread until the block ends; yield its server's base URL.

    The block starts once recovery is done (``ready=False``: as soon as the server listens, which may be
    during recovery); an error of ``app.run`` fails the test when the block ends.
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            app.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: errors or (app.metrics_server is not None and app.metrics_server.port != 0
                                and (not ready or app.health.readiness()[0])), "the app's server")
    assert app.metrics_server is not None and not errors, errors
    try:
        yield app.metrics_server.url
    finally:
        app.stop()
        thread.join(WAIT_S)
    if errors:
        raise errors[0]
