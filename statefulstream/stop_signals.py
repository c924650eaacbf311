"""SIGTERM and SIGINT stop an app after its current batch (docker stop, Ctrl-C)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def install_stop_handlers(app_name: str, stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM/SIGINT set ``stop``; return the function that restores the previous handlers.

    Signals can only be handled on the main thread; elsewhere nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, _frame: Any) -> None:
        logger.info("app %r: signal %d received; stopping after the current batch", app_name, signum)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
