"""The stateful operator on Spark: the ``applyInPandasWithState`` function that calls the user's handler.

Spark calls :class:`StatefulCall` once per group key with data, and once per
key whose timeout expired. It gives the handler what the embedded engine
gives it: the key as the handler's own value, the values as records (dicts)
in arrival order, and a statefulstream :class:`GroupState` built from Spark's
(same watermark, batch timestamp, timeout kind, ``has_timed_out``). After the
call, the outcome (SEMANTICS.md A.3) is written back to Spark's state:

* state is one binary column per key: ``[value, timeout]`` msgpack-encoded by
  statefulstream's codec, so any value the embedded engine can keep can be
  kept here (``value`` is ``None`` for a row that only carries a timeout, as
  ``None`` is never a state value);
* Spark resets a group's timeout on every call, as statefulstream does, so a
  timeout the handler set is set again on Spark's state (event time: the
  timestamp; processing time: the duration from the batch timestamp).

Dead-letter rows are grouped apart (``dead`` is part of the grouping) and
passed through untouched; they never reach the handler or the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from statefulstream.checkpoint.plan_log import BatchPlan
from statefulstream.executor.keyed_calls import key_caller
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.records import NO_TIMEOUT_MS, GroupValues
from statefulstream.spark.prepare import NO_BATCH
from statefulstream.state.codec import DEFAULT_CODEC
from statefulstream.state.group_state import GroupState
from statefulstream.state.store import StateRow, StateStore

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql.streaming.state import GroupState as SparkGroupState

OUTPUT_SCHEMA = "kind int, key binary, deadline long, payload binary"
"""What the operator emits: an output row, a state change or a dead letter (``kind``), msgpack payload.
``deadline`` is the expired timeout of a timeout call and -1 otherwise: it orders rows as the embedded
engine writes them (calls with data by key, then timeout calls by deadline)."""

STATE_SCHEMA = "state binary"
"""Spark's state row per key: msgpack of ``[value, timeout_ms]``."""

OUTPUT, STATE_CHANGE, DEAD_LETTER = 0, 1, 2
"""The ``kind`` of an emitted row."""

SPARK_TIMEOUTS = {GroupStateTimeout.NO_TIMEOUT: "NoTimeout",
                  GroupStateTimeout.PROCESSING_TIME: "ProcessingTimeTimeout",
                  GroupStateTimeout.EVENT_TIME: "EventTimeTimeout"}
"""statefulstream timeout kind -> PySpark's ``GroupStateTimeout`` name."""


@dataclasses.dataclass
class StatefulCall:
    """The ``applyInPandasWithState`` function for one operator.

    The handler is called through the embedded engine's own per-key call
    (``executor.keyed_calls.key_caller``: the result rules, ``UserFunctionError``,
    the write-back rule); its write-back lands in a one-key stand-in store and is
    then applied to Spark's state.

    Args:
        op: the operator (its handler, flat or map, timeout kind, watermark).
        track_state: emit state changes (the operator has ``state_sink``).
    """

    op: StatefulOperator
    track_state: bool

    def __call__(self, key: tuple[bytes, bool], frames: Iterable[pd.DataFrame],
                 spark_state: SparkGroupState) -> Iterator[pd.DataFrame]:
        import pandas as pd

        key_bytes, dead = key
        parts = [f for f in frames if len(f)]
        data = pd.concat(parts, ignore_index=True).sort_values(["src", "blk", "pos"], kind="stable") \
            if parts else None
        payloads = list(data["payload"]) if data is not None else []
        if dead:
            yield _frame(DEAD_LETTER, key_bytes, NO_TIMEOUT_MS, payloads)
            return
        op, decode, encode = self.op, DEFAULT_CODEC.decode, DEFAULT_CODEC.encode
        timed_out = spark_state.hasTimedOut
        stored = spark_state.getOption
        value, stored_ts = decode(stored[0]) if stored is not None else (None, NO_TIMEOUT_MS)
        batch_ts = spark_state.getCurrentProcessingTimeMs()
        watermark = spark_state.getCurrentWatermarkMs() if op.has_watermark else 0
        # The checks the embedded engine makes once per batch, before its first call.
        GroupState(None, False, timeout=op.timeout, batch_processing_time_ms=batch_ts, watermark_ms=watermark,
                   watermark_present=op.has_watermark)
        outputs: list[Any] = []
        changes: list[tuple[Hashable, Any, bool, int]] = []  # key_caller's (key, value, removed, timeout_ms)
        store = _OneKeyStore()
        call = key_caller(op, cast(StateStore, store), BatchPlan(NO_BATCH, {}, {}, batch_ts, watermark, watermark),
                          outputs, changes)
        call(DEFAULT_CODEC.decode_key(key_bytes), GroupValues(map(decode, payloads)),
             StateRow(value, stored_ts) if stored is not None else None, timed_out)
        self._write_back(store.written, stored_ts, spark_state)
        deadline = stored_ts if timed_out else NO_TIMEOUT_MS
        out = _frame(OUTPUT, key_bytes, deadline, [encode(r) for r in outputs])
        if changes and self.track_state:
            rows = [encode([value, removed, timeout_ms]) for _, value, removed, timeout_ms in changes]
            out = pd.concat([out, _frame(STATE_CHANGE, key_bytes, deadline, rows)], ignore_index=True)
        yield out

    def _write_back(self, written: tuple[bytes, int] | None | bool, stored_ts: int,
                    spark_state: SparkGroupState) -> None:
        """Apply the call's write-back (``(state bytes, timeout)``, ``None`` = delete, ``False`` = keep)."""
        if written is None:
            spark_state.remove()
            return
        timeout = stored_ts  # keep: the handler set the stored timeout again
        if isinstance(written, tuple):
            data, timeout = written
            spark_state.update((data,))
        if timeout != NO_TIMEOUT_MS:  # Spark clears the timeout of every called group unless set again
            if self.op.timeout is GroupStateTimeout.EVENT_TIME:
                spark_state.setTimeoutTimestamp(timeout)
            else:
                spark_state.setTimeoutDuration(timeout - spark_state.getCurrentProcessingTimeMs())


class _OneKeyStore:
    """Receives the write-back of one handler call.

    ``written`` is ``(state bytes, timeout)`` after a put, ``None`` after a
    delete, ``False`` when nothing was written. Encoding in ``put`` makes a
    value the codec cannot store fail inside the call, as with a real store.
    """

    def __init__(self) -> None:
        self.written: tuple[bytes, int] | None | bool = False

    def put(self, key: Hashable, row: StateRow) -> None:
        self.put_value(key, row.value, row.timeout_ms)

    def put_value(self, key: Hashable, value: Any, timeout_ms: int) -> None:
        self.written = (DEFAULT_CODEC.encode([value, timeout_ms]), timeout_ms)

    def delete(self, key: Hashable) -> None:
        self.written = None


def _frame(kind: int, key: bytes, deadline: int, payloads: list[bytes]) -> pd.DataFrame:
    import pandas as pd

    n = len(payloads)
    return pd.DataFrame({"kind": pd.Series([kind] * n, dtype="int32"), "key": [key] * n,
                         "deadline": pd.Series([deadline] * n, dtype="int64"), "payload": payloads})
