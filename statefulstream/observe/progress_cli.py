"""``statefulstream progress DIR``: show the progress reports kept in a checkpoint.

DIR is a checkpoint directory (reports are in ``DIR/progress``) or the
``progress`` directory itself. A table of the last batches by default;
``--json`` prints the reports as JSON lines; ``--batch N`` one report in full.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from statefulstream.observe.progress_log import read_reports

COLUMNS = ("batch", "timestamp", "input", "in/s", "proc/s", "ms", "late", "dead", "keys", "lag", "watermark")


def _row(report: dict[str, Any]) -> tuple[str, ...]:
    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    records = report["records"]
    return (str(report["batch_id"]) + ("*" if report["replayed"] else ""), report["timestamp"] or "-",
            str(report["num_input_rows"]), rate(report["input_rows_per_second"]),
            rate(report["processed_rows_per_second"]), f"{report['duration_ms']['total']:.0f}",
            str(records["late_dropped"]), str(sum(records["dead_lettered"].values())),
            str(report["state_operator"]["keys"]), str(report["source"]["pending_records"]),
            report["event_time"]["next_watermark"] or "-")


def report_table(reports: list[dict[str, Any]]) -> str:
    """Return the reports as an aligned text table, one line per batch."""
    rows = [COLUMNS, *map(_row, reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command("progress")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-n", "--last", default=20, show_default=True, help="How many of the latest batches to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON lines.")
@click.option("--batch", "batch_id", type=int, help="Print the full report of one batch.")
def progress(directory: str, last: int, as_json: bool, batch_id: int | None) -> None:
    """Show the progress reports kept in the checkpoint DIRECTORY (a `*` marks a replayed batch)."""
    nested = os.path.join(directory, "progress")
    folder = nested if os.path.isdir(nested) else directory
    reports = read_reports(folder, None if batch_id is not None else last)
    if not reports:
        msg = (f"no progress reports in {folder}: give the app's checkpoint_dir (reports are kept there after "
               f"each committed batch) or its 'progress' directory")
        raise click.ClickException(msg)
    if batch_id is not None:
        match = [r for r in reports if r["batch_id"] == batch_id]
        if not match:
            ids = [r["batch_id"] for r in reports]
            msg = f"batch {batch_id} has no kept report in {folder}; kept: {ids[0]}..{ids[-1]}"
            raise click.ClickException(msg)
        click.echo(json.dumps(match[0], indent=2))
    elif as_json:
        for report in reports:
            click.echo(json.dumps(report))
    else:
        click.echo(report_table(reports))
