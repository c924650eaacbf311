"""Running an app on the embedded engine: the executor, its HTTP server, progress bar and stop signals.

``App.run`` calls ``run_embedded`` once the trigger is known; everything it
starts is stopped again, whether the run finishes, is stopped or fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from statefulstream.observe.config_view import trigger_text
from statefulstream.observe.health import Heartbeat
from statefulstream.observe.progress_bar import ProgressBar
from statefulstream.observe.state_query import StateQueries
from statefulstream.stop_signals import install_stop_handlers
from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from statefulstream.app import App


def run_embedded(app: App, trig: Trigger) -> None:
    """Recover and run ``app``'s batches as ``trig`` says, serving /metrics, /health, /ready and the status page.

    With a ``KafkaSource(scale_out=...)`` this process runs as one member of
    the consumer group instead (``statefulstream.scaleout``).
    """
    if getattr(app.source, "scale_out", None) is not None:
        from statefulstream.scaleout.worker import run_scaled_out

        heartbeat = Heartbeat()
        with _served(app, heartbeat, trig, queries=False):
            run_scaled_out(app, trig, app._stop, heartbeat, app.health.ready)
        return
    executor = app.build_executor()
    app.metrics.declare_sinks(executor.sink_names)
    bar = ProgressBar(app.name) if trig.kind is TriggerKind.AVAILABLE_NOW else None
    if bar is not None:
        executor.listeners.append(bar.on_batch)
    try:
        with _served(app, executor.heartbeat, trig, queries=app.state_queries):
            executor.start()
            app.health.ready()
            executor.run(trig, app._stop)
    finally:
        executor.close()
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def _served(app: App, heartbeat: Heartbeat, trig: Trigger, *, queries: bool) -> Iterator[None]:
    """Health, the HTTP server (served during recovery too, so /ready can say "not yet") and stop signals."""
    app._stop.clear()
    app.health.starting(heartbeat, trig)
    app.status.trigger = trigger_text(trig)
    app.metrics_server = None
    if app.metrics_address is not None:  # the HTTP stack is imported only by apps that serve
        from statefulstream.observe.server import MetricsServer

        state = StateQueries(app._committed_view) if queries else None
        app.metrics_server = MetricsServer(app.metrics_address, app.metrics, app.health, status=app.status,
                                           state=state)
    restore = install_stop_handlers(app.name, app._stop)
    try:
        if app.metrics_server is not None:
            app.metrics_server.start()
        yield
    finally:
        app.health.stopped()
        restore()
        if app.metrics_server is not None:
            app.metrics_server.stop()
