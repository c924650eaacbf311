"""``statefulstream status DIR``: the status page's summary in a terminal, for a stopped app.

Reads the checkpoint (last commit, pending batch, state size) and the
progress reports kept in it, read-only; works beside a running app too (its
figures are then a moment old). The figures are those of the status page
(``status.summary``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from statefulstream.checkpoint.cli import describe
from statefulstream.errors import StatefulStreamError
from statefulstream.observe.progress_cli import report_table
from statefulstream.observe.progress_log import read_reports
from statefulstream.observe.status import summary


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) or "none"
    return str(value)


def status_lines(info: dict[str, Any], reports: list[dict[str, Any]], last: int) -> list[str]:
    """Return the text ``statefulstream status`` prints for a checkpoint ``describe`` and its reports."""
    state, commit, pending = info["state"], info["last_commit"], info["pending"]
    rows = [("app", reports[-1]["app"] if reports else "- (no progress reports kept)"),
            ("checkpoint", info["checkpoint_dir"] + ("  (held by a running app)" if state and state["in_use"]
                                                     else "  (stopped)")),
            ("committed", f"batch {commit['batch_id']}" if commit else "no batch yet")]
    if pending is not None:
        rows.append(("pending", f"batch {pending['batch_id']} was planned but not committed; the next start "
                                f"replays it"))
    if state is not None:
        rows.append(("state on disk", f"{state['disk_bytes']} bytes"))
    rows += [(row["label"], _text(row["value"])) for row in summary(reports)]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    if reports:
        lines += ["", f"last {min(last, len(reports))} batches (* replayed):", report_table(reports[-last:])]
    return lines


@click.command("status")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-n", "--last", default=10, show_default=True, type=click.IntRange(min=1),
              help="How many of the latest batches to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: checkpoint, summary and reports.")
def status(directory: str, last: int, as_json: bool) -> None:
    """Show an app's status from its checkpoint DIRECTORY: last batch, rates, state, watermark, lag.

    The same figures as the status page (GET / on a running app's metrics address).
    Opens everything read-only: never modifies DIRECTORY.
    """
    try:
        info = describe(directory)
    except StatefulStreamError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    folder = os.path.join(directory, "progress")
    reports = read_reports(folder)
    if as_json:
        click.echo(json.dumps({"checkpoint": info, "summary": summary(reports), "reports": reports[-last:]},
                              default=str))
        return
    click.echo("\n".join(status_lines(info, reports, last)))
