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

    Raises:
        StatefulStreamError: a part of the checkpoint cannot be read (the message names it).
    """
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


def _print_description(info: dict[str, Any]) -> None:
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines: key, timeout_ms, value "
              "(a processor's: key, variables, timers).")
def show_state(directory: str, key: str | None, limit: int, variable: str | None, as_json: bool) -> None:
    """Show decoded state rows of checkpoint DIRECTORY with their timeouts, in key order.

    For a stateful processor (transform_with_state): each key's variables by
    name (values, lists, maps; TTL-expired values left out) and its timers.
    Opens the store read-only: safe beside a running app, never modifies DIRECTORY.
    State holding registered (custom) types cannot be decoded here; inspect it from
    the app's own code.
    """
    state_dir = os.path.join(directory, STATE_DIR)
    try:
        store, last = inspect_store(state_dir)
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    shown = 0
    try:
        if is_processor_signature(store.signature):
            rows = processor_rows(store.kv(), _key_candidates(key) if key is not None else None, limit or None,
                                  variable=variable, now_ms=None if last is None else last.batch_ts_ms)
            shown = print_processor_rows(rows, as_json=as_json, dumps=_dumps)
        else:
            if variable is not None:
                raise click.ClickException(f"--variable is for stateful processors; {directory} holds GroupState rows")
            for k, row in _rows(store, key, limit or None):
                shown += 1
                if as_json:
                    timeout = None if row.timeout_ms == NO_TIMEOUT_MS else row.timeout_ms
                    click.echo(_dumps({"key": k, "timeout_ms": timeout, "value": row.value}))
                else:
                    click.echo(f"{_dumps(k)}\ttimeout {_ms(row.timeout_ms)}\t{_dumps(row.value)}")
    except StatefulStreamError as exc:
        raise _fail(exc) from exc
    finally:
        store.close()
    if key is not None and not shown:
        raise click.ClickException(f"no state row for key {key!r} in {state_dir}")
