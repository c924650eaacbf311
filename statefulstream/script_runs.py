"""``App.run()`` calls made while ``statefulstream run`` loads an app file are deferred, not run.

A script written to be started with ``python my_app.py`` may end in a bare
``app.run()``. Loaded by ``statefulstream run``, that call would run the app
with the file's own settings before the command line's overrides are applied,
and the command would then run it a second time. While :func:`deferring_runs`
is active, ``App.run`` records the call here instead, and the command runs the
recorded app once, with its overrides.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from statefulstream.app import App
    from statefulstream.durations import Duration
    from statefulstream.triggers import Trigger


@dataclasses.dataclass(frozen=True)
class DeferredRun:
    """An ``app.run(trigger)`` call made while an app file was being loaded."""

    app: App
    trigger: Trigger | Duration | None


_deferred: contextvars.ContextVar[list[DeferredRun] | None] = contextvars.ContextVar("deferred_runs", default=None)


@contextlib.contextmanager
def deferring_runs() -> Iterator[list[DeferredRun]]:
    """Record ``App.run`` calls instead of running them, in the yielded list, until the block ends."""
    calls: list[DeferredRun] = []
    token = _deferred.set(calls)
    try:
        yield calls
    finally:
        _deferred.reset(token)


def defer_run(app: App, trigger: Trigger | Duration | None) -> bool:
    """Record ``app.run(trigger)`` if runs are being deferred; return whether it was."""
    calls = _deferred.get()
    if calls is None:
        return False
    calls.append(DeferredRun(app, trigger))
    return True
