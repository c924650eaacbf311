"""Running an app on the embedded engine: the executor, its HTTP server, progress bar and stop signals.

``App.run`` calls ``run_embedded`` once the trigger is known; everything it
starts is stopped again, whether the run finishes, is stopped or fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from statefulstream.observe.config_view import trigger_text
from statefulstream.observe.progress_bar import ProgressBar
from statefulstream.observe.server import MetricsServer
from statefulstream.observe.state_query import StateQueries
from statefulstream.stop_signals import install_stop_handlers
from statefulstream.triggers import Trigger, TriggerKind

if TYPE_CHECKING:
    from statefulstream.app import App


def run_embedded(app: App, trig: Trigger) -> None:
    """Recover and run ``app``'s batches as ``trig`` says, serving /metrics, /health, /ready and the status page."""
    executor = app.build_executor()
    app.metrics.declare_sinks(executor.sink_names)
    bar = ProgressBar(app.name) if trig.kind is TriggerKind.AVAILABLE_NOW else None
    if bar is not None:
        executor.listeners.append(bar.on_batch)
    app._stop.clear()
    app.health.starting(executor.heartbeat, trig)
    # Served during recovery too, so /ready can say "not yet".
    app.status.trigger = trigger_text(trig)
    queries = StateQueries(app._committed_view) if app.state_queries else None
    app.metrics_server = (MetricsServer(app.metrics_address, app.metrics, app.health, status=app.status,
                                        state=queries) if app.metrics_address is not None else None)
    restore = install_stop_handlers(app.name, app._stop)
    try:
        if app.metrics_server is not None:
            app.metrics_server.start()
        executor.start()
        app.health.ready()
        executor.run(trig, app._stop)
    finally:
        app.health.stopped()
        restore()
        executor.close()
        if bar is not None:
            bar.close()
        if app.metrics_server is not None:
            app.metrics_server.stop()
