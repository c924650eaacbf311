"""``statefulstream state show`` for a stateful processor's checkpoint: variables by name, and timers."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import click

from statefulstream.processor import inspect
from statefulstream.state.kv import StagedKV


def is_processor_signature(signature: dict[str, Any]) -> bool:
    """Whether a store was written by a ``transform_with_state`` operator."""
    return signature.get("kind") == "transform_with_state"


def processor_rows(kv: StagedKV, candidates: Sequence[Hashable] | None, limit: int | None, *,
                   variable: str | None, now_ms: int | None) -> Iterator[dict[str, Any]]:
    """Yield ``{"key", "variables", "timers"}`` per key: of the first candidate key that has state, or all keys.

    Raises:
        click.ClickException: ``variable`` was never declared.
    """
    declared = inspect.declared(kv)
    if variable is not None and variable not in declared:
        names = ", ".join(sorted(declared)) or "none"
        raise click.ClickException(f"no state variable {variable!r}; the processor declared: {names}")
    wanted = {variable: declared[variable]} if variable is not None else declared

    def row(key: Hashable) -> dict[str, Any]:
        values = {name: inspect.variable(kv, name, meta["kind"], key, now_ms=now_ms) for name, meta in wanted.items()}
        return {"key": key, "variables": values, "timers": inspect.timers_of(kv, key)}

    if candidates is not None:
        for key in candidates:
            found = row(key)
            if found["timers"] or any(v not in (None, [], {}) for v in found["variables"].values()):
                yield found
                return
        return
    for n, key in enumerate(inspect.keys(kv)):
        if limit is not None and n >= limit:
            return
        yield row(key)


def print_processor_rows(rows: Iterator[dict[str, Any]], *, as_json: bool, dumps: Callable[[Any], str]) -> int:
    """Print rows as JSON lines or ``key  name=value ...  timers [...]``; return how many."""
    shown = 0
    for item in rows:
        shown += 1
        if as_json:
            click.echo(dumps(item))
        else:
            values = "\t".join(f"{name}={dumps(value)}" for name, value in item["variables"].items())
            click.echo(f"{dumps(item['key'])}\t{values}\ttimers {dumps(item['timers'])}")
    return shown
