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
from typing import TYPE_CHECKING, Any

from statefulstream.errors import UserFunctionError
from statefulstream.operator import StatefulOperator
from statefulstream.options import GroupStateTimeout
from statefulstream.spark.prepare import NO_BATCH
from statefulstream.state.codec import DEFAULT_CODEC
from statefulstream.state.group_state import NO_TIMESTAMP, GroupState

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
            yield _frame(DEAD_LETTER, key_bytes, NO_TIMESTAMP, payloads)
            return
        decode = DEFAULT_CODEC.decode
        group_key = DEFAULT_CODEC.decode_key(key_bytes)
        timed_out = spark_state.hasTimedOut
        stored = spark_state.getOption
        stored_value, stored_ts = decode(stored[0]) if stored is not None else (None, NO_TIMESTAMP)
        state: GroupState[Any] = GroupState(
            stored_value, stored_value is not None,
            timeout=self.op.timeout, batch_processing_time_ms=spark_state.getCurrentProcessingTimeMs(),
            watermark_ms=spark_state.getCurrentWatermarkMs() if self.op.has_watermark else NO_TIMESTAMP,
            watermark_present=self.op.has_watermark, has_timed_out=timed_out)
        rows = self._call(group_key, [decode(p) for p in payloads], state)
        encode = DEFAULT_CODEC.encode
        deadline = stored_ts if timed_out else NO_TIMESTAMP
        out = _frame(OUTPUT, key_bytes, deadline, [encode(r) for r in rows])
        change = self._write_back(state, stored_ts, spark_state)
        if change is not None and self.track_state:
            out = pd.concat([out, _frame(STATE_CHANGE, key_bytes, deadline, [encode(change)])], ignore_index=True)
        yield out

    def _call(self, key: Hashable, values: list[Any], state: GroupState[Any]) -> list[Any]:
        """Call the handler; return its rows (flat: any number; map: exactly one)."""
        op = self.op
        try:
            result = op.func(key, values, state)
            if not op.flat:
                if result is None:
                    raise TypeError("map_groups_with_state handler must return exactly one row; got None "
                                    "(use flat_map_groups_with_state to emit zero rows)")
                return [result]
            if isinstance(result, (dict, str, bytes)):
                raise TypeError(f"flat_map_groups_with_state handler must return an iterable of rows "
                                f"(or yield them), not a {type(result).__name__}")
            return list(result) if result is not None else []  # consuming a generator may still change state
        except Exception as exc:
            msg = (f"handler {op.name!r} raised {type(exc).__name__}: {exc} (key {key!r}"
                   f"{', timeout call' if state.has_timed_out else ''}, on Spark); the batch is not committed "
                   f"and is run again when the query restarts from its checkpoint")
            raise UserFunctionError(msg, key=key, batch_id=NO_BATCH) from exc

    def _write_back(self, state: GroupState[Any], stored_ts: int,
                    spark_state: SparkGroupState) -> tuple[Any, bool, int] | None:
        """Apply the call's outcome to Spark's state; return the state change ``(value, removed, timeout)``."""
        action, value, timeout = state.outcome(stored_ts)
        if action == "delete":
            spark_state.remove()
            return None, True, NO_TIMESTAMP
        if action == "put":
            spark_state.update((DEFAULT_CODEC.encode([value, timeout]),))
        if timeout != NO_TIMESTAMP:  # Spark clears the timeout of every called group unless set again
            if self.op.timeout is GroupStateTimeout.EVENT_TIME:
                spark_state.setTimeoutTimestamp(timeout)
            else:
                spark_state.setTimeoutDuration(timeout - spark_state.getCurrentProcessingTimeMs())
        return (value, value is None, timeout) if action == "put" else None


def _frame(kind: int, key: bytes, deadline: int, payloads: list[bytes]) -> pd.DataFrame:
    import pandas as pd

    n = len(payloads)
    return pd.DataFrame({"kind": pd.Series([kind] * n, dtype="int32"), "key": [key] * n,
                         "deadline": pd.Series([deadline] * n, dtype="int64"), "payload": payloads})
