"""The ``statefulstream`` command: run an app, run the demo, inspect checkpoints."""

from __future__ import annotations

import logging
import os
import pathlib
import runpy
import sys
from typing import Any

import click

from statefulstream.app import App
from statefulstream.checkpoint.cli import checkpoint, state
from statefulstream.errors import StatefulStreamError
from statefulstream.logs import LEVELS, configure_logging
from statefulstream.observe.progress_cli import progress
from statefulstream.observe.status_cli import status
from statefulstream.script_runs import deferring_runs
from statefulstream.sink import FirstRows
from statefulstream.triggers import Trigger

logger = logging.getLogger(__name__)

DEMO_SHOWN = 10
"""Closed sessions ``statefulstream demo`` prints before its summary."""


def load_app(target: str) -> App:
    """Load ``PATH.py[:name]`` and return its ``App`` (``app`` or the only one defined).

    An ``app.run()`` the file calls while loading (a script ending in a bare
    ``app.run()``) does not run: that app is the one returned, and the trigger
    it was called with becomes its ``trigger``, so the caller runs it once.

    Raises:
        click.UsageError: no such file, or no (single) App in it.
    """
    path, _, name = target.partition(":") if not os.path.exists(target) else (target, "", "")
    if not os.path.isfile(path):
        raise click.UsageError(f"no such file: {path!r} (expected PATH.py or PATH.py:app_name)")
    folder = str(pathlib.Path(path).resolve().parent)
    sys.path.insert(0, folder)  # so the app file can import its neighbours
    try:
        with deferring_runs() as runs:
            namespace = runpy.run_path(path, run_name="__statefulstream__")
    finally:
        sys.path.remove(folder)
    for run_call in runs:
        if run_call.trigger is not None:
            run_call.app.trigger = Trigger.parse(run_call.trigger)
    if name:
        found = namespace.get(name)
        if not isinstance(found, App):
            raise click.UsageError(f"{path} has no App named {name!r}")
        return found
    started = {id(r.app): r.app for r in runs}
    if len(started) == 1:
        return next(iter(started.values()))
    apps = {k: v for k, v in namespace.items() if isinstance(v, App)}
    if "app" in apps:
        return apps["app"]
    if len(apps) == 1:
        return next(iter(apps.values()))
    which = ", ".join(sorted(apps)) or "none"
    raise click.UsageError(f"{path} must define one App (found: {which}); pick one with {path}:NAME")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="statefulstream")
def main() -> None:
    """Stateful stream processing in Python: Spark's flatMapGroupsWithState, with durable state.

    \b
    Quick start:
      statefulstream demo                            sessionize the sample clicks
      statefulstream run examples/sessionization.py  run an app file
      statefulstream checkpoint show CHECKPOINT_DIR  inspect a checkpoint
    """


@main.command()
@click.argument("target", metavar="PATH.py[:APP]")
@click.option("--trigger", help="Override the trigger: 'once', 'available_now', or an interval like '10 seconds'.")
@click.option("--max-records", type=click.IntRange(min=1), help="Bound the records per batch.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Override the app's checkpoint directory.")
@click.option("--metrics-address", help="Serve /metrics, /health, /ready here, e.g. 127.0.0.1:9108.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(LEVELS, case_sensitive=False))
@click.option("--engine", type=click.Choice(["embedded", "spark"]), default="embedded", show_default=True,
              help="Run in this process, or as a Spark Structured Streaming query (docs/spark.md).")
@click.option("--master", help="Spark master URL for --engine spark, e.g. local[2] (spark-submit sets its own).")
@click.option("--source-option", "source_options", multiple=True, metavar="NAME=VALUE",
              help="An option for Spark's reader with --engine spark, e.g. maxFilesPerTrigger=1; repeatable.")
def run(target: str, trigger: str | None, max_records: int | None, checkpoint_dir: str | None,
        metrics_address: str | None, log_level: str, engine: str, master: str | None,
        source_options: tuple[str, ...]) -> None:
    """Run the App defined in PATH.py until its trigger is done or Ctrl-C / SIGTERM.

    A stop finishes and commits the running batch. After a crash, the next
    run resumes from the checkpoint and replays the unfinished batch.
    """
    configure_logging(log_level)
    app = load_app(target)
    if max_records is not None:
        app.max_records_per_trigger = max_records
    if checkpoint_dir is not None:
        app.checkpoint_dir = checkpoint_dir
    if metrics_address is not None:
        app.metrics_address = metrics_address
    if engine == "embedded":
        if master is not None or source_options:
            raise click.UsageError("--master and --source-option need --engine spark")
        _run(app, trigger)
        return
    options = dict(_name_value(o) for o in source_options)
    _run(app, trigger, engine="spark", master=master, source_options=options)


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise click.UsageError(f"--source-option takes NAME=VALUE (e.g. maxFilesPerTrigger=1); got {text!r}")
    return name.strip(), value.strip()


def _run(app: App, trigger: str | None, **engine: Any) -> None:
    try:
        app.run(trigger, **engine)
    except StatefulStreamError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@main.command()
@click.option("--max-records", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Records per batch (several batches show the watermark moving).")
@click.option("--show", type=click.IntRange(min=0), default=DEMO_SHOWN, show_default=True,
              help="Print the first N closed sessions.")
@click.option("--all", "show_all", is_flag=True, help="Print every closed session.")
@click.option("--log-level", default="WARNING", show_default=True, type=click.Choice(LEVELS, case_sensitive=False))
def demo(max_records: int, show: int, show_all: bool, log_level: str) -> None:
    """Sessionize the shipped sample clicks, print the first sessions and a summary.

    Runs examples/sessionization.py (30-second event-time session gap,
    10-second watermark) over examples/data/events.jsonl in memory, with
    trigger available_now.
    """
    configure_logging(log_level)
    example = _find_example("sessionization.py")
    app = load_app(str(example))
    app.max_records_per_trigger = max_records
    if app.operator is not None and not show_all:
        app.operator.sinks = [FirstRows(sink, show) for sink in app.operator.sinks]
    totals: dict[str, Any] = {"batches": 0, "read": 0, "late": 0, "dead": 0, "sessions": 0}

    def tally(p: Any) -> None:
        totals["batches"] += 1
        totals["read"] += p.records_read
        totals["late"] += p.records_late
        totals["dead"] += sum(p.records_dead_lettered.values())
        totals["sessions"] += p.rows_output

    app.add_listener(tally)
    _run(app, "available_now")
    store = app.executor.store if app.executor else None
    still_open = sum(1 for _ in store.items()) if store is not None else 0
    if not show_all and totals["sessions"] > show:
        click.echo(f"... (the first {show} of {totals['sessions']} sessions shown; --all prints every one)")
    click.echo(f"\n{totals['sessions']} sessions closed in {totals['batches']} batches from {totals['read']} "
               f"records ({totals['dead']} dead-lettered, {totals['late']} late); {still_open} "
               f"{'session is' if still_open == 1 else 'sessions are'} still open: the watermark has not passed "
               f"{'its' if still_open == 1 else 'their'} end + 30 s.")


def _find_example(name: str) -> pathlib.Path:
    candidates = [pathlib.Path.cwd() / "examples" / name,
                  pathlib.Path(__file__).resolve().parent.parent / "examples" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise click.ClickException(f"cannot find examples/{name}; run the demo from the repository root")


main.add_command(checkpoint)
main.add_command(state)
main.add_command(progress)
main.add_command(status)

if __name__ == "__main__":  # pragma: no cover
    main()
