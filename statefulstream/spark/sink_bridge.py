"""Sinks on Spark: ``foreachBatch`` hands each batch to statefulstream's own sinks with Spark's batch id.

Spark replays a batch that did not commit with the same batch id and the same
rows, and every statefulstream sink is idempotent per batch id, so each sink
gets exactly-once effects on Spark as on the embedded engine. The batch's rows
are collected on the driver (where the sinks live) and written in the embedded
engine's order: output rows, state changes, then dead letters; rows ordered by
calls with data before timeout calls, then by key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from statefulstream.pipeline import sorted_keys
from statefulstream.records import DeadLetter, StateChange
from statefulstream.sink import Sink, SinkContext
from statefulstream.spark.adapter import DEAD_LETTER, OUTPUT, STATE_CHANGE
from statefulstream.spark.prepare import NO_BATCH, decode_dead_letter
from statefulstream.state.codec import DEFAULT_CODEC

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from statefulstream.spark.plan import SparkPlan

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class BatchOutput:
    """One Spark batch's rows, decoded and in write order."""

    outputs: list[Any]
    changes: list[StateChange]
    dead: list[DeadLetter]


def decode_batch(rows: list[Any], batch_id: int) -> BatchOutput:
    """Decode collected ``(kind, key, timed_out, payload)`` rows into outputs, state changes and dead letters."""
    decode, decode_key = DEFAULT_CODEC.decode, DEFAULT_CODEC.decode_key
    keyed: list[tuple[int, bool, Hashable, Any]] = []
    dead: list[tuple[str, DeadLetter]] = []
    for kind, key, timed_out, payload in rows:
        if kind == DEAD_LETTER:
            dl = decode_dead_letter(payload)
            if dl.position.get("batch_id") == NO_BATCH:  # a pipeline dead letter: now the batch is known
                dl = dataclasses.replace(dl, position={**dl.position, "batch_id": batch_id})
            dead.append((key, dl))
        else:
            keyed.append((kind, timed_out, decode_key(key), decode(payload)))
    rank = {k: i for i, k in enumerate(sorted_keys({k for _, _, k, _ in keyed}))}
    keyed.sort(key=lambda r: (r[1], rank[r[2]]))  # stable: a call's rows stay in the handler's order
    outputs = [p for kind, _, _, p in keyed if kind == OUTPUT]
    changes = [StateChange(k, p[0], p[1], p[2]) for kind, _, k, p in keyed if kind == STATE_CHANGE]
    dead.sort(key=lambda d: d[0])
    return BatchOutput(outputs, changes, [dl for _, dl in dead])


class BatchWriter:
    """The ``foreachBatch`` function: opens the App's sinks once, writes every batch to them.

    Args:
        plan: the Spark plan (sinks, state sinks, dead-letter sink, app name).
    """

    def __init__(self, plan: SparkPlan) -> None:
        self.app_name = plan.app_name
        self.sinks = list(plan.operator.sinks)
        self.state_sinks = list(plan.operator.state_sinks)
        self.dead_letters = plan.dead_letters
        self._sink_dead: list[DeadLetter] = []
        self._opened: list[Sink] = []

    def open(self) -> None:
        """Open every sink (before the query starts)."""
        context = SinkContext(app_name=self.app_name, dead_letter=self._sink_dead.append)
        for sink in dict.fromkeys([*self.sinks, *self.state_sinks, self.dead_letters]):
            sink.open(context)
            self._opened.append(sink)

    def close(self) -> None:
        """Close the opened sinks; idempotent."""
        while self._opened:
            sink = self._opened.pop()
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - close the rest
                logger.exception("app %r: error while closing sink %r", self.app_name, sink)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        batch = decode_batch(df.collect(), batch_id)
        self.write(batch, batch_id)

    def write(self, batch: BatchOutput, batch_id: int) -> None:
        """Write one decoded batch: outputs, state changes, dead letters (including the sinks' own)."""
        self._sink_dead.clear()
        if batch.outputs:
            for sink in self.sinks:
                sink.write(batch_id, batch.outputs)
        if batch.changes:
            for sink in self.state_sinks:
                sink.write(batch_id, batch.changes)
        dead = batch.dead + self._sink_dead
        if dead:
            for dl in dead[:5]:
                logger.warning("app %r batch %d: dead letter (%s) %s at %s", self.app_name, batch_id, dl.error,
                               dl.reason, dict(dl.position))
            self.dead_letters.write(batch_id, [dl.to_row(batch_id) for dl in dead])
