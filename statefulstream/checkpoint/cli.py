"""``statefulstream checkpoint ...`` and ``statefulstream state ...``: inspect and copy checkpoints.

Inspection opens the state store read-only and takes no lock, so it never
modifies a checkpoint and works beside a running app (which may commit while
it reads; the figures are then a moment old). ``checkpoint snapshot`` needs
the app stopped (or use ``app.snapshot(path)`` inside it).

The two groups are plain click groups; ``statefulstream.cli`` adds them to
the ``statefulstream`` command.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Hashable, Iterator
from typing import Any

import click

from statefulstream.checkpoint.files import FilePlanLog
from statefulstream.checkpoint.layout import OFFSETS_DIR, STATE_DIR
from statefulstream.checkpoint.partitions import PARTITIONS_DIR, is_partitioned, partition_folders, restoring_folders
from statefulstream.checkpoint.snapshot import snapshot_checkpoint
from statefulstream.errors import StatefulStreamError
from statefulstream.processor.state_cli import is_processor_signature, print_processor_rows, processor_rows
from statefulstream.records import NO_TIMEOUT_MS
from statefulstream.state.rocksdb import RocksDBStateStore, inspect_store
from statefulstream.state.rocksdb_dir import store_in_use
from statefulstream.state.store import CHECKPOINT_FORMAT_VERSION, StateRow
from statefulstream.timeutil import format_ms

_DIR = click.Path(exists=True, file_okay=False)


def _fail(exc: StatefulStreamError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


def _plain(value: Any) -> Any:
    """Turn what state may hold into JSON data: tuples/sets as lists, bytes as base64, other keys as JSON text."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _dumps(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return str(value)  # Decimal, UUID, registered types: their text


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False)


def _ms(ms: int | None) -> str:
    if ms is None or ms == NO_TIMEOUT_MS:
        return "-"
    return f"{ms} ({format_ms(ms)})"


def describe(checkpoint_dir: str) -> dict[str, Any]:
    """Return what ``checkpoint show`` prints, as data (read-only).

    A scale-out checkpoint (a ``partitions/`` folder) is described per
    partition: see :func:`describe_partitioned`.

    Raises:
        StatefulStreamError: a part of the checkpoint cannot be read (the message names it).
    """
    if is_partitioned(checkpoint_dir):
        return describe_partitioned(checkpoint_dir)
    return _describe_one(checkpoint_dir)


def _describe_one(checkpoint_dir: str) -> dict[str, Any]:
    state_dir, log = os.path.join(checkpoint_dir, STATE_DIR), FilePlanLog(os.path.join(checkpoint_dir, OFFSETS_DIR))
    info: dict[str, Any] = {"checkpoint_dir": os.path.abspath(checkpoint_dir)}
    ids = log.batch_ids()
    info["offsets_log"] = {"batches": len(ids), "first": ids[0] if ids else None, "last": ids[-1] if ids else None}
    latest = log.latest()
    if not os.path.isdir(state_dir):
        info["state"] = None
        info["last_commit"] = None
    else:
        store, last = inspect_store(state_dir)
        try:
            rows, timers, size = store.num_rows(), store.num_timers(), store.disk_bytes()
        finally:
            store.close()
        info["state"] = {"format_version": CHECKPOINT_FORMAT_VERSION, "signature": store.signature,
                         "rows": rows, "timers": timers, "disk_bytes": size, "in_use": store_in_use(state_dir)}
        info["last_commit"] = None if last is None else last.to_dict()
    committed = info["last_commit"]["batch_id"] if info["last_commit"] else -1
    info["pending"] = latest.to_dict() if latest is not None and latest.batch_id > committed else None
    return info


def describe_partitioned(checkpoint_dir: str) -> dict[str, Any]:
    """Describe a scale-out checkpoint: each partition's folder as :func:`describe` would, and totals.

    ``watermark_ms`` is the smallest of the partitions' own watermarks (their
    last commit's ``next_watermark_ms``; partitions without one left out):
    the watermark a process owning all of them runs its next batches with.

    Raises:
        StatefulStreamError: a part of a partition's checkpoint cannot be read (the message names it).
    """
    parts = [{"partition": name, **_describe_one(path)} for name, path in partition_folders(checkpoint_dir)]
    states = [p["state"] for p in parts if p["state"] is not None]
    marks = [p["last_commit"]["next_watermark_ms"] for p in parts
             if p["last_commit"] is not None and p["last_commit"]["next_watermark_ms"] > 0]
    return {"checkpoint_dir": os.path.abspath(checkpoint_dir), "scale_out": True, "partitions": parts,
            "restoring": restoring_folders(checkpoint_dir),
            "totals": {key: sum(s[key] for s in states) for key in ("rows", "timers", "disk_bytes")},
            "watermark_ms": min(marks) if marks else None}


def _print_partitioned(info: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"checkpoint   {info['checkpoint_dir']}")
    parts = info["partitions"]
    echo(f"scale-out    {len(parts)} partition checkpoints under {PARTITIONS_DIR}/")
    totals = info["totals"]
    echo(f"state        {totals['rows']} rows (keys), {totals['timers']} timers, {totals['disk_bytes']} bytes on "
         f"disk in all partitions")
    echo(f"watermark    {_ms(info['watermark_ms'])} (the smallest of the partitions' own)")
    for name in info["restoring"]:
        echo(f"restoring    {name}: a restore from the changelog is running or was interrupted "
             f"(the partition's next owner starts it again)")
    for part in parts:
        echo(f"partition    {part['partition']}: {_partition_line(part)}")


def _partition_line(part: dict[str, Any]) -> str:
    last, state = part["last_commit"], part["state"]
    if last is None:
        text = "no batch committed"
    else:
        text = (f"batch {last['batch_id']}, offsets {_dumps(last['offsets'])}, watermark "
                f"{_ms(last['watermark_ms'])}, own next {_ms(last['next_watermark_ms'])}")
    if state is not None:
        text += f"; {state['rows']} rows, {state['timers']} timers"
        if state["in_use"]:
            text += " (held by a running app)"
    if part["pending"] is not None:
        text += f"; batch {part['pending']['batch_id']} planned, not committed"
    return text


def _print_description(info: dict[str, Any]) -> None:
    if info.get("scale_out"):
        _print_partitioned(info)
        return
    echo = click.echo
    echo(f"checkpoint   {info['checkpoint_dir']}")
    log = info["offsets_log"]
    span = f", batches {log['first']}..{log['last']}" if log["batches"] else ""
    echo(f"offsets log  {log['batches']} plans{span}")
    state = info["state"]
    if state is None:
        echo("state        none (nothing committed yet)")
    else:
        running = "  (held by a running app)" if state["in_use"] else ""
        echo(f"state        {state['rows']} rows (keys), {state['timers']} timers, "
             f"{state['disk_bytes']} bytes on disk; format v{state['format_version']}{running}")
        echo(f"operator     {_dumps(state['signature'])}")
    last = info["last_commit"]
    if last is None:
        echo("committed    no batch")
    else:
        echo(f"committed    batch {last['batch_id']} at {_ms(last['batch_ts_ms'])}")
        echo(f"offsets      {_dumps(last['offsets'])}")
        echo(f"watermark    {_ms(last['watermark_ms'])}; next batch runs with {_ms(last['next_watermark_ms'])}")
    pending = info["pending"]
    if pending is not None:
        echo(f"pending      batch {pending['batch_id']} was planned but not committed; the next start replays "
             f"it: {_dumps(pending['start'])} -> {_dumps(pending['end'])}")


@click.group()
def checkpoint() -> None:
    """Inspect or copy a checkpoint directory (the app's checkpoint_dir)."""


@checkpoint.command("show")
@click.argument("directory", type=_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def show_checkpoint(directory: str, as_json: bool) -> None:
    """Show batches, the last committed batch, its offsets and watermark, and the state size.

    A scale-out checkpoint (a partitions/ folder) shows each partition's last
    batch, offsets, watermark and rows, the totals, and the smallest watermark.
    Opens everything read-only: safe beside a running app, never modifies DIRECTORY.
    """
    try:
        info = describe(directory)
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(_dumps(info))
    else:
        _print_description(info)


@checkpoint.command("snapshot")
@click.argument("directory", type=_DIR)
@click.argument("dest", type=click.Path(exists=False))
def snapshot_command(directory: str, dest: str) -> None:
    """Copy checkpoint DIRECTORY consistently to DEST (a new path); use DEST as a checkpoint_dir to restore.

    The app must be stopped; a running app snapshots itself with app.snapshot(path).
    """
    try:
        last = snapshot_checkpoint(directory, dest)
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    click.echo(f"snapshot of batch {last.batch_id} written to {os.path.abspath(dest)}")


@click.group()
def state() -> None:
    """Inspect the state rows of a checkpoint."""


def _key_candidates(text: str) -> list[Hashable]:
    """Keys ``--key`` may mean: its JSON reading (42, null, ["a", 1] as a tuple) and the plain string."""
    candidates: list[Hashable] = []
    try:
        parsed = _tuples(json.loads(text))
    except ValueError:
        parsed = text
    if not isinstance(parsed, dict):
        candidates.append(parsed)
    if text not in candidates:
        candidates.append(text)
    return candidates


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _rows(store: RocksDBStateStore, key: str | None, limit: int | None) -> Iterator[tuple[Hashable, StateRow]]:
    if key is not None:
        candidates = _key_candidates(key)
        for k, row in zip(candidates, store.get_many(candidates), strict=True):
            if row is not None:
                yield k, row
                return
        return
    for n, item in enumerate(store.items()):
        if limit is not None and n >= limit:
            return
        yield item


@state.command("show")
@click.argument("directory", type=_DIR)
@click.option("--key", help="Show one group key (JSON for non-strings: 42, null, '[\"a\", 1]' for a tuple).")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="Rows to show (0 for all).")
@click.option("--variable", help="A stateful processor's checkpoint: show only this state variable.")
@click.option("--partition", "partition", help="A scale-out checkpoint: read only this partition's folder "
              "(its name under partitions/, e.g. clicks-3).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines: key, timeout_ms, value "
              "(a processor's: key, variables, timers; a scale-out checkpoint's: and partition).")
def show_state(directory: str, key: str | None, limit: int, variable: str | None, partition: str | None,
               as_json: bool) -> None:
    """Show decoded state rows of checkpoint DIRECTORY with their timeouts, in key order.

    For a stateful processor (transform_with_state): each key's variables by
    name (values, lists, maps; TTL-expired values left out) and its timers.
    A scale-out checkpoint (a partitions/ folder) is read partition by
    partition (in key order within each), each row prefixed with its
    partition; --partition reads one.
    Opens the store read-only: safe beside a running app, never modifies DIRECTORY.
    State holding registered (custom) types cannot be decoded here; inspect it from
    the app's own code.
    """
    if not is_partitioned(directory):
        if partition is not None:
            raise click.ClickException(f"--partition is for scale-out checkpoints; {directory} has no "
                                       f"{PARTITIONS_DIR}/ folder")
        state_dir = os.path.join(directory, STATE_DIR)
        if not _show_store(state_dir, _Shown(key, limit or None, variable, as_json)) and key is not None:
            raise click.ClickException(f"no state row for key {key!r} in {state_dir}")
        return
    folders = partition_folders(directory)
    if partition is not None:
        folders = [(name, path) for name, path in folders if name == partition]
        if not folders:
            names = ", ".join(name for name, _ in partition_folders(directory)) or "none"
            raise click.ClickException(f"no partition {partition!r} in {os.path.join(directory, PARTITIONS_DIR)}; "
                                       f"it holds: {names}")
    shown = _Shown(key, limit or None, variable, as_json)
    for name, path in folders:
        if os.path.isdir(os.path.join(path, STATE_DIR)):  # a partition with no committed batch has no store
            _show_store(os.path.join(path, STATE_DIR), shown, partition=name)
        if shown.full:
            break
    if key is not None and not shown.count:
        raise click.ClickException(f"no state row for key {key!r} in any partition of {directory}")


@dataclasses.dataclass
class _Shown:
    """What ``state show`` prints, and how many rows it printed so far (the limit spans partitions)."""

    key: str | None
    limit: int | None
    variable: str | None
    as_json: bool
    count: int = 0

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.count

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit


def _show_store(state_dir: str, shown: _Shown, *, partition: str | None = None) -> int:
    """Print the rows of one store (prefixed with ``partition`` when given); return how many."""
    try:
        store, last = inspect_store(state_dir)
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    before = shown.count
    key, as_json = shown.key, shown.as_json
    try:
        if is_processor_signature(store.signature):
            rows = processor_rows(store.kv(), _key_candidates(key) if key is not None else None, shown.left,
                                  variable=shown.variable, now_ms=None if last is None else last.batch_ts_ms)
            shown.count += print_processor_rows(rows, as_json=as_json, dumps=_dumps)
        else:
            if shown.variable is not None:
                raise click.ClickException(f"--variable is for stateful processors; {state_dir} holds GroupState "
                                           f"rows")
            prefix = "" if partition is None else f"{partition}\t"
            for k, row in _rows(store, key, shown.left):
                shown.count += 1
                if as_json:
                    timeout = None if row.timeout_ms == NO_TIMEOUT_MS else row.timeout_ms
                    where = {} if partition is None else {"partition": partition}
                    click.echo(_dumps({**where, "key": k, "timeout_ms": timeout, "value": row.value}))
                else:
                    click.echo(f"{prefix}{_dumps(k)}\ttimeout {_ms(row.timeout_ms)}\t{_dumps(row.value)}")
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    return shown.count - before
