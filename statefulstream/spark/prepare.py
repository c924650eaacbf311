"""The stage before grouping, on Spark executors: decode, stateless steps, key, event time.

:class:`Prepare` is the ``mapInArrow`` function. It runs the embedded
engine's own batch functions (``run_steps``, ``event_times_ms``,
``apply_each``) over each run of records, so a record that a step, the key or
the event time cannot handle becomes the same dead letter. Every output row is
either a record or a dead letter:

==============  =====================================================================
``key``         the group key, msgpack-encoded (dead letters: their origin, to spread them)
``dead``        true for a dead letter (grouped apart from every key)
``event_time``  the record's event time (null without ``event_time=``, and for dead letters)
``src, blk``    origin and split/run start; with ``pos`` they give arrival order
``pos``         index within ``(src, blk)`` in this task
``payload``     the record (or the dead letter's fields), msgpack-encoded
==============  =====================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from statefulstream.lineage import Lineage
from statefulstream.pipeline import Step, apply_each, event_times_ms, run_steps
from statefulstream.records import DeadLetter
from statefulstream.spark.sources import Decoder
from statefulstream.state.codec import DEFAULT_CODEC

if TYPE_CHECKING:
    import pyarrow as pa

PREPARED_SCHEMA = ("key binary, dead boolean, event_time timestamp, src string, blk long, pos long, "
                   "payload binary")
"""The Spark schema of the prepared rows (a DDL string, for ``mapInArrow``)."""

NO_BATCH = -1
"""Executors do not know Spark's batch id: pipeline dead letters carry this until the sink bridge sets it."""


def encode_dead_letter(dl: DeadLetter) -> bytes:
    """The msgpack bytes of a dead letter's fields; a ``raw`` the codec cannot store is kept as its repr."""
    fields = {"reason": dl.reason, "source": dl.source, "position": dict(dl.position), "raw": dl.raw,
              "error": dl.error}
    try:
        return DEFAULT_CODEC.encode(fields)
    except TypeError:  # StateEncodeError is a TypeError
        return DEFAULT_CODEC.encode({**fields, "raw": repr(dl.raw)})


def decode_dead_letter(data: bytes) -> DeadLetter:
    """The dead letter of :func:`encode_dead_letter` bytes."""
    return DeadLetter(**DEFAULT_CODEC.decode(data))


def _times_of_kept(records: list[Any], kept: list[Any], times: list[int]) -> list[int]:
    """The times of ``kept``, a subsequence of ``records`` (the same objects, in order)."""
    out, k = [], 0
    for record, t in zip(records, times, strict=True):
        if k < len(kept) and record is kept[k]:
            out.append(t)
            k += 1
    return out


@dataclasses.dataclass
class Prepare:
    """Decoded Arrow batches of the source -> prepared rows (see the module docstring).

    Args:
        decoder: the source's decoder.
        steps: the App's stateless steps.
        key: the operator's key getter.
        event_time: the operator's event-time getter, or ``None``.
    """

    decoder: Decoder
    steps: list[Step]
    key: Callable[[Any], Any]
    event_time: Callable[[Any], Any] | None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        schema = pa.schema([("key", pa.binary()), ("dead", pa.bool_()), ("event_time", pa.timestamp("us", "UTC")),
                            ("src", pa.string()), ("blk", pa.int64()), ("pos", pa.int64()),
                            ("payload", pa.binary())])
        lines: dict[tuple[str, int], int] = {}
        counters: dict[tuple[str, int], int] = {}
        encode, encode_key, key = DEFAULT_CODEC.encode, DEFAULT_CODEC.encode_key, self.key

        def key_bytes(record: Any) -> bytes:
            return encode_key(key(record))

        for batch in batches:
            out: dict[str, list[Any]] = {name: [] for name in schema.names}
            for run in self.decoder.runs(batch, lines):
                dead = run.dead
                records = run.records
                lineage = Lineage(run.position, batch_id=NO_BATCH)
                if self.steps:
                    records = run_steps(self.steps, records, lineage=lineage, dead=dead)
                times: list[int] | None = None
                if self.event_time is not None:
                    # No max_event_time_ahead here: plan_for_spark refuses it (no batch time on executors).
                    records, times, _, _ = event_times_ms(self.event_time, records, lineage=lineage, dead=dead,
                                                          batch_ts_ms=0)
                keyed, keys = apply_each(key_bytes, records, error="key", what="group key missing or not storable",
                                         lineage=lineage, dead=dead)
                if times is not None and len(keyed) < len(records):
                    times = _times_of_kept(records, keyed, times)
                records = keyed
                where = (run.src, run.base)
                first = counters.get(where, 0)
                counters[where] = first + len(records) + len(dead)
                n = len(records)
                out["key"] += keys
                out["dead"] += [False] * n
                out["event_time"] += [t * 1000 for t in times] if times is not None else [None] * n
                out["payload"] += map(encode, records)
                out["key"] += [run.src.encode()] * len(dead)
                out["dead"] += [True] * len(dead)
                out["event_time"] += [None] * len(dead)
                out["payload"] += map(encode_dead_letter, dead)
                out["src"] += [run.src] * (n + len(dead))
                out["blk"] += [run.base] * (n + len(dead))
                out["pos"] += range(first, first + n + len(dead))
            yield pa.RecordBatch.from_pydict(out, schema=schema)
