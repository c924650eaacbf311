"""Sinks on Spark: ``foreachBatch`` hands each batch to statefulstream's own sinks with Spark's batch id.

Spark replays a batch that did not commit with the same batch id and the same
rows, and every statefulstream sink is idempotent per batch id, so each sink
gets exactly-once effects on Spark as on the embedded engine. The writes go
through the embedded engine's ``SinkWriter`` (backpressure, dead-letter logs). The batch's rows
are collected on the driver (where the sinks live) and written in the embedded
engine's order: output rows, state changes, then dead letters; rows ordered by
calls with data before timeout calls, then by key.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from statefulstream.executor.sink_writer import SinkWriter
from statefulstream.pipeline import sorted_keys
from statefulstream.records import NO_TIMEOUT_MS, DeadLetter, StateChange
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
    """Decode collected ``(kind, key, deadline, payload)`` rows into outputs, state changes and dead letters."""
    decode, decode_key = DEFAULT_CODEC.decode, DEFAULT_CODEC.decode_key
    keyed: list[tuple[int, int, bytes, Hashable, Any]] = []
    dead: list[tuple[bytes, DeadLetter]] = []
    for kind, key, deadline, payload in rows:
        if kind == DEAD_LETTER:
            dl = decode_dead_letter(payload)
            if dl.position.get("batch_id") == NO_BATCH:  # a pipeline dead letter: now the batch is known
                dl = dataclasses.replace(dl, position={**dl.position, "batch_id": batch_id})
            dead.append((key, dl))
        else:
            keyed.append((kind, deadline, key, decode_key(key), decode(payload)))
    rank = {k: i for i, k in enumerate(sorted_keys({r[3] for r in keyed if r[1] == NO_TIMEOUT_MS}))}
    # Calls with data by key, then timeout calls by (deadline, key bytes) as the embedded timer index
    # orders them; the sort is stable, so a call's rows keep the handler's order.
    keyed.sort(key=lambda r: (0, rank[r[3]], b"") if r[1] == NO_TIMEOUT_MS else (1, r[1], r[2]))
    outputs = [r[4] for r in keyed if r[0] == OUTPUT]
    changes = [StateChange(r[3], r[4][0], r[4][1], r[4][2]) for r in keyed if r[0] == STATE_CHANGE]
    dead.sort(key=lambda d: d[0])
    return BatchOutput(outputs, changes, [dl for _, dl in dead])


class BatchWriter:
    """The ``foreachBatch`` function: the embedded engine's ``SinkWriter`` fed with each Spark batch.

    Opening and writing hold the stream while a sink raises
    ``SinkUnavailableError``, per the App's ``sink_retry``, as on the embedded
    engine; a sink that stays down fails the query.

    Args:
        plan: the Spark plan (sinks, state sinks, dead-letter sink, retry policy, app name).
    """

    def __init__(self, plan: SparkPlan) -> None:
        self.app_name = plan.app_name
        self.sinks = SinkWriter(app_name=plan.app_name, sinks=plan.operator.sinks,
                                state_sinks=plan.operator.state_sinks, dead_letters=plan.dead_letters,
                                retry=plan.sink_retry)

    def open(self) -> None:
        """Open every sink (before the query starts)."""
        self.sinks.open()

    def close(self) -> None:
        """Close every sink, each guarded."""
        for close in self.sinks.close():
            try:
                close()
            except Exception:  # noqa: BLE001 - close the rest
                logger.exception("app %r: error while closing a sink", self.app_name)

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        self.write(decode_batch(df.collect(), batch_id), batch_id)

    def write(self, batch: BatchOutput, batch_id: int) -> None:
        """Write one decoded batch: outputs, state changes, dead letters (with the sinks' own)."""
        self.sinks.new_batch()
        self.sinks.dead.extend(batch.dead)
        self.sinks.emit(batch_id, batch.outputs, batch.changes)
